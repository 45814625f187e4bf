// CircuitView: a feature circuit laid out by layer. Rows are hook points (earliest at the bottom), columns
// token positions (or one column when positions are summed); circles are nodes (area ~ |score|, red raises
// the metric, blue lowers it, squares are SAE error nodes), lines are edges (width ~ |weight|).
// State: _graph {rows, cols, nodes: [{hookpoint, row, col, position, feature, score, tokens}], edges: [[u, d, w]],
// max_score, metric_clean, metric_patch, method}; threshold (two-way, the slider); selected ([hookpoint,
// position, feature]); ablation ([[hookpoint, feature], ...], clicking a feature node toggles it);
// ablation_result and error (from the kernel); _live (the kernel re-evaluates ablations); _static.

const SVGNS = "http://www.w3.org/2000/svg";

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

function s(tag, attrs = {}) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

const fmt = (x) => (Math.abs(x) >= 0.01 || x === 0 ? x.toFixed(3) : x.toExponential(2));
const visible = (t) => (t.trim() ? t : t.replace(/ /g, "␣")).replace(/\n/g, "↵").replace(/\t/g, "⇥");
const nodeName = (n) => `${n.hookpoint} ${n.feature < 0 ? "error" : "#" + n.feature}` + (n.position == null ? "" : ` @${n.position}`);

