/* eeghub console. Plain JavaScript, no dependencies, nothing from outside
 * this server. Every figure on a page comes from the JSON API, called with
 * the identity the user signed in with; the console shows what the API
 * answers, including its refusals. */
"use strict";

const body = document.body;
const MODE = body.dataset.authMode;
const USER_HEADER = body.dataset.userHeader || "X-User-Id";
const KEY = "eeghub.identity";

// ------------------------------------------------------------------ identity
const identity = {
  get() {
    try { return JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { return null; }
  },
  set(value) { sessionStorage.setItem(KEY, JSON.stringify(value)); },
  clear() { sessionStorage.removeItem(KEY); },
  headers() {
    const who = identity.get();
    if (!who) return {};
    return MODE === "jwt" ? { Authorization: "Bearer " + who.token } : { [USER_HEADER]: who.user_id };
  },
};

function toSignIn() {
  const next = location.pathname + location.search;
  location.assign("/console/sign-in?next=" + encodeURIComponent(next));
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.error || body.detail)) || ("HTTP " + status));
    this.status = status;
    this.body = body;
  }
}

/** Calls the API with the signed-in identity. Returns the parsed JSON (or
 * the Response when raw). A 401 sends the user to the sign-in page. */
async function api(path, options = {}) {
  const headers = { ...identity.headers(), ...(options.headers || {}) };
  const init = { method: options.method || "GET", headers };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.json);
  } else if (options.form) {
    init.body = options.form;
  }
  const response = await fetch(path, init);
  if (response.status === 401 && !options.allow401) {
    identity.clear();
    toSignIn();
    throw new ApiError(401, await response.json().catch(() => null));
  }
  if (options.raw) return response;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text.slice(0, 200) }; }
  if (!response.ok && !(options.accept || []).includes(response.status)) throw new ApiError(response.status, data);
  return options.withStatus ? { status: response.status, data } : data;
}

// ------------------------------------------------------------------ DOM helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "style") Object.assign(el.style, v); // CSSOM: allowed by the page's CSP, unlike style attributes
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (selector) => document.querySelector(selector);
const badge = (text) => h("span", { class: "badge " + String(text || "").replace(/[^a-z_]/gi, "") }, text ?? "–");

function flash(message, kind) {
  const el = $("#flash");
  el.className = kind || "";
  el.textContent = message || "";
}

function showError(error) {
  if (error instanceof ApiError) {
    const issues = (error.body && error.body.issues) || [];
    const detail = issues.map((i) => `• ${i.field || ""}${i.row ? " (row " + i.row + ")" : ""}: ${i.message}`).join("\n");
    flash(`${error.status}: ${error.message}${detail ? "\n" + detail : ""}`);
  } else {
    flash(String(error && error.message ? error.message : error));
  }
}

