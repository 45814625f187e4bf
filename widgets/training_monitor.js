// TrainingMonitor: SAEs learning, live. Curves of loss / FVU / L0 / dead fraction against tokens (one line per SAE),
// the last window's log10 firing-frequency histogram (dead, too sparse, too dense regions marked), latents that just
// came alive, config, tokens/s, ETA and a Stop button.
// State: _curves (float32 [n_saes, 4, T]), _x (float64 [T] tokens), _hist (float32 [n_saes, bins]),
// _hist_meta {edges, dead}, _n_saes, summary, config, newly_alive, status, checkpoint, message,
// _stop_clicks (Stop increments it), _can_stop, _static. Drawn as SVG built with createElementNS and textContent.

const SVG = "http://www.w3.org/2000/svg";
const METRICS = [["loss", true], ["fvu", true], ["l0", false], ["dead_fraction", false]];
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"];

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c != null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text != null) el.textContent = String(text);
  return el;
}

function view(value, Type) {
  if (!value) return new Type(0);
  let buf, off = 0, len;
  if (value instanceof DataView || ArrayBuffer.isView(value)) { buf = value.buffer; off = value.byteOffset; len = value.byteLength; }
  else if (value instanceof ArrayBuffer) { buf = value; len = value.byteLength; }
  else return new Type(value);
  return new Type(buf.slice(off, off + len));
}