function render({ model, el }) {
  const isStatic = !!model.get("_static");
  const root = h("div", { class: "saekit-circuit" + (isStatic ? " sk-static" : "") });
  const slider = h("input", { class: "sk-threshold", type: "range", min: "0", max: "1000", step: "1", "aria-label": "node threshold" });
  const thLabel = h("span", { class: "sk-th-label" });
  const counts = h("span", { class: "sk-counts" });
  const tip = h("div", { class: "sk-tip", role: "tooltip" });
  const info = h("div", { class: "sk-info" });
  const abl = h("div", { class: "sk-ablation" });
  const error = h("div", { class: "sk-error", role: "alert" });
  const svgBox = h("div", { class: "sk-svgbox" });
  root.append(h("div", { class: "sk-controls" }, h("label", {}, "threshold ", slider), thLabel, counts), svgBox, tip, info, abl, error);
  el.append(root);

  const g = () => model.get("_graph") || {};
  // the slider is logarithmic between 1/1000 of the largest |score| and the largest
  const toTh = (v) => { const m = g().max_score || 1; return v <= 0 ? 0 : m * Math.pow(10, -3 + (3 * v) / 1000); };
  const fromTh = (t) => { const m = g().max_score || 1; if (t <= 0) return 0; return Math.max(0, Math.min(1000, ((Math.log10(t / m) + 3) * 1000) / 3)); };

  slider.addEventListener("input", () => { model.set("threshold", toTh(Number(slider.value))); model.save_changes(); });

  function inAblation(n) {
    return (model.get("ablation") || []).some(([hp, f]) => hp === n.hookpoint && f === n.feature);
  }

  function click(n) {
    model.set("selected", [n.hookpoint, n.position, n.feature]);
    if (n.feature >= 0 && !isStatic) {
      const cur = model.get("ablation") || [];
      const next = inAblation(n) ? cur.filter(([hp, f]) => !(hp === n.hookpoint && f === n.feature)) : [...cur, [n.hookpoint, n.feature]];
      model.set("ablation", next);
    }
    model.save_changes();
  }

  function showTip(n, evt) {
    tip.replaceChildren(
      h("div", { class: "sk-tip-title" }, nodeName(n)),
      h("div", {}, `score ${fmt(n.score)}`),
      n.feature < 0 ? h("div", { class: "sk-muted" }, "SAE error node (what the SAE does not reconstruct)")
        : h("div", { class: "sk-tokens" }, n.tokens.length ? n.tokens.map((t) => h("span", { class: "sk-tok" }, visible(t))) : h("span", { class: "sk-muted" }, "no statistics")),
    );
    const box = root.getBoundingClientRect();
    tip.classList.add("sk-show");
    // beside the cursor, flipped to its left near the right edge so that the tip stays inside the view
    const x = evt.clientX - box.left;
    tip.style.left = `${x + 12 + tip.offsetWidth > box.width ? Math.max(0, x - 12 - tip.offsetWidth) : x + 12}px`;
    tip.style.top = `${evt.clientY - box.top + 12}px`;
  }

  function draw() {
    const G = g();
    const rows = G.rows || [], cols = G.cols || [], nodes = G.nodes || [], edges = G.edges || [];
    const th = model.get("threshold") || 0;
    slider.value = String(fromTh(th));
    thLabel.textContent = `|score| ≥ ${fmt(th)}`;
    const shown = nodes.map((n) => Math.abs(n.score) >= th);
    const W = 120, H = 90, left = 110, top = 30;
    const width = left + Math.max(1, cols.length) * W + 20, height = top + Math.max(1, rows.length) * H + 10;
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "sk-svg", role: "img", "aria-label": "feature circuit" });
    // where each node sits: its cell, nodes of one cell side by side by |score|
    const cells = new Map();
    nodes.forEach((n, i) => { if (!shown[i]) return; const k = `${n.row},${n.col}`; if (!cells.has(k)) cells.set(k, []); cells.get(k).push(i); });
    const xy = new Map();
    for (const [k, list] of cells) {
      const [r, c] = k.split(",").map(Number);
      list.sort((a, b) => Math.abs(nodes[b].score) - Math.abs(nodes[a].score));
      const per = Math.min(list.length, 8);
      list.forEach((i, j) => {
        const cx = left + c * W + W / 2 + ((j % per) - (per - 1) / 2) * (W / (per + 1));
        const cy = top + (rows.length - 1 - r) * H + H / 2 + Math.floor(j / per) * 14 - 8;
        xy.set(i, [cx, cy]);
      });
    }
    rows.forEach((name, r) => {
      const y = top + (rows.length - 1 - r) * H + H / 2;
      svg.append(s("line", { x1: left - 5, x2: width - 10, y1: y, y2: y, class: "sk-row-line" }));
      const t = s("text", { x: 4, y: y + 4, class: "sk-row-label" }); t.textContent = name; svg.append(t);
    });
    cols.forEach((name, c) => {
      const t = s("text", { x: left + c * W + W / 2, y: 16, class: "sk-col-label", "text-anchor": "middle" });
      t.textContent = visible(name); svg.append(t);
    });
    const maxW = Math.max(1e-12, ...edges.map((e) => Math.abs(e[2])));
    let nEdges = 0;
    for (const [u, d, w] of edges) {
      if (!xy.has(u) || !xy.has(d)) continue;
      const [x1, y1] = xy.get(u), [x2, y2] = xy.get(d);
      const line = s("line", { x1, y1, x2, y2, class: "sk-edge " + (w >= 0 ? "sk-pos" : "sk-neg"), "stroke-width": 0.5 + 4 * Math.abs(w) / maxW });
      const title = s("title"); title.textContent = `${nodeName(nodes[u])} → ${nodeName(nodes[d])}: ${fmt(w)}`; line.append(title);
      svg.append(line); nEdges++;
    }
    const maxS = G.max_score || 1;
    const sel = model.get("selected") || [];
    for (const [i, [cx, cy]] of xy) {
      const n = nodes[i];
      const r = 3 + 9 * Math.sqrt(Math.abs(n.score) / maxS);
      const cls = "sk-node " + (n.score >= 0 ? "sk-pos" : "sk-neg") + (inAblation(n) ? " sk-ablated" : "")
        + (sel[0] === n.hookpoint && sel[1] === n.position && sel[2] === n.feature ? " sk-selected" : "");
      const shape = n.feature < 0 ? s("rect", { x: cx - r, y: cy - r, width: 2 * r, height: 2 * r, class: cls })
        : s("circle", { cx, cy, r, class: cls });
      shape.setAttribute("data-node", String(i));
      shape.addEventListener("mouseenter", (e) => showTip(n, e));
      shape.addEventListener("mouseleave", () => tip.classList.remove("sk-show"));
      shape.addEventListener("click", () => click(n));
      svg.append(shape);
    }
    svgBox.replaceChildren(svg);
    counts.textContent = `${xy.size} nodes, ${nEdges} edges · ${G.method || ""} · metric clean ${fmt(G.metric_clean ?? 0)}, patched ${fmt(G.metric_patch ?? 0)}`;
    drawInfo();
  }

  function drawInfo() {
    const sel = model.get("selected") || [];
    info.textContent = sel.length ? `selected: ${sel[0]} ${sel[2] < 0 ? "error node" : "feature #" + sel[2]}${sel[1] == null ? "" : " at position " + sel[1]}` : "Hover a node for its top tokens; click it to open its dashboard" + (isStatic ? "." : " and toggle it in the ablation set.");
    const a = model.get("ablation") || [];
    const r = model.get("ablation_result") || {};
    const parts = [h("span", {}, `ablation set (${a.length}): `), ...a.map(([hp, f]) => h("span", { class: "sk-chip" }, `${hp} #${f}`))];
    const current = r.metric_clean != null && JSON.stringify(r.features || []) === JSON.stringify(a);
    if (r.metric_clean != null && !current && model.get("_live") && !isStatic) {
      parts.push(h("div", { class: "sk-muted sk-pending" }, "re-evaluating the ablation in the kernel…"));
    } else if (r.metric_clean != null) {
      parts.push(h("div", { class: "sk-result" }, `metric ${fmt(r.metric_clean)} → ${fmt(r.metric_ablated)} (change ${fmt(r.change)}, sign flipped on ${(100 * r.flipped).toFixed(0)}% of prompts)`));
    } else if (!model.get("_live") && !isStatic) {
      parts.push(h("div", { class: "sk-muted" }, "pass model, saes, prompts and metric to re-evaluate ablations live"));
    }
    abl.replaceChildren(...parts);
    error.textContent = model.get("error") || "";
  }

  const handlers = [["change:_graph", draw], ["change:threshold", draw], ["change:selected", draw], ["change:ablation", draw],
    ["change:ablation_result", drawInfo], ["change:error", drawInfo]];
  for (const [ev, fn] of handlers) model.on(ev, fn);
  draw();
  return () => { for (const [ev, fn] of handlers) model.off(ev, fn); };
}

export default { render };