/** Runs an async action, showing its error instead of throwing. */
async function guarded(action) {
  try { return await action(); } catch (error) { if (!(error instanceof ApiError && error.status === 401)) showError(error); }
  return undefined;
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min` : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function facts(el, pairs) {
  el.replaceChildren(...pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function fillTable(selector, rows) {
  $(selector).querySelector("tbody").replaceChildren(...rows);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls ``tick`` every ``ms`` while it returns true (and the page is open). */
async function poll(tick, ms) {
  for (;;) {
    let again = false;
    try { again = await tick(); } catch (error) { showError(error); again = !(error instanceof ApiError && error.status < 500); }
    if (!again) return;
    await sleep(ms);
  }
}

/** Saves a response body as a file (downloads need the identity header, so
 * they go through fetch, not a plain link). */
async function saveResponse(response, fallbackName) {
  const disposition = response.headers.get("content-disposition") || "";
  const match = /filename\*=UTF-8''([^;]+)|filename="?([^";]+)"?/i.exec(disposition);
  const name = match ? decodeURIComponent(match[1] || match[2]) : fallbackName;
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return { name, bytes: blob.size };
}

/** An image's URL for an <img>: the signed link in jwt mode (the browser
 * loads it without the token), else the file fetched with the identity. */
async function imageFrom(path, signed) {
  if (MODE === "jwt" && signed && signed.includes("signature=")) return signed;
  const response = await api(path, { raw: true });
  if (!response.ok) throw new ApiError(response.status, null);
  return URL.createObjectURL(await response.blob());
}

// ------------------------------------------------------------------ SVG plots
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
  return ticks;
}

/** A line chart: series [{label, xs, ys, color}], optional log-y. */
function lineChart({ series, xLabel, yLabel, logY = false, width = 560, height = 300, markers = [] }) {
  const m = { l: 64, r: 12, t: 10, b: 42 };
  const xs = series.flatMap((d) => d.xs);
  const ysRaw = series.flatMap((d) => d.ys).filter((v) => v !== null && isFinite(v) && (!logY || v > 0));
  if (!xs.length || !ysRaw.length) return h("p", { class: "muted" }, "No data to draw.");
  const ty = logY ? (v) => Math.log10(v) : (v) => v;
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ysRaw.map(ty)), Math.max(...ysRaw.map(ty))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  if (logY) { y0 = Math.floor(y0); y1 = Math.ceil(y1); }
  const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (width - m.l - m.r);
  const Y = (v) => height - m.b - ((ty(v) - y0) / (y1 - y0)) * (height - m.t - m.b);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${yLabel} against ${xLabel}` });
  const yTicks = logY ? Array.from({ length: y1 - y0 + 1 }, (_, i) => Math.pow(10, y0 + i)) : niceTicks(y0, y1, 5);
  for (const t of yTicks) {
    svg.append(s("line", { class: "gridline", x1: m.l, x2: width - m.r, y1: Y(t), y2: Y(t) }));
    svg.append(s("text", { x: m.l - 4, y: Y(t) + 4, "text-anchor": "end" }, logY ? `1e${Math.round(Math.log10(t))}` : +t.toPrecision(3)));
  }
  for (const t of niceTicks(x0, x1, 8)) {
    svg.append(s("line", { class: "axis", x1: X(t), x2: X(t), y1: height - m.b, y2: height - m.b + 4 }));
    svg.append(s("text", { x: X(t), y: height - m.b + 16, "text-anchor": "middle" }, +t.toPrecision(4)));
  }
  for (const mk of markers) {
    svg.append(s("rect", { x: X(mk.from), y: m.t, width: Math.max(1, X(mk.to) - X(mk.from)), height: height - m.t - m.b, fill: mk.color, opacity: 0.12 }));
  }
  svg.append(s("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: height - m.b }));
  svg.append(s("line", { class: "axis", x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b }));
  svg.append(s("text", { x: (m.l + width - m.r) / 2, y: height - 6, "text-anchor": "middle" }, xLabel));
  svg.append(s("text", { x: 12, y: (m.t + height - m.b) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(m.t + height - m.b) / 2})` }, yLabel));
  series.forEach((d, i) => {
    const points = d.xs.map((x, k) => [x, d.ys[k]]).filter(([, y]) => y !== null && isFinite(y) && (!logY || y > 0));
    const color = d.color || PALETTE[i % PALETTE.length];
    svg.append(s("polyline", { fill: "none", stroke: color, "stroke-width": 1.5, points: points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(" ") }));
  });
  const legend = h("div", { class: "legend" }, series.map((d, i) => h("span", {}, h("i", { style: { background: d.color || PALETTE[i % PALETTE.length] } }), d.label)));
  return h("div", { class: "chart" }, svg, legend);
}

/** Viridis-like colour for 0..1. */
function heat(v) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const t = Math.max(0, Math.min(1, v)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t));
  const f = t - i;
  const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
  return `rgb(${c.join(",")})`;
}

function coherenceMatrix(result) {
  const n = result.channels.length;
  const cell = Math.max(18, Math.min(44, Math.floor(360 / Math.max(n, 1))));
  const left = 70, top = 10, size = cell * n;
  const width = left + size + 90, height = top + size + 60;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "coherence matrix", class: "matrix" });
  result.matrix.forEach((row, i) => row.forEach((v, j) => {
    const rect = s("rect", { x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1, fill: v === null ? "#eee" : heat(v) },
      s("title", {}, `${result.channels[i]}–${result.channels[j]}: ${v === null ? "n/a" : v.toFixed(3)}`));
    svg.append(rect);
  }));
  result.channels.forEach((name, i) => {
    svg.append(s("text", { x: left - 4, y: top + i * cell + cell / 2 + 4, "text-anchor": "end" }, name));
    svg.append(s("text", { x: left + i * cell + cell / 2, y: top + size + 14, "text-anchor": "middle" }, name));
  });
  const bx = left + size + 24;
  for (let k = 0; k <= 20; k++) svg.append(s("rect", { x: bx, y: top + size - (k + 1) * (size / 21), width: 14, height: size / 21 + 0.5, fill: heat(k / 20) }));
  svg.append(s("text", { x: bx + 18, y: top + size, "text-anchor": "start" }, "0"));
  svg.append(s("text", { x: bx + 18, y: top + 10, "text-anchor": "start" }, "1"));
  const floorY = top + size - result.noise_floor * size;
  svg.append(s("line", { x1: bx - 3, x2: bx + 17, y1: floorY, y2: floorY, stroke: "#d23c3c", "stroke-width": 2 }));
  svg.append(s("text", { x: left + size / 2, y: height - 10, "text-anchor": "middle" },
    `magnitude-squared coherence, ${result.band[0]}–${result.band[1]} Hz (unitless, 0–1)`));
  return h("div", {}, svg, h("p", { class: "muted" },
    `Mean ${result.mean === null ? "n/a" : result.mean.toFixed(3)} over ${result.n_segments} segments; noise floor ${result.noise_floor.toFixed(3)} (red mark): values near it are what independent signals show.`));
}

// ------------------------------------------------------------------ pages
const pages = {};

pages.sign_in = async () => {
  const next = new URLSearchParams(location.search).get("next");
  const target = next && next.startsWith("/console") ? next : "/console/experiments";
  const form = $("#sign-in-form");
  async function tryIdentity(value) {
    identity.set(value);
    try {
      const me = await api("/api/v1/console/me", { allow401: true, withStatus: true, accept: [401] });
      if (me.status === 401) { identity.clear(); showError(new ApiError(401, me.data)); return; }
      location.assign(target);
    } catch (error) { identity.clear(); showError(error); }
  }
  // An identity provider may redirect here with the token in the fragment
  // (/console/sign-in#access_token=...): it never reaches a server log.
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromProvider = fragment.get("access_token") || fragment.get("id_token");
  if (MODE === "jwt" && fromProvider) {
    history.replaceState(null, "", location.pathname + location.search);
    await tryIdentity({ token: fromProvider });
    return;
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    tryIdentity(MODE === "jwt" ? { token: String(data.get("token")).trim() } : { user_id: String(data.get("user_id")).trim() });
  });
  ready();
};

pages.experiments = async () => {
  async function load() {
    const list = await api("/api/v1/experiments");
    fillTable("#experiments", list.map((e) => h("tr", { "data-experiment-id": e.experiment_id },
      h("td", {}, h("a", { href: `/console/experiments/${e.experiment_id}` }, e.name)),
      h("td", {}, badge(e.role)), h("td", {}, e.has_password ? "yes" : "no"), h("td", {}, e.presentation_order))));
    $("#experiments-empty").hidden = list.length > 0;
  }
  $("#create-experiment").addEventListener("submit", (event) => guarded(async () => {
    event.preventDefault();
    const data = new FormData(event.target);
    const json = { name: data.get("name"), presentation_order: data.get("presentation_order") };
    if (data.get("description")) json.description = data.get("description");
    if (data.get("password")) json.password = data.get("password");
    const created = await api("/api/v1/experiments", { method: "POST", json });
    location.assign(`/console/experiments/${created.experiment_id}`);
  }));
  $("#join-experiment").addEventListener("submit", (event) => guarded(async () => {
    event.preventDefault();
    const data = new FormData(event.target);
    const eid = String(data.get("experiment_id")).trim();
    const json = data.get("password") ? { password: data.get("password") } : {};
    await api(`/api/v1/auth/experiments/${encodeURIComponent(eid)}/join`, { method: "POST", json });
    location.assign(`/console/experiments/${eid}`);
  }));
  ready();
  await guarded(load);
};

async function experimentHeader(eid) {
  const e = await api(`/api/v1/experiments/${encodeURIComponent(eid)}`);
  const link = $("#experiment-link");
  if (link) link.textContent = e.name;
  return e;
}

pages.experiment = async () => {
  const eid = body.dataset.experimentId;
  const base = `/api/v1/experiments/${encodeURIComponent(eid)}`;
  const me = await whoami();
  let experiment;
  async function load() {
    experiment = await experimentHeader(eid);
    $("#experiment-name").textContent = experiment.name;
    $("#experiment-description").textContent = experiment.description || "";
    facts($("#experiment-facts"), [
      ["Id", experiment.experiment_id], ["Your role", badge(experiment.role)],
      ["Participants", experiment.participant_count], ["Sessions", experiment.session_count],
      ["Stimuli", experiment.stimulus_count], ["Password", experiment.has_password ? "yes" : "no"],
      ["Presentation order", experiment.presentation_order],
    ]);
    const owner = experiment.role === "owner";
    document.querySelectorAll(".owner-only").forEach((el) => { el.hidden = !owner; });
    document.querySelectorAll(".member-only").forEach((el) => { el.hidden = false; });
    $("#link-sessions").hidden = !owner;
    if (owner) {
      const form = $("#edit-experiment");
      form.name.value = experiment.name;
      form.description.value = experiment.description || "";
      form.presentation_order.value = experiment.presentation_order;
      await loadParticipants();
    }
    await loadStimuli();
  }
  async function loadParticipants() {
    const rows = await api(`/api/v1/auth/experiments/${encodeURIComponent(eid)}/participants`);
    fillTable("#participants", rows.map((p) => {
      const select = h("select", { "aria-label": `role of ${p.user_id}` }, ["owner", "participant"].map((r) => h("option", { selected: r === p.role }, r)));
      select.addEventListener("change", () => guarded(async () => {
        await api(`/api/v1/auth/experiments/${encodeURIComponent(eid)}/participants/${encodeURIComponent(p.user_id)}`, { method: "PUT", json: { role: select.value } });
        flash(`${p.user_id} is now ${select.value}.`, "info");
      }).then(loadParticipants));
      const remove = h("button", { type: "button", class: "danger" }, "Remove");
      remove.addEventListener("click", () => guarded(async () => {
        if (!confirm(`Remove ${p.user_id} from this experiment?`)) return;
        await api(`/api/v1/auth/experiments/${encodeURIComponent(eid)}/participants/${encodeURIComponent(p.user_id)}`, { method: "DELETE" });
        await loadParticipants();
      }));
      return h("tr", {}, h("td", {}, h("a", { href: `/console/live/${encodeURIComponent(p.user_id)}`, title: "live view" }, p.user_id)),
        h("td", {}, select), h("td", {}, fmtTime(p.joined_at)), h("td", {}, remove));
    }));
  }
  async function loadStimuli() {
    const list = await api(`${base}/stimuli`);
    $("#stimuli-empty").hidden = list.length > 0;
    $("#stimuli").replaceChildren(...list.map((st) => {
      const holder = h("div", { class: "noimg" }, st.content_type || "file");
      const card = h("figure", { class: "stimulus", "data-file-name": st.file_name }, holder,
        h("figcaption", {}, h("strong", {}, st.file_name), h("br"), `${st.trial_type || ""} · ${fmtBytes(st.size_bytes)}`));
      if ((st.content_type || "").startsWith("image/")) {
        imageFrom(`/api/v1/stimuli/${encodeURIComponent(eid)}/download/${encodeURIComponent(st.file_name)}`, st.download_url)
          .then((url) => holder.replaceWith(h("img", { src: url, alt: st.file_name })))
          .catch(() => { holder.textContent = "preview unavailable"; });
      }
      return card;
    }));
  }
  $("#edit-experiment").addEventListener("submit", (event) => guarded(async () => {
    event.preventDefault();
    const f = event.target;
    const json = { name: f.name.value, description: f.description.value || null, presentation_order: f.presentation_order.value };
    if (f.remove_password.checked) json.password = null;
    else if (f.password.value) json.password = f.password.value;
    await api(base, { method: "PATCH", json });
    f.password.value = "";
    f.remove_password.checked = false;
    flash("Saved.", "info");
    await load();
  }));
  $("#delete-experiment").addEventListener("click", () => guarded(async () => {
    if (!confirm(`Delete "${experiment.name}" with its stimuli and exports? Sessions and raw data stay.`)) return;
    await api(base, { method: "DELETE" });
    location.assign("/console/experiments");
  }));
  $("#leave-experiment").addEventListener("click", () => guarded(async () => {
    if (!confirm("Leave this experiment?")) return;
    await api(`/api/v1/auth/experiments/${encodeURIComponent(eid)}/participants/${encodeURIComponent(me.user_id)}`, { method: "DELETE" });
    location.assign("/console/experiments");
  }));
  $("#upload-stimuli").addEventListener("submit", (event) => guarded(async () => {
    event.preventDefault();
    const form = event.target;
    const accepted = await api(`${base}/stimuli`, { method: "POST", form: new FormData(form) });
    $("#stimulus-job").hidden = false;
    await poll(async () => {
      const job = await api(accepted.status_url);
      $("#stimulus-progress").value = job.progress || 0;
      $("#stimulus-job-status").textContent = `${job.status}: ${job.processed_files}/${job.total_files} files${job.error_message ? " – " + job.error_message : ""}`;
      if (job.status === "completed") { form.reset(); await load(); }
      return !["completed", "failed"].includes(job.status);
    }, 500);
  }));
  ready();
  await guarded(load);
};

pages.sessions = async () => {
  const eid = body.dataset.experimentId;
  const limit = 50;
  let offset = 0;
  const filter = $("#session-filter");
  guarded(() => experimentHeader(eid));
  async function load() {
    const q = new URLSearchParams({ limit, offset });
    for (const key of ["user_id", "session_type"]) if (filter[key].value.trim()) q.set(key, filter[key].value.trim());
    const page = await api(`/api/v1/experiments/${encodeURIComponent(eid)}/sessions?${q}`);
    fillTable("#sessions", page.items.map((x) => h("tr", { "data-session-id": x.session_id },
      h("td", {}, h("a", { href: `/console/sessions/${encodeURIComponent(x.session_id)}` }, x.session_id)),
      h("td", {}, h("a", { href: `/console/live/${encodeURIComponent(x.user_id)}` }, x.user_id)),
      h("td", {}, x.session_type), h("td", {}, fmtTime(x.start_time)),
      h("td", {}, x.end_time ? fmtDuration((new Date(x.end_time) - new Date(x.start_time)) / 1000) : "running"),
      h("td", {}, badge(x.link_status)), h("td", {}, badge(x.event_correction_status)),
      h("td", { class: "num" }, `${x.corrected_event_count}/${x.event_count}`))));
    $("#page-info").textContent = page.total ? `${offset + 1}–${offset + page.items.length} of ${page.total}` : "no sessions";
    $("#prev-page").disabled = offset === 0;
    $("#next-page").disabled = offset + limit >= page.total;
    return page.items.some((x) => [x.link_status, x.event_correction_status].some((v) => ["pending", "processing"].includes(v)));
  }
  filter.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; guarded(load); });
  $("#prev-page").addEventListener("click", () => { offset = Math.max(0, offset - limit); guarded(load); });
  $("#next-page").addEventListener("click", () => { offset += limit; guarded(load); });
  ready();
  await poll(load, 3000); // while a shown session is still being linked or corrected
};

function offsetText(c) {
  if (!c || typeof c !== "object") return String(c);
  const offset = typeof c.offset_ms === "number" ? `${c.offset_ms.toFixed(1)} ms` : "?";
  return `offset ${offset}${c.matched !== undefined ? `, ${c.matched} matched` : ""}`;
}

function correctionPlot(report, session) {
  const start = new Date(session.start_time).getTime();
  const events = report.events || [];
  const rel = (iso) => (iso ? (new Date(iso).getTime() - start) / 1000 : null);
  const width = 760, height = 170, m = { l: 90, r: 16, t: 14, b: 40 };
  const times = events.flatMap((e) => [rel(e.expected_time), rel(e.corrected_time)]).filter((v) => v !== null);
  const end = session.end_time ? (new Date(session.end_time).getTime() - start) / 1000 : Math.max(1, ...times);
  const t1 = Math.max(end, ...times, 1);
  const X = (t) => m.l + (t / t1) * (width - m.l - m.r);
  const rowLogged = m.t + 30, rowCorrected = m.t + 90;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "event correction timeline" });
  svg.append(s("text", { x: m.l - 8, y: rowLogged + 4, "text-anchor": "end" }, "logged"));
  svg.append(s("text", { x: m.l - 8, y: rowCorrected + 4, "text-anchor": "end" }, "trigger"));
  for (const t of niceTicks(0, t1, 8)) {
    svg.append(s("line", { class: "gridline", x1: X(t), x2: X(t), y1: m.t, y2: height - m.b }));
    svg.append(s("text", { x: X(t), y: height - m.b + 16, "text-anchor": "middle" }, +t.toPrecision(4)));
  }
  svg.append(s("text", { x: (m.l + width - m.r) / 2, y: height - 6, "text-anchor": "middle" }, "time since session start (s)"));
  for (const e of events) {
    const a = rel(e.expected_time), b = rel(e.corrected_time);
    const matched = b !== null;
    if (matched) svg.append(s("line", { x1: X(a), x2: X(b), y1: rowLogged, y2: rowCorrected, stroke: "#8a96a3", "stroke-width": 1 }));
    svg.append(s("circle", { cx: X(a), cy: rowLogged, r: 4, fill: matched ? "#1f6fb2" : "#d23c3c", class: matched ? "ev-matched" : "ev-unmatched" },
      s("title", {}, `${e.trial_type} logged at ${a.toFixed(3)} s${matched ? `, trigger at ${b.toFixed(3)} s (shift ${e.shift_ms} ms)` : ", no trigger matched"}`)));
    if (matched) svg.append(s("circle", { cx: X(b), cy: rowCorrected, r: 4, fill: "#2e9d4f" }));
  }
  const legend = h("div", { class: "legend" }, h("span", {}, h("i", { style: { background: "#1f6fb2" } }), "logged onset, matched"),
    h("span", {}, h("i", { style: { background: "#d23c3c" } }), "logged onset, unmatched"), h("span", {}, h("i", { style: { background: "#2e9d4f" } }), "trigger (corrected onset)"));
  const residuals = report.residuals_ms || [];
  const residualChart = residuals.length ? h("div", { class: "plot" }, lineChart({
    series: [{ label: "residual (trigger − logged − offset)", xs: residuals.map((_, i) => i + 1), ys: residuals }],
    xLabel: "matched event (time order)", yLabel: "residual (ms)", height: 200,
  })) : null;
  return h("div", {}, svg, legend, residualChart);
}

pages.session = async () => {
  const sid = body.dataset.sessionId;
  const path = `/api/v1/sessions/${encodeURIComponent(sid)}`;
  let named = false;
  ready();
  await poll(async () => {
    const session = await api(path);
    if (session.experiment_id && !named) {
      named = true;
      api(`/api/v1/experiments/${session.experiment_id}`).then((e) => { $("#experiment-link").textContent = e.name; }).catch(() => {});
      $("#experiment-link").href = `/console/experiments/${session.experiment_id}`;
      $("#sessions-link").href = `/console/experiments/${session.experiment_id}/sessions`;
    }
    facts($("#session-facts"), [
      ["User", h("a", { href: `/console/live/${encodeURIComponent(session.user_id)}` }, session.user_id)],
      ["Type", session.session_type], ["Device", session.device_id || "–"],
      ["Start (UTC)", fmtTime(session.start_time)], ["End (UTC)", session.end_time ? fmtTime(session.end_time) : "running"],
      ["Link status", h("span", { id: "link-status" }, badge(session.link_status))],
      ["Event correction", h("span", { id: "correction-status" }, badge(session.event_correction_status))],
      ["Events corrected", `${session.corrected_event_count} of ${session.event_count}`],
    ]);
    const data = await api(`${path}/data`);
    $("#streams-empty").hidden = data.streams.length > 0;
    fillTable("#streams", data.streams.map((st) => h("tr", {},
      h("td", {}, st.device_id), h("td", { class: "num" }, st.sampling_rates.join(", ")), h("td", { class: "num" }, st.packets),
      h("td", { class: "num" }, `${st.samples_received} / ${st.samples_expected ?? "?"}`),
      h("td", { class: "num" }, st.completeness === null ? "–" : `${(st.completeness * 100).toFixed(1)} %`),
      h("td", {}, st.gaps.length ? `${st.gaps.length} (${st.gaps.reduce((a, g) => a + g.missing_ms, 0).toFixed(0)} ms missing)` : "none"),
      h("td", { class: "num" }, st.duplicates_dropped))));
    const correction = await api(`${path}/correction`, { accept: [404], withStatus: true });
    if (correction.status === 404) {
      $("#correction-empty").hidden = false;
      $("#correction-empty").textContent = correction.data.error || correction.data.detail;
      $("#correction-plot").replaceChildren();
    } else {
      const r = correction.data;
      $("#correction-empty").hidden = true;
      const stats = r.residual_stats || {};
      facts($("#correction-facts"), [
        ["Status", h("span", { id: "correction-report-status" }, badge(r.status))],
        ["Matched", h("span", { id: "correction-matched" }, `${r.matched} of ${r.events_total} events (${r.triggers_total} triggers)`)],
        ["Unmatched events", (r.unmatched_event_ids || []).length], ["Extra triggers", (r.extra_triggers || []).length],
        ["Clock offset", r.offset_ms === null ? "none found" : `${r.offset_ms.toFixed(1)} ms`],
        ["Residuals", stats.median === null || stats.median === undefined ? "–"
          : `median ${stats.median.toFixed(2)} ms, mean ${stats.mean.toFixed(2)} ms, SD ${stats.std.toFixed(2)} ms, max |r| ${stats.max_abs.toFixed(2)} ms`],
        ["Tolerance", `${r.tolerance_ms} ms (${r.method})`],
        ...(r.evidence ? [["Evidence", r.evidence + (typeof r.evidence_z === "number" ? ` (z = ${r.evidence_z.toFixed(1)})` : "")]] : []),
        ...(r.reason ? [["Why nothing was corrected", r.reason]] : []),
        ...(Array.isArray(r.candidates) && r.candidates.length ? [["Candidates (could not be told apart)", r.candidates.map(offsetText).join("; ")]] : []),
        ...(r.runner_up ? [["Runner-up", offsetText(r.runner_up)]] : []),
      ]);
      $("#correction-plot").replaceChildren(correctionPlot(r, session));
    }
    const settled = (x) => !["pending", "processing"].includes(x);
    return !(settled(session.link_status) && settled(session.event_correction_status));
  }, 2000);
};

pages.live = async () => {
  const me = await whoami();
  const input = $("#live-user-id");
  const user = body.dataset.userId || (me && me.user_id);
  if (!input.value && user) input.value = user;
  $("#live-form").addEventListener("submit", (event) => {
    event.preventDefault();
    location.assign(`/console/live/${encodeURIComponent(input.value.trim())}`);
  });
  ready();
  if (!user) return;
  $("#live-user").textContent = `· ${user}`;
  const status = $("#live-status");
  const path = `/api/v1/users/${encodeURIComponent(user)}/analysis`;
  let updates = 0;
  function draw(pluginId, value, at) {
    if (pluginId === "channel_quality") {
      const channels = value.channel_quality || {};
      $("#quality").replaceChildren(...Object.entries(channels).map(([name, q]) => {
        const state = q.status === "bad" ? "bad" : q.has_warning ? "warning" : "good";
        return h("span", { class: `light ${state}`, "data-channel": name, "data-state": state, title: (q.reasons || []).join("; ") || "good" },
          h("span", { class: "dot" }), name);
      }));
      const reasons = [...new Set(Object.values(channels).flatMap((q) => q.reasons || []))];
      $("#quality-reasons").textContent = reasons.length ? `Reasons: ${reasons.join("; ")}.` : "Every channel is good.";
      if (!Object.keys(channels).length) $("#quality").replaceChildren(h("p", { class: "muted" }, "No channel report yet."));
    } else if (pluginId === "psd") {
      const series = value.channels.map((name, i) => ({ label: name, xs: value.freqs, ys: value.psd[i] }));
      const plot = lineChart({ series, xLabel: "frequency (Hz)", yLabel: "PSD (V²/Hz, log scale)", logY: true, markers: [{ from: 8, to: 13, color: "#2e9d4f" }] });
      plot.dataset.updated = String(++updates);
      $("#psd-plot").replaceChildren(plot, h("p", { class: "muted" }, `Welch PSD; window ending ${fmtTime(at)}. Shaded: alpha band 8–13 Hz.`));
    } else if (pluginId === "coherence") {
      $("#coherence-plot").replaceChildren(coherenceMatrix(value));
    }
  }
  const first = await guarded(() => api(`${path}?format=json`, { withStatus: true }));
  if (first && first.status === 200) {
    for (const [pid, r] of Object.entries(first.data.results || {})) draw(pid, r.result, r.window_end);
    status.textContent = `Latest results at ${fmtTime(first.data.applications.psd_coherence.timestamp)}; waiting for the stream…`;
  } else if (first) {
    status.textContent = first.data.status || "No results yet.";
  } else {
    status.textContent = "The server refused or failed this view (the message above says why).";
    for (const id of ["#quality", "#psd-plot", "#coherence-plot"]) $(id).replaceChildren();
    return;
  }
  // Server-sent events read through fetch: EventSource cannot send the
  // identity header.
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await api(`${path}/stream`, { raw: true, headers: { Accept: "text/event-stream" } });
      if (!response.ok) { showError(new ApiError(response.status, await response.json().catch(() => null))); return; }
      status.textContent = "Connected: updating live.";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const fields = { data: [] };
          for (const line of block.split("\n")) {
            if (!line || line.startsWith(":")) continue;
            const i = line.indexOf(":");
            const key = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (key === "data") fields.data.push(val); else fields[key] = val;
          }
          if (fields.event === "result" && fields.data.length) {
            const r = JSON.parse(fields.data.join("\n"));
            draw(r.plugin, r.result, r.window_end);
            status.textContent = `Connected: ${r.plugin} at ${fmtTime(r.timestamp)} (device ${r.device_id}).`;
          }
        }
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
    }
    status.textContent = "Disconnected; reconnecting…";
    await sleep(Math.min(10000, 1000 * (attempt + 1)));
  }
};

function exportCard(task, owner) {
  const v = task.validation;
  const done = task.status === "completed";
  // Completed, or failed with the archive kept for inspection.
  const download = h("button", { type: "button", class: "download", disabled: !(task.download_url && owner) }, done ? "Download ZIP" : "Download the kept ZIP");
  download.addEventListener("click", () => guarded(async () => {
    if (MODE === "jwt" && task.download_url && task.download_url.includes("signature=")) {
      // A short-lived signed link: the browser streams the file to disk itself.
      const a = h("a", { href: task.download_url, download: "", hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      return;
    }
    download.disabled = true;
    const response = await api(`/api/v1/export-tasks/${task.task_id}/download`, { raw: true });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const saved = await saveResponse(response, `${task.task_id}.zip`);
    flash(`Downloaded ${saved.name} (${fmtBytes(saved.bytes)}).`, "info");
    download.disabled = false;
  }));
  const report = task.report ? h("details", {}, h("summary", {}, "Report"), reportTable(task.report), h("pre", { class: "json" }, JSON.stringify(task.report, null, 2))) : null;
  return h("div", { class: "export", "data-task-id": task.task_id, "data-status": task.status },
    h("p", {}, badge(task.status), " ", h("strong", {}, fmtTime(task.created_at)), " · ", task.stage || "", " ",
      h("progress", { max: 100, value: task.progress }), ` ${task.progress} % · sessions ${task.sessions_done}/${task.sessions_total} · ${fmtBytes(task.size_bytes ?? task.bytes_done)}`),
    v ? h("p", { class: "validation" }, `BIDS validator: ${v.errors} error(s), ${v.warnings} warning(s)`) : null,
    task.error_message ? h("p", { class: "muted" }, task.error_message) : null,
    report, owner ? download : h("p", { class: "muted" }, "Only owners may download."));
}

function reportTable(report) {
  const sessions = report.sessions || report.exported_sessions || [];
  if (!Array.isArray(sessions) || !sessions.length) return null;
  const keys = Object.keys(sessions[0]).filter((k) => typeof sessions[0][k] !== "object").slice(0, 8);
  return h("table", { class: "grid" }, h("thead", {}, h("tr", {}, keys.map((k) => h("th", {}, k)))),
    h("tbody", {}, sessions.map((row) => h("tr", {}, keys.map((k) => h("td", {}, row[k] ?? "–"))))));
}

pages.exports = async () => {
  const eid = body.dataset.experimentId;
  let owner = false;
  async function refresh() {
    const list = await api(`/api/v1/export-tasks?experiment_id=${encodeURIComponent(eid)}&limit=20`);
    // The list leaves the report out; the newest task is read in full.
    if (list.length) list[0] = await api(`/api/v1/export-tasks/${list[0].task_id}`);
    $("#exports-empty").hidden = list.length > 0;
    $("#exports").replaceChildren(...list.map((t) => exportCard(t, owner)));
    return list.some((t) => !["completed", "failed"].includes(t.status));
  }
  $("#start-export").addEventListener("click", () => guarded(async () => {
    await api(`/api/v1/experiments/${encodeURIComponent(eid)}/export`, { method: "POST" });
    await poll(refresh, 1000);
  }));
  $("#start-export").hidden = true;
  await guarded(async () => { owner = (await experimentHeader(eid)).role === "owner"; });
  $("#start-export").hidden = !owner;
  ready();
  await poll(refresh, 1000);
};

/** Products by group score with their 95 % intervals, the non-target level
 * and its interval shaded; recommended products in red. */
function rankingChart(group, recommended) {
  const rows = (group.products || []).filter((r) => typeof r.score === "number");
  if (!rows.length) return h("p", { class: "muted" }, "No product scores.");
  const width = 640, rowH = 26, m = { l: 170, r: 20, t: 10, b: 44 };
  const height = m.t + m.b + rowH * rows.length;
  const values = rows.flatMap((r) => [r.score, ...(r.ci || [])]).concat(group.nontarget_level_ci || [], [group.nontarget_level]).filter((v) => typeof v === "number");
  let [x0, x1] = [Math.min(...values), Math.max(...values)];
  const pad = (x1 - x0) * 0.08 || 0.05;
  x0 = Math.max(0, x0 - pad); x1 = Math.min(1, x1 + pad);
  const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (width - m.l - m.r);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "product ranking", id: "nm-ranking-chart" });
  const ci = group.nontarget_level_ci || [];
  if (typeof ci[0] === "number") svg.append(s("rect", { x: X(ci[0]), y: m.t, width: Math.max(1, X(ci[1]) - X(ci[0])), height: rowH * rows.length, fill: "#1f77b4", opacity: 0.15 }));
  if (typeof group.nontarget_level === "number") svg.append(s("line", { x1: X(group.nontarget_level), x2: X(group.nontarget_level), y1: m.t, y2: m.t + rowH * rows.length, stroke: "#1f77b4", "stroke-dasharray": "4 3" }));
  rows.forEach((r, i) => {
    const y = m.t + rowH * i + rowH / 2;
    const colour = recommended.has(r.file_name) ? "#d23c3c" : "#555";
    svg.append(s("text", { x: m.l - 8, y: y + 4, "text-anchor": "end" }, r.item_name || r.file_name));
    if (Array.isArray(r.ci) && typeof r.ci[0] === "number") {
      svg.append(s("line", { x1: X(r.ci[0]), x2: X(r.ci[1]), y1: y, y2: y, stroke: "#444" }));
      for (const v of r.ci) svg.append(s("line", { x1: X(v), x2: X(v), y1: y - 5, y2: y + 5, stroke: "#444" }));
    }
    svg.append(s("circle", { cx: X(r.score), cy: y, r: 5, fill: colour }, s("title", {}, `${r.file_name}: ${r.score.toFixed(3)} [${(r.ci || []).map((v) => v.toFixed(3)).join(", ")}]`)));
  });
  const base = m.t + rowH * rows.length;
  svg.append(s("line", { class: "axis", x1: m.l, x2: width - m.r, y1: base, y2: base }));
  for (const t of niceTicks(x0, x1, 6)) {
    svg.append(s("line", { class: "axis", x1: X(t), x2: X(t), y1: base, y2: base + 4 }));
    svg.append(s("text", { x: X(t), y: base + 16, "text-anchor": "middle" }, +t.toPrecision(3)));
  }
  svg.append(s("text", { x: (m.l + width - m.r) / 2, y: height - 6, "text-anchor": "middle" }, "target probability (mean, 95 % bootstrap interval)"));
  return h("div", { class: "plot" }, h("div", { class: "chart" }, svg, h("div", { class: "legend" },
    h("span", {}, h("i", { style: { background: "#d23c3c" } }), "recommended"), h("span", {}, h("i", { style: { background: "#555" } }), "not recommended"),
    h("span", {}, h("i", { style: { background: "#1f77b4", opacity: "0.4" } }), "non-target level of calibration (95 % interval)"))));
}

function renderNeuroMarketing(result) {
  const details = result.details || {};
  const group = details.group || {};
  const recommended = new Set((result.recommendations || []).map((r) => r.file_name));
  const out = [
    h("p", {}, "Outcome: ", h("span", { id: "nm-outcome" }, badge(result.outcome)), ` · analysis ${result.analysis_id} · ${fmtTime(result.generated_at)} · requested by ${result.requested_by_user_id}`),
    h("p", { id: "nm-summary" }, result.summary),
  ];
  if ((result.missing || []).length) out.push(h("h3", {}, "Missing"), h("ul", {}, result.missing.map((m) => h("li", {}, m))));
  if ((result.recommendations || []).length) {
    out.push(h("h3", {}, "Recommended"), h("table", { class: "grid", id: "nm-recommendations" },
      h("thead", {}, h("tr", {}, ["File", "Item", "Brand", "Category", "Gender"].map((x) => h("th", {}, x)))),
      h("tbody", {}, result.recommendations.map((r) => h("tr", {}, [r.file_name, r.item_name, r.brand_name, r.category, r.gender].map((v) => h("td", {}, v ?? "–")))))));
  }
  const products = group.products || [];
  if (products.length) {
    out.push(h("h3", {}, "Ranking"), rankingChart(group, recommended), h("table", { class: "grid", id: "nm-ranking" },
      h("thead", {}, h("tr", {}, ["Rank", "Product", "Score", "95 % interval", "Above non-target", "Above other products"].map((x) => h("th", {}, x)))),
      h("tbody", {}, products.map((r) => h("tr", { "data-file-name": r.file_name },
        h("td", { class: "num" }, r.rank ?? "–"), h("td", {}, r.item_name || r.file_name),
        h("td", { class: "num" }, typeof r.score === "number" ? r.score.toFixed(3) : "–"),
        h("td", {}, Array.isArray(r.ci) && typeof r.ci[0] === "number" ? `[${r.ci[0].toFixed(3)}, ${r.ci[1].toFixed(3)}]` : "–"),
        h("td", {}, r.above_nontarget === undefined ? "–" : r.above_nontarget ? "yes" : "no"),
        h("td", {}, r.above_other_products === undefined ? "–" : r.above_other_products ? "yes" : "no"))))));
  }
  const grand = details.grand_average;
  if (grand && grand.classes && Array.isArray(grand.times_s)) {
    const colours = { target: "#d62728", nontarget: "#1f77b4", product: "#2ca02c" };
    const series = Object.entries(grand.classes).map(([label, c]) => ({ label: `${label} (${c.participants} participant(s))`, xs: grand.times_s, ys: c.uv, color: colours[label] }));
    const window = grand.window_s || [];
    out.push(h("h3", {}, "Grand-average ERP"), h("div", { class: "plot", id: "nm-erp" }, lineChart({
      series, xLabel: "time from stimulus onset (s)", yLabel: "amplitude at parietal sites (µV)",
      markers: typeof window[0] === "number" ? [{ from: window[0], to: window[1], color: "#8a96a3" }] : [],
    })));
  }
  out.push(h("details", {}, h("summary", {}, "Everything the API returned"), h("pre", { class: "json" }, JSON.stringify(result, null, 2))));
  return out;
}

pages.neuro_marketing = async () => {
  const eid = body.dataset.experimentId;
  const base = `/api/v1/neuro-marketing/experiments/${encodeURIComponent(eid)}`;
  const holder = $("#nm-results");
  guarded(() => experimentHeader(eid));
  async function load() {
    const r = await api(`${base}/analysis-results`, { accept: [404, 405], withStatus: true });
    if (r.status === 404 || r.status === 405) {
      const message = (r.data && (r.data.error || r.data.detail)) || "";
      const routeMissing = r.status === 405 || /^not found$/i.test(message.trim());
      holder.replaceChildren(h("p", { class: "muted", id: "nm-unavailable" },
        routeMissing ? "Not available: this server has no neuro-marketing analysis." : `Not available yet: ${message}`));
      $("#run-analysis").hidden = routeMissing;
      return;
    }
    holder.replaceChildren(h("section", { class: "card" }, renderNeuroMarketing(r.data)));
  }
  $("#run-analysis").addEventListener("click", () => guarded(async () => {
    const button = $("#run-analysis");
    button.disabled = true;
    try {
      const job = await api(`${base}/analyze?wait=false`, { method: "POST", withStatus: true });
      const status = $("#nm-job") || h("p", { id: "nm-job", class: "job" });
      holder.before(status);
      await poll(async () => {
        const j = await api(job.data.status_url);
        status.replaceChildren(h("progress", { max: 100, value: j.progress }), ` ${j.status}${j.stage ? ": " + j.stage : ""}${j.error_message ? " – " + j.error_message : ""}`);
        return !["completed", "failed"].includes(j.status);
      }, 1000);
      await load();
    } finally {
      button.disabled = false;
    }
  }));
  ready();
  await guarded(load);
};

pages.calibrations = async () => {
  const me = await whoami();
  document.querySelectorAll(".admin-only").forEach((el) => { el.hidden = !(me && me.administrator); });
  async function load() {
    const items = await api("/api/v1/calibrations");
    fillTable("#calibrations", items.map((c) => {
      const cell = h("td", {}, "–");
      if (/\.(png|jpe?g|gif|webp|svg)$/i.test(c.file_name)) {
        imageFrom(`/api/v1/stimuli/calibration/download/${encodeURIComponent(c.file_name)}`)
          .then((url) => cell.replaceChildren(h("img", { src: url, alt: c.file_name, class: "thumb" }))).catch(() => {});
      }
      return h("tr", {}, h("td", {}, c.file_name), h("td", {}, c.item_type), h("td", {}, c.description || ""), cell);
    }));
  }
  $("#add-calibration").addEventListener("submit", (event) => guarded(async () => {
    event.preventDefault();
    await api("/api/v1/calibrations", { method: "POST", form: new FormData(event.target) });
    event.target.reset();
    flash("Registered.", "info");
    await load();
  }));
  ready();
  await guarded(load);
};

pages.operations = async () => {
  const me = await whoami();
  if (!me || !me.administrator) {
    flash("Operations are for administrators (auth.admin_users).");
    return;
  }
  async function showDeadLetters(queue) {
    const letters = await api(`/api/v1/admin/dlq/${encodeURIComponent(queue)}?limit=50`);
    const replay = h("button", { type: "button" }, `Replay all of ${queue}`);
    replay.addEventListener("click", () => guarded(async () => {
      const done = await api(`/api/v1/admin/dlq/${encodeURIComponent(queue)}/replay`, { method: "POST" });
      flash(`Replayed ${done.replayed} message(s) to ${queue}.`, "info");
      await refresh();
      await showDeadLetters(queue);
    }));
    $("#dead-letters").replaceChildren(h("h3", {}, `Dead letters of ${queue}`), letters.length ? h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, ["Failed at", "Attempts", "Error", "Body"].map((x) => h("th", {}, x)))),
      h("tbody", {}, letters.map((d) => h("tr", {}, h("td", {}, fmtTime(d.failed_at)), h("td", { class: "num" }, d.attempts), h("td", {}, d.error), h("td", {}, h("code", {}, d.body_preview)))))) : h("p", { class: "muted" }, "None."), replay);
  }
  async function refresh() {
    const [health, plugins, queues, errors] = await Promise.all([
      api("/api/v1/health", { accept: [503] }), api("/api/v1/plugins"), api("/api/v1/admin/queues"), api("/api/v1/admin/errors?limit=50"),
    ]);
    fillTable("#health", [h("tr", {}, h("td", {}, h("strong", {}, "overall")), h("td", {}, badge(health.status)), h("td", {}, `v${health.version}`), h("td", {}, `up ${fmtDuration(health.uptime_seconds)}`)),
      ...Object.entries(health.components).map(([name, c]) => h("tr", { "data-component": name }, h("td", {}, name), h("td", {}, badge(c.status), c.error ? ` ${c.error}` : ""), h("td", {}, c.backend || "–"), h("td", { class: "num" }, c.latency_ms !== undefined ? `${c.latency_ms} ms` : "–")))]);
    const versions = Object.fromEntries(plugins.plugins.map((p) => [p.name, p]));
    fillTable("#plugins", Object.entries(health.plugins).map(([name, c]) => h("tr", {}, h("td", {}, name), h("td", {}, badge(c.status), c.error ? ` ${c.error}` : ""), h("td", {}, versions[name] ? versions[name].version : "–"), h("td", {}, versions[name] ? versions[name].source : "–"))));
    fillTable("#queues", queues.queues.map((q) => {
      const view = h("button", { type: "button", class: "secondary", disabled: q.dead_letters === 0 }, "Dead letters");
      view.addEventListener("click", () => guarded(() => showDeadLetters(q.queue)));
      return h("tr", { "data-queue": q.queue }, h("td", {}, q.queue), h("td", { class: "num" }, q.depth), h("td", { class: "num" }, q.dead_letters), h("td", {}, view));
    }));
    $("#errors-empty").hidden = errors.errors.length > 0;
    fillTable("#errors", errors.errors.map((e) => h("tr", {}, h("td", {}, fmtTime(e.time)), h("td", {}, e.logger), h("td", {}, e.message, e.exception ? ` (${e.exception})` : ""))));
    $("#ops-updated").textContent = `Updated ${fmtTime(new Date().toISOString())}; refreshes every 5 s.`;
    return true;
  }
  ready();
  await poll(refresh, 5000);
};

// ------------------------------------------------------------------ start
/** Marks the page as interactive: its handlers are attached (tests wait for it). */
function ready() { body.dataset.ready = "1"; }

let mePromise = null;
function whoami() {
  if (!mePromise) mePromise = identity.get() ? api("/api/v1/console/me").catch(() => null) : Promise.resolve(null);
  return mePromise;
}

async function start() {
  const page = body.dataset.page;
  if (page !== "sign_in" && !identity.get()) { toSignIn(); return; }
  if (page !== "sign_in") {
    const me = await whoami();
    if (!me) return;
    $("#who").textContent = `${me.user_id}${me.administrator ? " (administrator)" : ""}`;
    document.querySelector('[data-nav="operations"]').hidden = !me.administrator;
    const out = $("#sign-out");
    out.hidden = false;
    out.addEventListener("click", () => { identity.clear(); location.assign("/console/sign-in"); });
  }
  if (pages[page]) await pages[page]();
  ready();
}

start();
