// FeatureTable: every feature of an SAE in one virtual-scrolling table (only visible rows exist in the DOM).
// State: _numeric (float32 bytes, rows density|mean_act|max_act|score|rank|dense, F each; rank is the
// position in FeatureStats.order(), dense is 1 for dense features), _text (top tokens per feature),
// _dense_threshold, labels ({feature: label}), selected, sort_by, descending, query, min_log_density.
// sort_by "score" is the default order computed in Python: by score, dense and never-firing features last.

const COLUMNS = [
  { key: "feature", title: "#", num: true },
  { key: "score", title: "score", num: true },
  { key: "density", title: "density", num: true },
  { key: "mean_act", title: "mean act", num: true },
  { key: "max_act", title: "max act", num: true },
  { key: "top_tokens", title: "top tokens", num: false },
  { key: "label", title: "label", num: false },
  { key: "autointerp", title: "autointerp", num: true },
];
const ROW = 24;

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

const fmt = (x) => (x === 0 ? "0" : Math.abs(x) < 1e-3 || Math.abs(x) >= 1e4 ? x.toExponential(2) : x.toPrecision(4));
const visible = (s) => s.replace(/\n/g, "↵").replace(/\t/g, "⇥");

function render({ model, el }) {
  let numeric, F, text, order = new Uint32Array(0);
  const ROWS = { density: 0, mean_act: 1, max_act: 2, score: 3, rank: 4, dense: 5 };
  const val = (name, f) => numeric[ROWS[name] * F + f];

  function load() {
    numeric = floats(model.get("_numeric"));
    text = model.get("_text") || [];
    F = text.length;
  }

  const root = h("div", { class: "saekit-table" });
  const search = h("input", { class: "sk-search", type: "search", placeholder: "search tokens, labels or #index…", "aria-label": "search features" });
  const slider = h("input", { class: "sk-density", type: "range", min: "-8", max: "0", step: "0.25", "aria-label": "minimum log10 density" });
  const sliderText = h("span", { class: "sk-density-text" });
  const count = h("span", { class: "sk-count" });
  const hint = h("span", { class: "sk-hint", title: "score = peak-token share × document share × fill of the top contexts (FeatureStats.score)" },
    "default order: score, dense and dead features last");
  const head = h("div", { class: "sk-row sk-head" });
  const spacer = h("div", { class: "sk-spacer" });
  const body = h("div", { class: "sk-body", tabindex: "0" }, spacer);
  root.append(h("div", { class: "sk-controls" }, search, h("label", {}, "min density ", slider, sliderText), count, hint), head, body);
  el.append(root);

  function scores(f) { return (model.get("eval_scores") || {})[String(f)] || null; }
  function detection(f) { const s = scores(f); return s && s.detection != null ? s.detection : -1; }
  function evalText(f) {
    const s = scores(f);
    if (!s) return "";
    return [s.detection, s.fuzzing].map((v) => (v == null ? "–" : v.toFixed(2))).join(" / ");
  }
  function label(f) { return (model.get("labels") || {})[String(f)] || ""; }

  function refilter() {
    const q = (model.get("query") || "").trim().toLowerCase();
    const minD = Math.pow(10, model.get("min_log_density"));
    const keep = [];
    const idxQuery = /^#?\d+$/.test(q) ? Number(q.replace("#", "")) : null;
    for (let f = 0; f < F; f++) {
      if (numeric[f] < minD && !(minD <= 1e-8)) continue;
      if (q) {
        if (idxQuery !== null) { if (f !== idxQuery) continue; }
        else if (!text[f].toLowerCase().includes(q) && !label(f).toLowerCase().includes(q)) continue;
      }
      keep.push(f);
    }
    const by = model.get("sort_by");
    const sign = model.get("descending") ? -1 : 1;
    let key;
    if (by === "feature") key = (f) => f;
    else if (by === "top_tokens") key = (f) => text[f];
    else if (by === "label") key = (f) => label(f);
    else if (by === "autointerp") key = (f) => detection(f);
    else if (by === "score") key = (f) => -val("rank", f); // Python's order: descending key = ascending rank
    else key = (f) => val(by, f);
    keep.sort((a, b) => { const x = key(a), y = key(b); return x < y ? -sign : x > y ? sign : a - b; });
    order = Uint32Array.from(keep);
    count.textContent = `${order.length} of ${F} features`;
    spacer.style.height = `${order.length * ROW}px`;
    drawRows(true);
  }

  function drawHead() {
    head.replaceChildren(...COLUMNS.map((c) => {
      const by = model.get("sort_by");
      const arrow = by === c.key ? (model.get("descending") ? " ▼" : " ▲") : "";
      return h("div", {
        class: `sk-cell sk-${c.key}` + (c.num ? " sk-num" : ""), role: "columnheader", "data-key": c.key,
        onclick: () => {
          if (model.get("sort_by") === c.key) model.set("descending", !model.get("descending"));
          else { model.set("sort_by", c.key); model.set("descending", c.num); }
          model.save_changes();
        },
      }, c.title + arrow);
    }));
  }

  let drawn = [-1, -1];
  function drawRows(force = false) {
    const start = Math.max(0, Math.floor(body.scrollTop / ROW) - 5);
    const end = Math.min(order.length, start + Math.ceil((body.clientHeight || 360) / ROW) + 10);
    if (!force && start === drawn[0] && end === drawn[1]) return;
    drawn = [start, end];
    const sel = model.get("selected");
    const rows = [];
    const threshold = model.get("_dense_threshold");
    for (let i = start; i < end; i++) {
      const f = order[i];
      const dense = val("dense", f) > 0;
      const dead = val("density", f) === 0;
      const cells = [String(f), fmt(val("score", f)), fmt(val("density", f)), fmt(val("mean_act", f)), fmt(val("max_act", f)),
        visible(text[f]), label(f), evalText(f)];
      const row = h("div", {
        class: "sk-row" + (f === sel ? " sk-selected" : "") + (dense ? " sk-dense-row" : "") + (dead ? " sk-dead-row" : ""),
        role: "row", "data-feature": f, "data-dense": dense ? "1" : "0",
        onclick: () => { model.set("selected", f); model.save_changes(); },
      }, cells.map((v, j) => {
        const cell = h("div", { class: `sk-cell sk-${COLUMNS[j].key}` + (COLUMNS[j].num ? " sk-num" : ""), title: v }, v);
        if (COLUMNS[j].key === "density" && (dense || dead)) {
          const why = dense ? `dense: fires on more than ${Number((100 * threshold).toPrecision(3))}% of tokens; sorted last by default`
            : "never fired in the corpus";
          cell.prepend(h("span", { class: dense ? "sk-badge sk-badge-dense" : "sk-badge sk-badge-dead", title: why },
            dense ? "dense" : "dead"));
          cell.title = `${v} (${why})`;
        }
        return cell;
      }));
      row.style.top = `${i * ROW}px`;
      rows.push(row);
    }
    spacer.replaceChildren(...rows);
  }

  const onScroll = () => drawRows();
  body.addEventListener("scroll", onScroll);
  search.addEventListener("input", () => { model.set("query", search.value); model.save_changes(); });
  slider.addEventListener("input", () => { model.set("min_log_density", Number(slider.value)); model.save_changes(); });

  function syncControls() {
    if (search.value !== model.get("query")) search.value = model.get("query");
    slider.value = String(model.get("min_log_density"));
    const d = model.get("min_log_density");
    sliderText.textContent = d <= -8 ? "any" : `≥ 1e${d}`;
  }
  const onData = () => { load(); refilter(); };
  const onFilter = () => { syncControls(); drawHead(); refilter(); };
  const onRows = () => drawRows(true);
  const handlers = [["change:_numeric", onData], ["change:_text", onData], ["change:query", onFilter],
    ["change:min_log_density", onFilter], ["change:sort_by", onFilter], ["change:descending", onFilter],
    ["change:selected", onRows], ["change:labels", onFilter], ["change:eval_scores", onFilter]];
  handlers.forEach(([e, cb]) => model.on(e, cb));
  load(); syncControls(); drawHead(); refilter();
  return () => { handlers.forEach(([e, cb]) => model.off(e, cb)); body.removeEventListener("scroll", onScroll); root.remove(); };
}

export default { render };
