// The gateway's dashboard: the local cloud, its thing services, extended
// services, federation and health, read from the gateway's own REST API
// (`/api/v1`) and its streams. No build step and no framework: the browser
// runs this file as it is, after common.js.
"use strict";

const PAGE_SIZE = 100;
const HEALTH_WINDOW_S = 300;
const RANGES = [["5 min", 300], ["1 h", 3600], ["6 h", 21600], ["24 h", 86400], ["7 d", 604800]];

// ------------------------------------------------------------ Cloud

async function cloudPage() {
  main.replaceChildren(el("h1", {}, "Local cloud"), el("p", { class: "muted" }, "Every gateway of the local cloud, refreshed every 2 s."));
  const body = el("div");
  main.append(body);
  // Each gateway's ingest rate, from the counts its beacons carry.
  let previous = new Map();
  every(2000, () => attempt("Cloud", async () => {
    const [peers, services] = await Promise.all([api("/api/v1/peers"), api("/api/v1/services")]);
    const now = performance.now();
    const rates = new Map();
    for (const p of peers) {
      const before = previous.get(p.gateway);
      if (before && p.readings_ingested >= before.ingested) {
        rates.set(p.gateway, (p.readings_ingested - before.ingested) / ((now - before.now) / 1000));
      }
    }
    previous = new Map(peers.map(p => [p.gateway, { ingested: p.readings_ingested, now }]));
    const running = gateway => services.filter(s => s.gateway === gateway && s.state === "running").length;
    body.replaceChildren(table(
      ["Gateway", "State", "Addresses", "Thing services", "Extended services running", "Ingest", "Last heard"],
      peers.map(p => el("tr", { "data-gateway": p.gateway },
        el("td", {}, el("a", { href: `#/things?gateway=${encodeURIComponent(p.gateway)}` }, p.gateway), p.state === "local" ? " (this one)" : ""),
        el("td", {}, state(p.state)),
        el("td", {}, (p.addresses || []).map(a => el("div", {}, el("code", {}, a)))),
        el("td", {}, p.things),
        el("td", {}, running(p.gateway)),
        el("td", { class: "ingest" }, rates.has(p.gateway) && p.state !== "down" ? `${rates.get(p.gateway).toFixed(1)} readings/s` : "—"),
        el("td", {}, p.state === "local" ? "—" : `${(p.last_seen_ms / 1000).toFixed(1)} s ago`))),
    ));
  }));
}

// ------------------------------------------------------------ Things

/** The location tree of the catalog: campus/building/floor… */
function locationTree(things, selected, choose) {
  const root = {};
  for (const t of things) {
    const path = (t.location || "").split("/").filter(Boolean);
    let node = root;
    for (const segment of path) node = node[segment] ??= {};
  }
  const branch = (node, prefix) => {
    const names = Object.keys(node).sort();
    if (!names.length) return null;
    return el("ul", {}, names.map(name => {
      const path = prefix ? `${prefix}/${name}` : name;
      return el("li", {},
        el("button", { type: "button", "aria-pressed": String(path === selected), onclick: () => choose(path === selected ? "" : path) }, name),
        branch(node[name], path));
    }));
  };
  return el("nav", { class: "tree card", "aria-label": "Locations" }, el("strong", {}, "Location"),
    el("ul", {}, el("li", {}, el("button", { type: "button", "aria-pressed": String(!selected), onclick: () => choose("") }, "everywhere"))),
    branch(root, ""));
}

function matches(thing, filter) {
  const location = thing.location || "";
  return (!filter.type || thing.type === filter.type) &&
    (!filter.gateway || thing.gateway === filter.gateway) &&
    (!filter.kind || thing.kind === filter.kind) &&
    (!filter.available || String(thing.available) === filter.available) &&
    (!filter.location || location === filter.location || location.startsWith(filter.location + "/")) &&
    (!filter.text || thing.id.includes(filter.text));
}

