// FeatureMap: an SAE's decoder directions as points on a canvas (16k+ points: one fillRect each, batched by
// colour, redrawn only on change). State: _xy (float32 bytes, x0 y0 x1 y1 ...), _color (float32 bytes, one
// value per feature: a number, or a category index when _categories is non-empty; NaN or -1: none),
// _categories (legend names), _tokens (top tokens per feature), color_by (legend title), selected (list of
// features), hovered. Mouse: hover shows a feature's top tokens; click selects (shift/ctrl/meta adds or
// removes); drag draws a lasso that selects what it encloses (shift adds); wheel zooms around the cursor.

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]]; // viridis stops
const BINS = 64;
const PAD = 12;

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c != null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function floats(value) {
  if (!value) return new Float32Array(0);
  if (value instanceof DataView) return new Float32Array(value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength));
  if (value instanceof ArrayBuffer) return new Float32Array(value.slice(0));
  if (ArrayBuffer.isView(value)) return new Float32Array(value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength));
  return new Float32Array(value);
}

function ramp(t) {
  const x = Math.min(Math.max(t, 0), 1) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const f = x - i;
  const c = RAMP[i].map((v, j) => Math.round(v + f * (RAMP[i + 1][j] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function inside(px, py, poly) {
  let hit = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i];
    const [xj, yj] = poly[j];
    if ((yi > py) !== (yj > py) && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) hit = !hit;
  }
  return hit;
}

const fmt = (x) => (x === 0 ? "0" : Math.abs(x) < 1e-3 || Math.abs(x) >= 1e4 ? x.toExponential(2) : x.toPrecision(3));

function render({ model, el }) {
  let xy, color, F, tokens, categories, groups, lo, hi;
  let view = { sx: 1, sy: 1, ox: 0, oy: 0 };
  let width = 640, height = 440;
  let lasso = null, down = null, frame = 0;
  let grid = new Map();
  const CELL = 8;

  const canvas = h("canvas", { class: "sk-canvas", role: "img", "aria-label": "feature map" });
  const overlay = h("canvas", { class: "sk-overlay" });
  const tip = h("div", { class: "sk-tip", hidden: "" });
  const status = h("span", { class: "sk-map-status" });
  const legend = h("div", { class: "sk-legend" });
  const reset = h("button", { class: "sk-reset", type: "button", title: "show every point" }, "reset view");
  const clear = h("button", { class: "sk-clear", type: "button" }, "clear selection");
  const stage = h("div", { class: "sk-stage" }, canvas, overlay, tip);
  const root = h("div", { class: "saekit-map" }, h("div", { class: "sk-controls" }, status, reset, clear), stage, legend,
    h("div", { class: "sk-help" }, "hover: top tokens · click: select (shift adds) · drag: lasso · wheel: zoom"));
  el.append(root);

  function load() {
    xy = floats(model.get("_xy"));
    color = floats(model.get("_color"));
    tokens = model.get("_tokens") || [];
    categories = model.get("_categories") || [];
    F = xy.length / 2;
    lo = Infinity; hi = -Infinity;
    for (let f = 0; f < F; f++) {
      const v = color[f];
      if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
    }
    // points grouped by colour, so one fillStyle per group
    groups = new Map();
    for (let f = 0; f < F; f++) {
      const v = color[f];
      let key;
      if (categories.length) key = Number.isFinite(v) && v >= 0 ? `c${v}` : "none";
      else key = Number.isFinite(v) ? `b${hi > lo ? Math.min(BINS - 1, Math.floor(((v - lo) / (hi - lo)) * BINS)) : 0}` : "none";
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(f);
    }
    fit();
    drawLegend();
  }

  function styleOf(key) {
    if (key === "none") return "rgba(150,150,150,0.45)";
    if (key[0] === "c") return PALETTE[Number(key.slice(1)) % PALETTE.length];
    return ramp((Number(key.slice(1)) + 0.5) / BINS);
  }

  function fit() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let f = 0; f < F; f++) {
      const x = xy[2 * f], y = xy[2 * f + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
    if (!(y1 > y0)) { y0 -= 1; y1 += 1; }
    const s = Math.min((width - 2 * PAD) / (x1 - x0), (height - 2 * PAD) / (y1 - y0));
    view = { sx: s, sy: -s, ox: width / 2 - (s * (x0 + x1)) / 2, oy: height / 2 + (s * (y0 + y1)) / 2 };
  }

  const px = (f) => view.ox + view.sx * xy[2 * f];
  const py = (f) => view.oy + view.sy * xy[2 * f + 1];

  function resize() {
    width = Math.max(320, Math.min(900, (root.clientWidth || 640)));
    const dpr = window.devicePixelRatio || 1;
    for (const c of [canvas, overlay]) {
      c.width = Math.round(width * dpr);
      c.height = Math.round(height * dpr);
      c.style.width = `${width}px`;
      c.style.height = `${height}px`;
      c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
    }
    stage.style.width = `${width}px`;
    stage.style.height = `${height}px`;
  }

  function draw() {
    frame = 0;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    grid = new Map();
    const r = F > 4000 ? 1.5 : F > 500 ? 2.5 : 3.5;
    for (const [key, members] of groups) {
      ctx.fillStyle = styleOf(key);
      for (const f of members) {
        const x = px(f), y = py(f);
        if (x < -r || y < -r || x > width + r || y > height + r) continue;
        ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
        const cell = `${Math.floor(x / CELL)},${Math.floor(y / CELL)}`;
        if (!grid.has(cell)) grid.set(cell, []);
        grid.get(cell).push(f);
      }
    }
    const sel = model.get("selected") || [];
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#d00";
    for (const f of sel) {
      if (f < 0 || f >= F) continue;
      ctx.beginPath();
      ctx.arc(px(f), py(f), r + 3, 0, 2 * Math.PI);
      ctx.stroke();
    }
    canvas.dataset.view = JSON.stringify([view.sx, view.sy, view.ox, view.oy]);
    canvas.dataset.n = String(F);
    updateStatus();
    drawOverlay();
  }

  function updateStatus() {
    status.textContent = `${F} features · ${(model.get("selected") || []).length} selected`;
  }

  function schedule() { if (!frame) frame = requestAnimationFrame(draw); }

  function drawOverlay() {
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const hov = model.get("hovered");
    if (hov >= 0 && hov < F) {
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(px(hov), py(hov), 6, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (lasso && lasso.length > 1) {
      ctx.strokeStyle = "#333";
      ctx.setLineDash([4, 3]);
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(lasso[0][0], lasso[0][1]);
      for (const [x, y] of lasso) ctx.lineTo(x, y);
      ctx.closePath();
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  function nearest(x, y, radius = 10) {
    let best = -1, bd = radius * radius;
    const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL), k = Math.ceil(radius / CELL);
    for (let i = cx - k; i <= cx + k; i++) {
      for (let j = cy - k; j <= cy + k; j++) {
        for (const f of grid.get(`${i},${j}`) || []) {
          const d = (px(f) - x) ** 2 + (py(f) - y) ** 2;
          if (d < bd) { bd = d; best = f; }
        }
      }
    }
    return best;
  }

  function valueText(f) {
    const v = color[f];
    if (categories.length) return Number.isFinite(v) && v >= 0 ? categories[v] ?? String(v) : "—";
    return Number.isFinite(v) ? fmt(v) : "—";
  }

  function showTip(f, x, y) {
    if (f < 0) { tip.hidden = true; return; }
    tip.hidden = false;
    tip.replaceChildren(
      h("div", { class: "sk-tip-title" }, `feature ${f}`),
      h("div", { class: "sk-tip-tokens" }, tokens[f] || ""),
      h("div", { class: "sk-tip-value" }, `${model.get("color_by") || "colour"}: ${valueText(f)}`),
    );
    tip.style.left = `${Math.min(x + 12, width - 180)}px`;
    tip.style.top = `${Math.min(y + 12, height - 60)}px`;
  }

  function setSelected(list) {
    model.set("selected", Array.from(new Set(list)).sort((a, b) => a - b));
    model.save_changes();
  }

  function pos(e) {
    const b = overlay.getBoundingClientRect();
    return [e.clientX - b.left, e.clientY - b.top];
  }

  function onDown(e) {
    if (e.button !== 0) return;
    down = pos(e);
    lasso = [down];
  }

  function onMove(e) {
    const [x, y] = pos(e);
    if (down) {
      lasso.push([x, y]);
      drawOverlay();
      return;
    }
    const f = nearest(x, y);
    if (f !== model.get("hovered")) {
      model.set("hovered", f);
      model.save_changes();
    }
    showTip(f, x, y);
  }

  function onUp(e) {
    if (!down) return;
    const [x, y] = pos(e);
    const add = e.shiftKey || e.ctrlKey || e.metaKey;
    const xs = lasso.map((p) => p[0]), ys = lasso.map((p) => p[1]);
    const moved = lasso.length > 2 && Math.max(...xs) - Math.min(...xs) + Math.max(...ys) - Math.min(...ys) > 6;
    const current = model.get("selected") || [];
    if (moved) {
      const hits = [];
      for (let f = 0; f < F; f++) if (inside(px(f), py(f), lasso)) hits.push(f);
      setSelected(add ? current.concat(hits) : hits);
    } else {
      const f = nearest(x, y);
      if (f >= 0) {
        if (add) setSelected(current.includes(f) ? current.filter((g) => g !== f) : current.concat([f]));
        else setSelected([f]);
      }
    }
    down = null;
    lasso = null;
    drawOverlay();
  }

  function onLeave() {
    tip.hidden = true;
    if (down) { down = null; lasso = null; drawOverlay(); }
  }

  function onWheel(e) {
    e.preventDefault();
    const [x, y] = pos(e);
    const k = Math.exp(-e.deltaY * 0.0015);
    view = { sx: view.sx * k, sy: view.sy * k, ox: x - k * (x - view.ox), oy: y - k * (y - view.oy) };
    schedule();
  }

  function drawLegend() {
    legend.replaceChildren(h("span", { class: "sk-legend-title" }, `${model.get("color_by") || "colour"}: `));
    if (categories.length) {
      categories.forEach((name, i) => {
        const n = (groups.get(`c${i}`) || []).length;
        legend.append(h("span", { class: "sk-legend-item", "data-category": String(i) },
          h("span", { class: "sk-swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), `${name} (${n})`));
      });
      const none = (groups.get("none") || []).length;
      if (none) legend.append(h("span", { class: "sk-legend-item" }, h("span", { class: "sk-swatch sk-swatch-none" }), `none (${none})`));
    } else if (Number.isFinite(lo)) {
      const bar = h("span", { class: "sk-ramp" });
      bar.style.background = `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map(ramp).join(", ")})`;
      legend.append(h("span", { class: "sk-legend-lo" }, fmt(lo)), bar, h("span", { class: "sk-legend-hi" }, fmt(hi)));
    }
  }

  const onData = () => { load(); schedule(); };
  const onSel = () => { updateStatus(); schedule(); };
  const onHover = () => drawOverlay();
  overlay.addEventListener("mousedown", onDown);
  overlay.addEventListener("mousemove", onMove);
  overlay.addEventListener("mouseup", onUp);
  overlay.addEventListener("mouseleave", onLeave);
  overlay.addEventListener("wheel", onWheel, { passive: false });
  reset.addEventListener("click", () => { fit(); schedule(); });
  clear.addEventListener("click", () => setSelected([]));
  for (const name of ["_xy", "_color", "_tokens", "_categories", "color_by"]) model.on(`change:${name}`, onData);
  model.on("change:selected", onSel);
  model.on("change:hovered", onHover);

  resize();
  load();
  draw();
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => { const w = width; resize(); if (w !== width) { fit(); schedule(); } }) : null;
  if (ro) ro.observe(root);

  return () => {
    if (ro) ro.disconnect();
    if (frame) cancelAnimationFrame(frame);
    for (const name of ["_xy", "_color", "_tokens", "_categories", "color_by"]) model.off(`change:${name}`, onData);
    model.off("change:selected", onSel);
    model.off("change:hovered", onHover);
    root.remove();
  };
}

export default { render };
