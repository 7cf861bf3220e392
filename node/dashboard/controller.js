// The SD-IoT controller's dashboard, after the S-MANAGE paper's GUI: the
// request form and its answer (full, partial with the waiting time, or
// unable), the requests with their states and the conflict queue, a
// request's data live, and every SDVS with its tables, counters and TTLs.
// Read from the controller's REST API (`/api/v1`); runs after common.js.
"use strict";

const ACTIONS = ["read", "on", "off", "set"];
const MAX_SERIES = 8;

// ------------------------------------------------------------ Requests

/** The form's fields as the API's request body; empty optional fields are left out. */
function requestBody(form) {
  const data = new FormData(form);
  const number = name => (data.get(name) === "" ? undefined : Number(data.get(name)));
  const body = {
    type: data.get("type").trim(),
    location: data.get("location").trim(),
    frequency_s: number("frequency_s"),
    period_s: number("period_s"),
    action: data.get("action"),
    value: data.get("action") === "set" ? number("value") : undefined,
    count: number("count"),
    destination: data.get("destination").trim() || undefined,
    accept_partial: data.get("accept_partial") === "on",
  };
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}

function assignments(list) {
  return list.length ? table(["SDVS", "Service", "Gateway", "State", "Waiting for", "Counter", "TTL left (s)"],
    list.map(a => el("tr", {},
      el("td", {}, el("a", { href: `#/sdvs/${a.sdvs}` }, a.sdvs)), el("td", {}, a.service), el("td", {}, a.gateway),
      el("td", {}, state(a.state)), el("td", {}, a.waiting_for || "—"), el("td", {}, a.counter), el("td", {}, a.ttl_left))))
    : el("p", { class: "muted" }, "none");
}

async function requestsPage() {
  const gone = leftBehind();
  const sdvs = (await attempt("SDVSs", () => api("/api/v1/sdvs"))) || [];
  if (gone()) return;
  const types = [...new Set(sdvs.flatMap(s => s.services.map(x => x.type)))].sort();
  const locations = [...new Set(sdvs.flatMap(s => {
    const segments = s.location.split("/");
    return segments.map((_, i) => segments.slice(0, i + 1).join("/"));
  }))].sort();
  const field = (label, input) => el("label", {}, label, input);
  const answer = el("div", { id: "answer", "aria-live": "polite" });
  const form = el("form", { class: "card filters", id: "request-form" },
    field("Type", el("input", { name: "type", required: true, list: "types", placeholder: "temperature" })),
    el("datalist", { id: "types" }, types.map(t => el("option", { value: t }))),
    field("Location", el("input", { name: "location", required: true, list: "locations", placeholder: "campus/building-a" })),
    el("datalist", { id: "locations" }, locations.map(l => el("option", { value: l }))),
    field("Every (s, 0 = once)", el("input", { name: "frequency_s", type: "number", min: 0, max: 65535, value: 1, required: true })),
    field("For (s)", el("input", { name: "period_s", type: "number", min: 1, max: 65535, value: 30, required: true })),
    field("Action", el("select", { name: "action" }, ACTIONS.map(a => el("option", { value: a }, a)))),
    field("Value (set)", el("input", { name: "value", type: "number", min: -32768, max: 32767 })),
    field("How many (all)", el("input", { name: "count", type: "number", min: 1 })),
    field("Destination (controller)", el("input", { name: "destination", placeholder: "0x0100" })),
    el("label", {}, "Take a partial offer", el("input", { name: "accept_partial", type: "checkbox", checked: true })),
    el("button", { type: "submit" }, "Place the request"));
  form.addEventListener("submit", async event => {
    event.preventDefault();
    const started = performance.now();
    try {
      const placed = await api("/api/v1/requests", { method: "POST", body: requestBody(form) });
      const took = Math.round(performance.now() - started);
      answer.replaceChildren(el("div", { class: "card" },
        el("div", { class: "stat" }, el("span", { class: `outcome ${placed.outcome}`, id: "outcome" }, placed.outcome), " ",
          el("a", { href: `#/request/${placed.id}` }, `request ${placed.id}`)),
        el("p", {}, `${placed.state}; ${placed.assigned.length} sensor services programmed, ${placed.pending.length} waiting` +
          (placed.waiting_s === null ? "" : ` about ${placed.waiting_s} s`) +
          (placed.missing ? `; ${placed.missing} asked for do not exist` : "") + `. Answered in ${took} ms.`)));
    } catch (error) {
      // 422 is the paper's "unable": nothing can serve the request.
      answer.replaceChildren(el("div", { class: "card" },
        el("div", { class: "stat" }, el("span", { class: "outcome unable failed", id: "outcome" }, error.status === 422 ? "unable" : "refused")),
        el("p", {}, error.message)));
    }
    refresh();
  });
  const list = el("div");
  const queue = el("div");
  main.replaceChildren(el("h1", {}, "Requests"), form, answer,
    el("h2", {}, "Conflict queue"), queue, el("h2", {}, "All requests"), list);
  const cancel = id => attempt(`Cancel ${id}`, async () => {
    await api(`/api/v1/requests/${id}`, { method: "DELETE" });
    refresh();
  });
  const refresh = () => attempt("Requests", async () => {
    const requests = await api("/api/v1/requests");
    const row = r => el("tr", { "data-request": r.id },
      el("td", {}, el("a", { href: `#/request/${r.id}` }, r.id)), el("td", {}, r.type), el("td", {}, r.location),
      el("td", {}, r.action + (r.value === null ? "" : ` ${r.value}`)), el("td", {}, `${r.frequency_s} s / ${r.period_s} s`),
      el("td", {}, state(r.state)), el("td", {}, state(r.outcome)), el("td", {}, r.readings),
      el("td", {}, new Date(r.created * 1000).toLocaleTimeString()),
      el("td", {}, ["offered", "queued", "running"].includes(r.state)
        ? el("button", { type: "button", class: "quiet", onclick: () => cancel(r.id) }, "Cancel") : ""));
    const headings = ["Id", "Type", "Location", "Action", "Every / for", "State", "Outcome", "Samples", "Created", ""];
    const queued = requests.filter(r => r.state === "queued");
    queue.replaceChildren(queued.length ? table(headings, queued.map(row)) : el("p", { class: "muted" }, "Nothing waits."));
    list.replaceChildren(requests.length ? table(headings, requests.slice().reverse().map(row)) : el("p", { class: "muted" }, "No request yet."));
  });
  every(2000, refresh);
}