async function thingsPage(params) {
  const filter = Object.fromEntries(["type", "gateway", "kind", "available", "location", "text"].map(k => [k, params.get(k) || ""]));
  const page = Math.max(0, Number(params.get("page") || 0));
  const started = performance.now();
  main.replaceChildren(el("h1", {}, "Thing services"), el("p", { class: "muted" }, "Loading the catalog…"));
  const gone = leftBehind();
  const things = await attempt("Things", () => api("/api/v1/things"));
  if (!things || gone()) return;
  const go = changes => {
    const next = { ...filter, page: 0, ...changes };
    location.hash = "#/things" + query(next.page ? next : { ...next, page: undefined });
  };
  const distinct = key => [...new Set(things.map(t => t[key]))].sort();
  const select = (key, label, values) => el("label", {}, label,
    el("select", { name: key, onchange: e => go({ [key]: e.target.value }) },
      el("option", { value: "" }, "any"),
      values.map(v => el("option", { value: v, selected: v === filter[key] }, v))));
  const shown = things.filter(t => matches(t, filter));
  const pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
  const visible = shown.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
  const latest = new Map();
  const rows = visible.map(t => {
    const value = el("td", { class: "latest" }, "");
    latest.set(t.id, value);
    return el("tr", { "data-thing": t.id },
      el("td", {}, el("a", { href: `#/thing/${encodeURIComponent(t.id)}` }, t.id)),
      el("td", {}, t.type), el("td", {}, t.kind), el("td", {}, t.location || "—"),
      el("td", {}, t.gateway), el("td", {}, state(t.available)),
      value);
  });
  const search = el("input", { type: "search", name: "text", value: filter.text, placeholder: "part of an id", "aria-label": "Search ids" });
  search.addEventListener("change", () => go({ text: search.value }));
  main.replaceChildren(
    el("h1", {}, "Thing services"),
    el("div", { class: "filters", role: "search" },
      select("type", "Type", distinct("type")),
      select("gateway", "Gateway", distinct("gateway")),
      select("kind", "Kind", ["sensor", "actuator"]),
      select("available", "Available", ["true", "false"]),
      el("label", {}, "Id", search)),
    el("div", { class: "layout" },
      locationTree(things, filter.location, path => go({ location: path })),
      el("div", {},
        el("p", { class: "muted", id: "count" }, `${shown.length} of ${things.length} thing services`),
        table(["Id", "Type", "Kind", "Location", "Gateway", "Available", "Latest"], rows),
        el("div", { class: "pager" },
          el("button", { type: "button", class: "quiet", disabled: page === 0, onclick: () => go({ page: page - 1 }) }, "Previous"),
          el("span", {}, `page ${page + 1} of ${pages}`),
          el("button", { type: "button", class: "quiet", disabled: page + 1 >= pages, onclick: () => go({ page: page + 1 }) }, "Next")))));
  main.dataset.renderMs = String(Math.round(performance.now() - started));
  // The visible rows' latest values, live, when the filter is narrow
  // enough for one stream.
  if (visible.length && shown.length <= 500) {
    stream("/api/v1/stream" + query({ type: filter.type, gateway: filter.gateway, kind: filter.kind, location: filter.location }), point => {
      const cell = latest.get(point.thing);
      if (cell) cell.textContent = point.shown;
    });
  }
}

// ------------------------------------------------------------ one thing

