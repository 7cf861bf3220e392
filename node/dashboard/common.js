// What both dashboards share — the gateway's (app.js) and the SD-IoT
// controller's (controller.js): the REST client with the operator's token,
// Server-Sent Event streams, DOM helpers, live charts (uPlot, vendored
// beside this file) and the router. Classic scripts: what this one
// declares at its top level the page script sees.
"use strict";

const main = document.getElementById("main");
const notice = document.getElementById("notice");
/** What the page leaves running (timers, streams, charts): stopped when it is left. */
let leaving = [];
/** Navigations so far: a page still waiting when the next one began must not draw. */
let navigation = 0;

/** A check for a page to make after each wait: whether the operator went elsewhere since it began. */
function leftBehind() {
  const at = navigation;
  return () => at !== navigation;
}

// ------------------------------------------------------------ the API

/** A failed request, with the problem body's message (RFC 9457) when there is one. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem("fogbank-token") || "";
}

async function api(path, { method = "GET", body, type = "application/json" } = {}) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = type;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : (type === "application/json" ? JSON.stringify(body) : body) });
  } catch (error) {
    throw new ApiError(0, `the gateway did not answer (${error.message})`);
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: shown as text */ }
  if (response.status === 401) askForToken();
  if (!response.ok) {
    const said = json && (json.detail || json.title) || text || response.statusText;
    const hint = response.status === 401 ? " Set a token (top right)." :
      response.status === 403 ? " The token does not allow this." : "";
    throw new ApiError(response.status, `${response.status}: ${said}.${hint}`.replace("..", "."));
  }
  return json === null ? text : json;
}

/** Opens the token dialog, once: a write (or, with `read_requires_token`, a read) needs one. */
function askForToken() {
  const dialog = document.getElementById("token-dialog");
  if (!dialog.open) {
    document.getElementById("token-input").value = token();
    dialog.showModal();
  }
}

function say(message) {
  notice.textContent = message;
  notice.hidden = !message;
}

/** Runs a page's loader, showing its failure instead of a blank page. */
async function attempt(what, action) {
  try {
    const result = await action();
    say("");
    return result;
  } catch (error) {
    say(`${what}: ${error.message}`);
    return undefined;
  }
}

/** An SSE stream with the token (EventSource cannot send headers, so it is fetched). */
function stream(path, onReading) {
  const control = new AbortController();
  (async () => {
    const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
    let response;
    try {
      response = await fetch(path, { headers, signal: control.signal });
    } catch (error) {
      if (!control.signal.aborted) say(`Live stream: ${error.message}`);
      return;
    }
    if (!response.ok) {
      say(`Live stream: ${response.status}: ${(await response.text()).slice(0, 300)}`);
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (;;) {
      let chunk;
      try { chunk = await reader.read(); } catch { return; }
      if (chunk.done) return;
      buffered += chunk.value;
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const kind = /^event: (.*)$/m.exec(event)?.[1];
        const data = /^data: (.*)$/m.exec(event)?.[1];
        if (kind === "reading" && data) {
          for (const point of senml(JSON.parse(data))) onReading(point);
        }
      }
    }
  })();
  leaving.push(() => control.abort());
}

/** SenML records (as the gateway writes them: absolute `t`, `bn` on the first) as points. */
function senml(records) {
  let base = "";
  return records.map(r => {
    if (r.bn !== undefined) base = r.bn;
    const value = r.v ?? (r.vb === undefined ? undefined : (r.vb ? 1 : 0));
    // Six significant digits are what a person reads off a sensor.
    const number = r.v === undefined ? undefined : String(Number(r.v.toPrecision(6)));
    return { thing: base + (r.n || ""), t: r.t, value, shown: r.vs ?? r.vd ?? (r.vb === undefined ? number : String(r.vb)) };
  });
}

// ------------------------------------------------------------ small pieces

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function table(headings, rows) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, headings.map(h => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows)));
}

function state(word) {
  return el("span", { class: String(word) }, String(word));
}

function every(ms, action) {
  action();
  const timer = setInterval(action, ms);
  leaving.push(() => clearInterval(timer));
}

function when(micros) {
  return micros ? new Date(micros / 1000).toLocaleString() : "—";
}