const fmt = (x) => (!isFinite(x) ? "–" : x === 0 ? "0" : Math.abs(x) < 1e-2 || Math.abs(x) >= 1e5 ? x.toExponential(2) : x.toPrecision(3));
const fmtTok = (t) => (t >= 1e6 ? (t / 1e6).toFixed(2) + "M" : t >= 1e3 ? (t / 1e3).toFixed(1) + "k" : String(Math.round(t)));
const fmtDur = (sec) => {
  if (!isFinite(sec)) return "–";
  sec = Math.max(0, Math.round(sec));
  const m = Math.floor(sec / 60), r = String(sec % 60).padStart(2, "0");
  return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${r}` : `${m}:${r}`;
};
const visible = (t) => String(t).replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/[\u0000-\u001f\u007f]/g, "·");

function lineChart(title, x, series, logY, width = 250, height = 150) {
  const pad = { l: 44, r: 8, t: 18, b: 22 };
  const svg = s("svg", { class: "sk-chart", width, height, viewBox: `0 0 ${width} ${height}`, "data-metric": title, role: "img" });
  svg.append(s("text", { x: pad.l, y: 12, class: "sk-chart-title" }, title));
  const tf = (v) => (logY ? Math.log10(v) : v);
  let xmax = 0, ymin = Infinity, ymax = -Infinity;
  for (const ys of series) ys.forEach((v, i) => {
    if (!isFinite(v) || (logY && v <= 0)) return;
    xmax = Math.max(xmax, x[i]); ymin = Math.min(ymin, tf(v)); ymax = Math.max(ymax, tf(v));
  });
  const W = width - pad.l - pad.r, H = height - pad.t - pad.b;
  svg.append(s("rect", { x: pad.l, y: pad.t, width: W, height: H, class: "sk-frame" }));
  if (!isFinite(ymin)) { svg.append(s("text", { x: pad.l + 6, y: pad.t + 20, class: "sk-muted" }, "waiting for data…")); return svg; }
  if (ymax - ymin < 1e-9) { ymin -= 0.5; ymax += 0.5; }
  const X = (v) => pad.l + (xmax > 0 ? (v / xmax) * W : 0), Y = (v) => pad.t + H - ((tf(v) - ymin) / (ymax - ymin)) * H;
  const lab = (v) => fmt(logY ? 10 ** v : v);
  svg.append(s("text", { x: pad.l - 3, y: pad.t + 8, class: "sk-tick", "text-anchor": "end" }, lab(ymax)));
  svg.append(s("text", { x: pad.l - 3, y: pad.t + H, class: "sk-tick", "text-anchor": "end" }, lab(ymin)));
  svg.append(s("text", { x: pad.l + W, y: height - 6, class: "sk-tick", "text-anchor": "end" }, fmtTok(xmax) + " tok"));
  series.forEach((ys, k) => {
    const pts = [];
    ys.forEach((v, i) => { if (isFinite(v) && !(logY && v <= 0)) pts.push(`${X(x[i]).toFixed(1)},${Y(v).toFixed(1)}`); });
    if (pts.length) svg.append(s("polyline", { points: pts.join(" "), class: "sk-line", stroke: COLORS[k % COLORS.length], "data-sae": k, "data-points": pts.length }));
  });
  return svg;
}

function histogram(edges, counts, dead, width = 520, height = 170) {
  const pad = { l: 40, r: 8, t: 18, b: 30 };
  const svg = s("svg", { class: "sk-hist", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.append(s("text", { x: pad.l, y: 12, class: "sk-chart-title" }, "latent density: log10 firing frequency (last window)"));
  const W = width - pad.l - pad.r, H = height - pad.t - pad.b;
  if (!edges || edges.length < 2) { svg.append(s("text", { x: pad.l, y: pad.t + 20, class: "sk-muted" }, "waiting for data…")); return svg; }
  const lo = edges[0], hi = edges[edges.length - 1], deadW = 26;
  const X = (v) => pad.l + deadW + ((v - lo) / (hi - lo)) * (W - deadW);
  const regions = [["sk-dead-region", pad.l, pad.l + deadW, "dead"], ["sk-sparse-region", X(lo), X(-5), "too sparse"], ["sk-dense-region", X(-1), X(hi), "too dense"]];
  for (const [cls, a, b, name] of regions) {
    svg.append(s("rect", { x: a, y: pad.t, width: Math.max(0, b - a), height: H, class: cls }));
    svg.append(s("text", { x: (a + b) / 2, y: pad.t + 10, class: "sk-region-label", "text-anchor": "middle" }, name));
  }
  let cmax = 1;
  counts.forEach((c) => c.forEach((v) => { cmax = Math.max(cmax, v); }));
  dead.forEach((d) => { cmax = Math.max(cmax, d); });
  const n = counts.length || 1;
  counts.forEach((c, k) => {
    const color = COLORS[k % COLORS.length];
    c.forEach((v, i) => {
      if (!(v > 0)) return;
      const x0 = X(edges[i]), x1 = X(edges[i + 1]), bw = (x1 - x0) / n, hh = (v / cmax) * H;
      svg.append(s("rect", { x: x0 + k * bw, y: pad.t + H - hh, width: Math.max(0.5, bw - 0.3), height: hh, fill: color, class: "sk-bar", "data-sae": k }));
    });
    const d = dead[k] || 0, hh = (d / cmax) * H, bw = (deadW - 6) / n;
    if (d > 0) svg.append(s("rect", { x: pad.l + 3 + k * bw, y: pad.t + H - hh, width: bw, height: hh, fill: color, class: "sk-bar sk-dead-bar", "data-sae": k }));
  });
  for (let t = Math.ceil(lo); t <= hi; t += 1) svg.append(s("text", { x: X(t), y: height - 16, class: "sk-tick", "text-anchor": "middle" }, String(t)));
  svg.append(s("text", { x: pad.l + W / 2, y: height - 3, class: "sk-tick", "text-anchor": "middle" }, "log10(fires / tokens); latents per bin"));
  return svg;
}

function render({ model, el }) {
  const isStatic = !!model.get("_static");
  const root = h("div", { class: "saekit-monitor" + (isStatic ? " sk-static" : "") });
  const statusEl = h("span", { class: "sk-status" });
  const stats = h("span", { class: "sk-stats" });
  const stop = h("button", { class: "sk-stop", type: "button" }, "Stop");
  const bar = h("div", { class: "sk-progress" }, h("div", { class: "sk-progress-fill" }));
  const message = h("div", { class: "sk-message" });
  const legend = h("div", { class: "sk-legend" });
  const charts = h("div", { class: "sk-charts" });
  const hist = h("div", { class: "sk-histwrap" });
  const alive = h("div", { class: "sk-alive" });
  const config = h("details", { class: "sk-config" });
  root.append(h("div", { class: "sk-top" }, statusEl, stats, stop), bar, message, legend, charts, hist, alive, config);
  el.append(root);

  stop.addEventListener("click", () => {
    model.set("_stop_clicks", (model.get("_stop_clicks") || 0) + 1);
    model.save_changes();
    stop.disabled = true;
    stop.textContent = "stopping…";
  });

  function saeLabel(k) {
    const c = ((model.get("config") || {}).saes || [])[k] || {};
    const sparsity = c.target_l0 ? " L0=" + c.target_l0 : c.k ? " k=" + c.k : "";
    return `${c.architecture || "sae"} ${c.n_latents != null ? "F=" + c.n_latents : ""}${sparsity}`.trim();
  }

  function drawTop() {
    const st = model.get("status") || "idle", sm = model.get("summary") || {};
    statusEl.textContent = st;
    statusEl.className = "sk-status sk-" + st;
    stats.textContent = sm.step != null
      ? `step ${sm.step}/${sm.steps ?? "?"} · ${fmtTok(sm.tokens)} / ${fmtTok(sm.total_tokens ?? 0)} tokens · ` +
        `${fmtTok(sm.tokens_per_s ?? 0)} tok/s · elapsed ${fmtDur(sm.elapsed_s)} · ETA ${st === "running" ? fmtDur(sm.eta_s) : "–"}`
      : "";
    const frac = sm.total_tokens ? Math.min(1, sm.tokens / sm.total_tokens) : 0;
    bar.firstChild.style.width = (100 * frac).toFixed(1) + "%";
    const live = st === "running" && !!model.get("_can_stop") && !isStatic;
    stop.hidden = isStatic || !(st === "running" || st === "stopping");
    stop.disabled = !live;
    stop.textContent = st === "stopping" ? "stopping…" : "Stop";
    stop.title = live ? "end training at the next step and write a checkpoint" : (model.get("message") || "");
    const ck = model.get("checkpoint");
    message.textContent = model.get("message") || (ck ? `checkpoint: ${ck}` : "");
  }

  function drawCurves() {
    const n = model.get("_n_saes") || 0, x = view(model.get("_x"), Float64Array), c = view(model.get("_curves"), Float32Array);
    const T = x.length;
    legend.replaceChildren(...Array.from({ length: n }, (_, k) =>
      h("span", { class: "sk-key" }, h("span", { class: "sk-swatch", style: `background:${COLORS[k % COLORS.length]}` }), saeLabel(k))));
    charts.replaceChildren(...METRICS.map(([name, logY], m) => {
      const series = Array.from({ length: n }, (_, k) => Array.from(c.subarray((k * METRICS.length + m) * T, (k * METRICS.length + m + 1) * T)));
      return lineChart(name, x, series, logY);
    }));
    const meta = model.get("_hist_meta") || {}, edges = meta.edges || [], bins = Math.max(0, edges.length - 1);
    const hv = view(model.get("_hist"), Float32Array);
    const counts = bins ? Array.from({ length: hv.length / bins }, (_, k) => Array.from(hv.subarray(k * bins, (k + 1) * bins))) : [];
    hist.replaceChildren(histogram(edges, counts, meta.dead || []));
  }

  function drawAlive() {
    const rows = model.get("newly_alive") || [];
    const head = h("tr", {}, ...["SAE", "latent", "at tokens", "density", "act", "top token", "context"].map((t) => h("th", {}, t)));
    const body = rows.map((r) => h("tr", { class: "sk-alive-row", "data-latent": r.latent },
      h("td", {}, String(r.sae)), h("td", {}, "#" + r.latent), h("td", {}, fmtTok(r.tokens)), h("td", {}, fmt(r.density)),
      h("td", {}, fmt(r.act)), h("td", {}, r.token == null ? "–" : h("code", {}, visible(r.token))),
      h("td", { class: "sk-ctx" }, r.context == null ? "–" : (r.context || []).map((t, i, a) =>
        h("span", { class: i === a.length - 1 ? "sk-ctx-tok sk-ctx-hit" : "sk-ctx-tok" }, visible(t))))));
    alive.replaceChildren(
      h("div", { class: "sk-section" }, `latents that just came alive (${rows.length})`),
      rows.length ? h("table", {}, h("thead", {}, head), h("tbody", {}, ...body)) : h("div", { class: "sk-muted" }, "none yet"));
  }

  function drawConfig() {
    const c = model.get("config") || {};
    const items = Object.entries(c.train || {}).map(([k, v]) => h("span", { class: "sk-cfg" }, `${k}=${JSON.stringify(v)}`));
    config.replaceChildren(h("summary", {}, "config"), h("div", { class: "sk-cfgs" }, ...items),
      h("div", { class: "sk-cfgs" }, ...(c.saes || []).map((sae, k) => h("span", { class: "sk-cfg" }, `SAE ${k}: ${JSON.stringify(sae)}`))));
  }

  const handlers = [
    ["change:status", drawTop], ["change:summary", drawTop], ["change:message", drawTop], ["change:checkpoint", drawTop], ["change:_can_stop", drawTop],
    ["change:_curves", drawCurves], ["change:_hist", drawCurves], ["change:config", () => { drawConfig(); drawCurves(); }],
    ["change:newly_alive", drawAlive],
  ];
  handlers.forEach(([e, cb]) => model.on(e, cb));
  drawTop(); drawCurves(); drawAlive(); drawConfig();
  return () => { handlers.forEach(([e, cb]) => model.off(e, cb)); root.remove(); };
}

export default { render };