async function thingPage(id) {
  main.replaceChildren(el("h1", {}, id));
  const gone = leftBehind();
  const thing = await attempt("Thing", () => api(`/api/v1/things/${encodeURIComponent(id)}`));
  if (!thing || gone()) return;
  const latest = el("span", { class: "stat", id: "latest" }, "—");
  const chartBox = el("div", { class: "chart", id: "chart" });
  const range = Number(new URLSearchParams(location.hash.split("?")[1] || "").get("range") || 3600);
  // What the store keeps: a range past it shows only what is left.
  const health = (await attempt("Health", () => api("/health"))) || {};
  if (gone()) return;
  const kept = health.retention_max_age_seconds;
  const rangeChoice = el("select", { "aria-label": "History range", onchange: e => { location.hash = `#/thing/${encodeURIComponent(id)}?range=${e.target.value}`; } },
    RANGES.map(([label, seconds]) => el("option", { value: seconds, selected: seconds === range },
      kept && seconds > kept ? `${label} (beyond retention)` : label)));
  const retention = [
    kept ? `keeps readings for ${duration(kept)}` : null,
    health.retention_max_bytes ? `keeps its history under ${bytes(health.retention_max_bytes)}` : null,
  ].filter(Boolean).join(" and ") || "keeps every reading (no retention limit)";
  const details = table(["Property", "Value"], [
    ["Type", thing.type], ["Kind", thing.kind], ["Unit", thing.unit || "—"], ["Data type", thing.data_type],
    ["Location", thing.location || "—"], ["Gateway", thing.gateway], ["Device address", thing.device_address],
    ["Available", state(thing.available)], ["Moves", thing.moves || 0],
  ].map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v))));
  const device = thing.metadata?.device;
  main.replaceChildren(
    el("h1", {}, id),
    el("p", {}, el("a", { href: "#/things" }, "← all thing services")),
    el("div", { class: "grid" },
      el("div", { class: "card" }, el("div", { class: "muted" }, "Latest"), latest, " ", thing.unit || ""),
      thing.kind === "actuator" ? control(thing) : null,
      device ? el("div", { class: "card" }, el("div", { class: "muted" }, "Device"),
        `${device.manufacturer || ""} ${device.model || ""}`, el("div", { class: "muted" }, `serial ${device.serial || "—"}, firmware ${device.firmware || "—"}`)) : null),
    el("h2", {}, "Readings"),
    el("div", { class: "controls" }, el("label", {}, "Range ", rangeChoice),
      el("span", { class: "muted", id: "retention" }, `Drag across the chart to zoom, double-click to zoom out. This gateway ${retention}.`)),
    chartBox,
    el("h2", {}, "Properties"), details,
    el("h2", {}, "Thing Description"),
    el("details", {}, el("summary", {}, "W3C WoT Thing Description (JSON-LD)"), el("pre", { id: "td" }, "…")));
  const plot = chart(chartBox, `${thing.type}${thing.unit ? ` (${thing.unit})` : ""}`);
  const now = Date.now() / 1000;
  const history = await attempt("History", () => api(`/api/v1/things/${encodeURIComponent(id)}/readings${query({ from: (now - range).toFixed(0), limit: 100000 })}`));
  if (gone()) return;
  const points = history ? senml(history).filter(p => typeof p.value === "number") : [];
  plot.set(points);
  if (points.length) latest.textContent = points[points.length - 1].shown;
  stream(`/api/v1/things/${encodeURIComponent(id)}/stream`, point => {
    latest.textContent = point.shown;
    if (typeof point.value === "number") plot.add(point.t, point.value);
  });
  attempt("Thing Description", async () => {
    document.getElementById("td").textContent = JSON.stringify(await api(`/api/v1/things/${encodeURIComponent(id)}/td`), null, 2);
  });
}

/** An actuator's control: a switch for booleans, a value box otherwise. */
function control(thing) {
  const outcome = el("span", { class: "outcome", id: "outcome", "aria-live": "polite" }, "");
  const send = async value => {
    outcome.className = "outcome pending";
    outcome.textContent = "sending…";
    const answer = await attempt("Command", () => api(`/api/v1/things/${encodeURIComponent(thing.id)}/actuation?wait=5000`, { method: "PUT", body: { value } }));
    outcome.className = `outcome ${answer ? answer.state : "failed"}`;
    outcome.textContent = answer ? `${JSON.stringify(answer.value)}: ${answer.state}${answer.reason ? ` (${answer.reason})` : ""}` : "failed";
  };
  const input = el("input", { type: "text", "aria-label": "Value", size: 8 });
  const buttons = thing.data_type === "boolean" || thing.type === "switch"
    ? [el("button", { type: "button", onclick: () => send(true) }, "On"), el("button", { type: "button", class: "quiet", onclick: () => send(false) }, "Off")]
    : [input, el("button", { type: "button", onclick: () => send(isNaN(Number(input.value)) ? input.value : Number(input.value)) }, "Set")];
  return el("div", { class: "card" }, el("div", { class: "muted" }, "Command"), el("div", { class: "controls" }, buttons, outcome));
}