function bytes(n) {
  if (!(n >= 0)) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** Seconds as a person says them: `90 days`, `6 h`, `15 min`. */
function duration(seconds) {
  if (seconds >= 172800) return `${Math.round(seconds / 86400)} days`;
  if (seconds >= 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 60)} min`;
}

function query(params) {
  const kept = Object.entries(params).filter(([, v]) => v !== undefined && v !== "");
  return kept.length ? "?" + new URLSearchParams(kept).toString() : "";
}

/** A live chart: points appended as they come, the last `window` seconds kept (or all). */
function chart(container, label, { height = 280, window: span, legend = true } = {}) {
  const data = [[], []];
  // A canvas knows no CSS: the theme's colours are read once, by name.
  const css = getComputedStyle(document.documentElement);
  const color = name => css.getPropertyValue(name).trim();
  const axis = { stroke: color("--muted"), grid: { stroke: color("--line") }, ticks: { stroke: color("--line") } };
  const plot = new uPlot({
    width: Math.max(container.clientWidth, 280),
    height,
    scales: { x: { time: true } },
    series: [{}, { label, stroke: color("--chart"), width: 2, spanGaps: false }],
    axes: [axis, { ...axis, size: 60 }],
    legend: { show: legend },
  }, data, container);
  const resize = () => plot.setSize({ width: Math.max(container.clientWidth, 280), height });
  window.addEventListener("resize", resize);
  leaving.push(() => { window.removeEventListener("resize", resize); plot.destroy(); });
  container.dataset.points = "0";
  return {
    set(points) {
      data[0] = points.map(p => p.t);
      data[1] = points.map(p => p.value);
      plot.setData(data);
      container.dataset.points = String(data[0].length);
    },
    add(t, value) {
      // A stream opens with the latest reading, which history may hold already.
      if (data[0].length && t <= data[0][data[0].length - 1]) return;
      data[0].push(t);
      data[1].push(value);
      if (span) {
        while (data[0].length && data[0][0] < t - span) { data[0].shift(); data[1].shift(); }
      }
      plot.setData(data);
      container.dataset.points = String(data[0].length);
    },
  };
}

// ------------------------------------------------------------ plain data

/** Any JSON as nested tables: federation status is plain data. */
function render(value) {
  if (Array.isArray(value)) {
    if (!value.length) return el("span", { class: "muted" }, "none");
    if (value.every(v => v && typeof v === "object" && !Array.isArray(v))) {
      const keys = [...new Set(value.flatMap(Object.keys))];
      return table(keys, value.map(v => el("tr", {}, keys.map(k => el("td", {}, render(v[k]))))));
    }
    return value.map(String).join(", ");
  }
  if (value && typeof value === "object") {
    return table(["", ""], Object.entries(value).map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, render(v)))));
  }
  if (value === true || value === false) return state(value);
  return value === null || value === undefined ? "—" : String(value);
}

/** One sample of a Prometheus text exposition: the sum over a metric's series. */
function metric(text, name) {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(name + " ") || line.startsWith(name + "{")) sum += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
  }
  return sum;
}

// ------------------------------------------------------------ routing

/**
 * Shows the page whose pattern matches the URL's fragment, now and at every
 * change; `routes` are [pattern, show(match), nav page name].
 */
function start(routes) {
  // `moved`: the operator went to another page, whose start takes the
  // focus; on the first load it stays at the top (the skip link first).
  const route = moved => {
    navigation += 1;
    for (const stop of leaving) stop();
    leaving = [];
    say("");
    // Nothing of the page left can be used while the next one loads.
    main.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    const hash = location.hash || "#/";
    for (const [pattern, show, page] of routes) {
      const m = pattern.exec(hash);
      if (m) {
        for (const a of document.querySelectorAll("header nav a")) {
          if (a.dataset.page === page) a.setAttribute("aria-current", "page");
          else a.removeAttribute("aria-current");
        }
        show(m);
        if (moved) main.focus({ preventScroll: true });
        return;
      }
    }
    main.replaceChildren(el("h1", {}, "Not found"), el("p", {}, el("a", { href: "#/" }, "Back to the start")));
  };
  const dialog = document.getElementById("token-dialog");
  document.getElementById("token").addEventListener("click", askForToken);
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save") sessionStorage.setItem("fogbank-token", document.getElementById("token-input").value.trim());
    if (dialog.returnValue === "forget") sessionStorage.removeItem("fogbank-token");
    route(false);
  });
  window.addEventListener("hashchange", () => route(true));
  route(false);
}
