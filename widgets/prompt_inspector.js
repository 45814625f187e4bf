// PromptInspector: a prompt's tokens coloured by one feature; a clicked token lists its top features.
// State: text, feature, selected_token (two-way), _tokens, _features, _values (per token, strongest first),
// _info ({feature: short description}), _error, _static.

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

const fmt = (x) => (x === 0 ? "0" : Math.abs(x) >= 1000 || Math.abs(x) < 0.01 ? x.toExponential(2) : x.toPrecision(3));
const visible = (s) => s.replace(/\n/g, "↵").replace(/\t/g, "⇥");

function render({ model, el }) {
  const root = h("div", { class: "saekit-prompt" });
  const input = h("textarea", { class: "sk-text", rows: "2", "aria-label": "prompt text", spellcheck: "false" });
  const run = h("button", { class: "sk-run", type: "button" }, "Run");
  const featureBox = h("input", { class: "sk-feature", type: "number", min: "0", step: "1", "aria-label": "feature to colour by" });
  const featureInfo = h("span", { class: "sk-info" });
  const tokens = h("div", { class: "sk-tokens" });
  const detail = h("div", { class: "sk-detail" });
  const error = h("div", { class: "sk-error" });
  const inputRow = h("div", { class: "sk-input" }, input, run);
  root.append(inputRow, h("div", { class: "sk-controls" }, h("label", {}, "colour by feature ", featureBox), featureInfo), tokens, detail, error);
  el.append(root);

  const setFeature = (f) => { model.set("feature", f); model.save_changes(); };

  function column(f) {
    const feats = model.get("_features") || [], vals = model.get("_values") || [];
    return feats.map((fs, t) => { const j = fs.indexOf(f); return j >= 0 ? vals[t][j] : 0; });
  }

  function drawTokens() {
    const toks = model.get("_tokens") || [];
    const f = model.get("feature");
    const col = column(f);
    const max = Math.max(1e-9, ...col);
    const sel = model.get("selected_token");
    tokens.replaceChildren(...toks.map((tok, t) => {
      const span = h("span", {
        class: "sk-tok" + (t === sel ? " sk-selected" : ""), "data-index": t,
        title: `${JSON.stringify(tok)} · feature ${f}: ${fmt(col[t])}`,
        onclick: () => { model.set("selected_token", t); model.save_changes(); },
      }, visible(tok));
      span.style.backgroundColor = `rgba(255, 128, 0, ${(col[t] / max).toFixed(3)})`;
      return span;
    }));
    featureBox.value = String(f);
    const info = (model.get("_info") || {})[String(f)];
    featureInfo.textContent = f >= 0 ? `max here ${fmt(Math.max(0, ...col))}` + (info ? ` · ${info}` : "") : "";
  }

  function drawDetail() {
    const t = model.get("selected_token");
    const toks = model.get("_tokens") || [];
    if (t < 0 || t >= toks.length) { detail.replaceChildren(h("span", { class: "sk-muted" }, "Click a token to see its features.")); return; }
    const feats = model.get("_features")[t] || [], vals = model.get("_values")[t] || [];
    const info = model.get("_info") || {};
    const max = Math.max(1e-9, ...vals);
    detail.replaceChildren(
      h("div", { class: "sk-detail-head" }, `Token ${t}: `, h("code", {}, visible(toks[t])), ` · ${feats.length} active features`),
      ...feats.slice(0, 16).map((f, j) => h("div", {
        class: "sk-feat" + (f === model.get("feature") ? " sk-current" : ""), "data-feature": f,
        onclick: () => setFeature(f),
      },
      h("span", { class: "sk-feat-id" }, `#${f}`),
      h("span", { class: "sk-bar-wrap" }, h("span", { class: "sk-bar", style: "" })),
      h("span", { class: "sk-feat-val" }, fmt(vals[j])),
      h("span", { class: "sk-feat-info" }, info[String(f)] || ""))),
    );
    detail.querySelectorAll(".sk-bar").forEach((bar, j) => { bar.style.width = `${(100 * vals[j]) / max}%`; });
  }

  function drawAll() {
    if (input.value !== model.get("text")) input.value = model.get("text");
    error.textContent = model.get("_error") || "";
    drawTokens();
    drawDetail();
  }

  run.addEventListener("click", () => { model.set("text", input.value); model.save_changes(); });
  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey || e.shiftKey)) { e.preventDefault(); run.click(); } });
  featureBox.addEventListener("change", () => setFeature(Number(featureBox.value)));
  if (model.get("_static")) { input.readOnly = true; run.disabled = true; run.title = "needs a running kernel"; }

  const handlers = [["change:_tokens", drawAll], ["change:text", drawAll], ["change:_error", drawAll],
    ["change:feature", drawAll], ["change:selected_token", drawAll], ["change:_info", drawAll]];
  handlers.forEach(([e, cb]) => model.on(e, cb));
  drawAll();
  return () => { handlers.forEach(([e, cb]) => model.off(e, cb)); root.remove(); };
}

export default { render };