// ------------------------------------------------------------ Services

async function servicesPage() {
  const list = el("div");
  const manifest = el("input", { type: "file", name: "manifest", accept: ".toml,text/plain", required: true });
  const component = el("input", { type: "file", name: "component", accept: ".wasm,application/wasm", required: true });
  const published = el("span", { class: "outcome", "aria-live": "polite" });
  const form = el("form", { class: "card controls", id: "publish" },
    el("label", {}, "Manifest (service.toml) ", manifest),
    el("label", {}, "Component (.wasm) ", component),
    el("button", { type: "submit" }, "Publish"), published);
  form.addEventListener("submit", async event => {
    event.preventDefault();
    const text = await manifest.files[0].text();
    const wasm = new Uint8Array(await component.files[0].arrayBuffer());
    let binary = "";
    for (let i = 0; i < wasm.length; i += 0x8000) binary += String.fromCharCode(...wasm.subarray(i, i + 0x8000));
    published.textContent = "publishing…";
    const answer = await attempt("Publish", () => api("/api/v1/services", { method: "POST", body: { manifest: text, component: btoa(binary) } }));
    published.textContent = answer ? `published ${answer.name} ${answer.version}` : "not published";
    refresh();
  });
  main.replaceChildren(el("h1", {}, "Extended services"), list, el("h2", {}, "Publish a service"), form);
  const act = (name, verb) => attempt(`${verb} ${name}`, async () => {
    if (verb === "remove") await api(`/api/v1/services/${encodeURIComponent(name)}`, { method: "DELETE" });
    else await api(`/api/v1/services/${encodeURIComponent(name)}/${verb}`, { method: "POST" });
    refresh();
  });
  const refresh = () => attempt("Services", async () => {
    const services = await api("/api/v1/services");
    list.replaceChildren(services.length ? table(
      ["Name", "Version", "State", "Runs at", "Placement", "Calls", "Errors", "Restarts", "Memory", "CPU", ""],
      services.map(s => el("tr", { "data-service": s.name },
        el("td", {}, el("a", { href: `#/service/${encodeURIComponent(s.name)}` }, s.name)),
        el("td", {}, s.version), el("td", {}, state(s.state)), el("td", {}, s.gateway || "—"),
        el("td", {}, s.placement), el("td", {}, s.calls), el("td", {}, s.errors), el("td", {}, s.restarts),
        el("td", {}, bytes(s.memory_bytes)), el("td", {}, `${s.cpu_time_ms.toFixed(1)} ms`),
        el("td", { class: "controls" },
          s.enabled ? el("button", { type: "button", class: "quiet", onclick: () => act(s.name, "stop") }, "Stop")
            : el("button", { type: "button", class: "quiet", onclick: () => act(s.name, "start") }, "Start"),
          el("button", { type: "button", class: "quiet", onclick: () => confirm(`Remove ${s.name} from the whole local cloud?`) && act(s.name, "remove") }, "Remove"))))
    ) : el("p", { class: "muted" }, "No extended service is installed."));
  });
  every(3000, refresh);
}

async function servicePage(name) {
  main.replaceChildren(el("h1", {}, name));
  const info = el("div");
  const log = el("pre", { class: "log", id: "log" }, "…");
  main.append(el("p", {}, el("a", { href: "#/services" }, "← all services")), info, el("h2", {}, "Log (live)"), log);
  every(2000, () => attempt(name, async () => {
    const service = await api(`/api/v1/services/${encodeURIComponent(name)}`);
    info.replaceChildren(table(["Property", "Value"], [
      ["State", state(service.state)], ["Why", service.reason || "—"], ["Version", service.version],
      ["Description", service.description], ["Runs at", service.gateway || "—"], ["Placement", service.placement],
      ["Home", service.home], ["Installed", when(service.installed_at)], ["Checkpointed", when(service.checkpointed_at)],
      ["Outputs", service.outputs.join(", ") || "—"], ["Calls / errors / restarts", `${service.calls} / ${service.errors} / ${service.restarts}`],
      ["Last error", service.last_error || "—"], ["Memory", bytes(service.memory_bytes)],
      ["Limits", el("code", {}, JSON.stringify(service.limits))], ["Grants", el("code", {}, JSON.stringify(service.grants))],
    ].map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v)))));
    try {
      const lines = await api(`/api/v1/services/${encodeURIComponent(name)}/logs`);
      log.textContent = lines.map(l => `${new Date(l.time / 1000).toISOString()} ${l.level} ${l.message}`).join("\n") || "(nothing logged yet)";
    } catch (error) {
      log.textContent = error.status === 409 ? `${error.message} Open that gateway's dashboard for its log.` : error.message;
    }
  }));
}