// ------------------------------------------------------------ one request

async function requestPage(id) {
  const info = el("div");
  const charts = el("div", { class: "grid", id: "series" });
  main.replaceChildren(el("h1", {}, `Request ${id}`), el("p", {}, el("a", { href: "#/" }, "← all requests")),
    info, el("h2", {}, "Data (live)"), charts);
  every(2000, () => attempt(`Request ${id}`, async () => {
    const r = await api(`/api/v1/requests/${id}`);
    info.replaceChildren(
      table(["Property", "Value"], [
        ["State", state(r.state)], ["Outcome", state(r.outcome)], ["Why", r.reason || "—"],
        ["Type", r.type], ["Location", r.location], ["Action", r.action + (r.value === null ? "" : ` ${r.value}`)],
        ["Every / for", `${r.frequency_s} s / ${r.period_s} s`], ["Destination", r.destination],
        ["Samples", el("span", { id: "samples" }, r.readings)], ["Missing", r.missing],
      ].map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v)))),
      el("h2", {}, "Sensor services"), assignments(r.assignments));
  }));
  // One small chart per sensor service (`n` is `{sdvs}/{service}`).
  const series = new Map();
  const add = point => {
    if (typeof point.value !== "number") return;
    let plot = series.get(point.thing);
    if (!plot) {
      if (series.size >= MAX_SERIES) return;
      const box = el("div", { class: "chart small", "data-series": point.thing });
      charts.append(el("div", { class: "card" }, el("strong", {}, point.thing), box));
      plot = chart(box, point.thing, { height: 160, legend: false });
      series.set(point.thing, plot);
    }
    plot.add(point.t, point.value);
  };
  const gone = leftBehind();
  const history = await attempt("Data", () => api(`/api/v1/requests/${id}/readings`));
  if (gone()) return;
  if (history) senml(history).forEach(add);
  stream(`/api/v1/requests/${id}/stream`, add);
}

// ------------------------------------------------------------ SDVSs

function sdvsCard(s) {
  return el("section", { class: "card", "data-sdvs": s.address },
    el("h2", {}, `${s.address} `, state(s.up ? "up" : "down"), " ", el("span", { class: "muted" }, s.location)),
    el("p", { class: "muted" }, `gateway ${s.gateway}; battery ${s.battery_percent === null ? "mains" : `${s.battery_percent} %`}` +
      `${s.low_battery ? " (low)" : ""}; busy ${s.busy}${s.full ? " (full)" : ""}; last Hello ${new Date(s.last_hello_ms).toLocaleTimeString()}`),
    el("h3", {}, "Sensor services"), render(s.services),
    el("h3", {}, "Forwarding table"), render(s.forwarding),
    el("h3", {}, "Configuration table"), render(s.configuring));
}

async function sdvsPage(address) {
  const body = el("div", { class: "grid" });
  main.replaceChildren(el("h1", {}, address ? `SDVS ${address}` : "SDVSs"),
    el("p", { class: "muted" }, "Each SDVS's tables as its last Hello and the controller's instructions left them, refreshed every 2 s."), body);
  every(2000, () => attempt("SDVSs", async () => {
    const all = address ? [await api(`/api/v1/sdvs/${encodeURIComponent(address)}`)] : await api("/api/v1/sdvs");
    body.replaceChildren(...(all.length ? all.map(sdvsCard) : [el("p", { class: "muted" }, "No SDVS has said Hello yet.")]));
  }));
}

// ------------------------------------------------------------ routing

start([
  [/^#?\/?$/, () => requestsPage(), "requests"],
  [/^#\/request\/(\d+)$/, m => requestPage(m[1]), "requests"],
  [/^#\/sdvs$/, () => sdvsPage(), "sdvs"],
  [/^#\/sdvs\/(.+)$/, m => sdvsPage(decodeURIComponent(m[1])), "sdvs"],
]);