// ------------------------------------------------------------ Federation

async function federationPage() {
  const smanage = el("div");
  const sip = el("div");
  main.replaceChildren(el("h1", {}, "Federation"),
    el("h2", {}, "S-MANAGE: this gateway's SDVSs and their tables"), smanage,
    el("h2", {}, "SIP: registrations and subscriptions"), sip);
  every(3000, () => attempt("Federation", async () => {
    const [s, p] = await Promise.all([api("/api/v1/federation/smanage"), api("/api/v1/federation/sip")]);
    smanage.replaceChildren(s.enabled === false ? el("p", { class: "muted" }, "S-MANAGE is off on this gateway.") : render(s));
    sip.replaceChildren(p.enabled === false ? el("p", { class: "muted" }, "SIP is off on this gateway.") : render(p));
  }));
}

// ------------------------------------------------------------ Health

async function healthPage() {
  const charts = [
    ["ingest", "Readings ingested /s", "fogbank_readings_ingested_total", true],
    ["drops", "Readings a slow subscriber missed /s", "fogbank_bus_missed_total", true],
    ["store", "Readings stored (MiB)", "fogbank_store_readings_bytes", false, 1 / 1048576],
    ["rss", "Resident memory (MiB)", "fogbank_resident_memory_bytes", false, 1 / 1048576],
  ];
  const grid = el("div", { class: "grid" });
  const summary = el("p", { class: "muted" });
  main.replaceChildren(el("h1", {}, "Health"), summary, grid);
  const values = [];
  const plots = charts.map(([key, label]) => {
    const box = el("div", { class: "chart small", id: `health-${key}` });
    const value = el("span", { class: "muted" });
    values.push(value);
    grid.append(el("div", { class: "card" }, el("strong", {}, label), " ", value, box));
    return chart(box, label, { height: 160, window: HEALTH_WINDOW_S, legend: false });
  });
  const shown = (i, v) => {
    values[i].textContent = v.toFixed(1);
    plots[i].add(Date.now() / 1000, v);
  };
  let previous = null;
  every(2000, () => attempt("Health", async () => {
    const [text, health] = await Promise.all([api("/metrics"), api("/health")]);
    const now = Date.now() / 1000;
    charts.forEach(([, , name, rate, scale = 1], i) => {
      const value = metric(text, name);
      if (!rate) shown(i, value * scale);
      else if (previous) shown(i, (value - previous.values[i]) / (now - previous.now));
    });
    previous = { now, values: charts.map(([, , name]) => metric(text, name)) };
    summary.textContent = `${health.gateway}, version ${health.version}, up ${health.uptime_seconds} s, ${health.things} thing services.`;
  }));
}

// ------------------------------------------------------------ routing

api("/health").then(h => { document.getElementById("here").textContent = `on ${h.gateway}`; document.title = `fogbank · ${h.gateway}`; }).catch(() => {});
start([
  [/^#?\/?$/, () => cloudPage(), "cloud"],
  [/^#\/things(\?.*)?$/, m => thingsPage(new URLSearchParams((m[1] || "").slice(1))), "things"],
  [/^#\/thing\/([^?]+)(\?.*)?$/, m => thingPage(decodeURIComponent(m[1])), "things"],
  [/^#\/services$/, () => servicesPage(), "services"],
  [/^#\/service\/(.+)$/, m => servicePage(decodeURIComponent(m[1])), "services"],
  [/^#\/federation$/, () => federationPage(), "federation"],
  [/^#\/health$/, () => healthPage(), "health"],
]);
