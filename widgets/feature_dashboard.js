// FeatureDashboard: one SAE feature. State: feature (int), label (str), clicked_token (str),
// _views ({feature: view}, view = FeatureStats.view(f)), _static (bool).
// Data is text, never markup: every string goes through textContent / title.

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") Object.assign(el.style, v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c != null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const fmt = (x, d = 3) => (Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 0.001) ? x.toExponential(2) : x.toFixed(d));
const pct = (x) => (x === 0 ? "0" : x < 1e-4 ? `${x.toExponential(1)}` : `${(100 * x).toPrecision(3)}%`);
const visible = (s) => s.replace(/\n/g, "↵").replace(/\t/g, "⇥");

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// Activation histogram: x = activation on the shared log2 bins (ticks at whole powers of 2), y = number
// of tokens with that activation (linear, ticks at 0, half and the maximum). Axes are labelled.
function histogram(hist) {
  const counts = hist.counts || [];
  if (!counts.length) return h("div", { class: "sk-muted", text: "never fired" });
  const W = 320, H = 90, left = 40, top = 6, bottom = 30, right = 6;
  const plotW = W - left - right;
  const root = svg("svg", { width: W, height: top + H + bottom, class: "sk-hist", role: "img",
    "aria-label": "histogram of nonzero activations: activation on x, token count on y" });
  const max = Math.max(...counts);
  const bw = plotW / counts.length;
  counts.forEach((c, i) => {
    const bh = (H * c) / max;
    const r = svg("rect", { x: left + i * bw, y: top + H - bh, width: Math.max(bw - 1, 1), height: bh, class: "sk-bar" });
    const t = svg("title", {});
    t.textContent = `activation ${fmt(hist.edges[i])}–${fmt(hist.edges[i + 1])}: ${c} tokens`;
    r.append(t);
    root.append(r);
  });
  const line = (x1, y1, x2, y2) => svg("line", { x1, y1, x2, y2, class: "sk-axis-line" });
  const text = (x, y, s, attrs = {}) => { const t = svg("text", { x, y, class: "sk-axis", ...attrs }); t.textContent = s; return t; };
  root.append(line(left, top + H, left + plotW, top + H), line(left, top, left, top + H));
  // y ticks: 0, half, max (token counts)
  for (const v of [0, Math.round(max / 2), max]) {
    if (v === Math.round(max / 2) && (v === 0 || v === max)) continue;
    const y = top + H - (H * v) / max;
    root.append(line(left - 3, y, left, y), text(left - 5, y + 3, String(v), { "text-anchor": "end", class: "sk-axis sk-ytick" }));
  }
  // x ticks: bin edges that are whole powers of two, thinned to at most 5, plus both ends when none fall inside
  const edges = hist.edges;
  let ticks = [];
  edges.forEach((e, i) => { if (Number.isInteger(Math.log2(e))) ticks.push(i); });
  if (ticks.length < 2) ticks = [0, edges.length - 1];
  const step = Math.ceil(ticks.length / 5);
  ticks = ticks.filter((_, j) => j % step === 0);
  for (const i of ticks) {
    const x = left + i * bw;
    const anchor = x > W - right - 14 ? "end" : x < left + 14 ? "start" : "middle"; // keep end labels inside
    root.append(line(x, top + H, x, top + H + 3), text(x, top + H + 13, fmt(edges[i], 2), { "text-anchor": anchor, class: "sk-axis sk-xtick" }));
  }
  root.append(text(left + plotW / 2, top + H + 26, "activation (log₂ bins)", { "text-anchor": "middle", class: "sk-axis sk-axis-title" }));
  const yTitle = text(0, 0, "tokens", { "text-anchor": "middle", class: "sk-axis sk-axis-title",
    transform: `translate(10 ${top + H / 2}) rotate(-90)` });
  root.append(yTitle);
  return root;
}

function context(ex, maxAct, onToken) {
  const line = h("div", { class: "sk-context" });
  ex.tokens.forEach((tok, i) => {
    const a = ex.acts[i];
    const span = h("span", {
      class: "sk-tok" + (i === ex.peak ? " sk-peak" : ""),
      title: `${JSON.stringify(tok)}: ${fmt(a)}`,
      "data-act": a,
      onclick: () => onToken(tok, a),
    }, visible(tok));
    const alpha = maxAct > 0 ? Math.min(1, Math.max(0, a / maxAct)) : 0;
    span.style.backgroundColor = `rgba(255, 128, 0, ${alpha.toFixed(3)})`;
    line.append(span);
  });
  const source = ex.doc ? `${ex.doc[0]}: ${ex.doc[1]}` : `context ${ex.context}`;
  const meta = h("span", { class: "sk-ctx-meta", title: `max ${fmt(ex.max)} · ${ex.doc ? "document " : ""}${source}` },
    fmt(ex.max, 2), ` · ${source}`);
  return h("div", { class: "sk-ctx-row" }, meta, line);
}

function render({ model, el }) {
  const root = h("div", { class: "saekit-dashboard" });
  el.append(root);

  const navigate = (f) => { model.set("feature", f); model.save_changes(); };

  function draw() {
    root.replaceChildren();
    const f = model.get("feature");
    const view = (model.get("_views") || {})[String(f)];
    if (!view) {
      root.append(h("div", { class: "sk-muted sk-missing" },
        model.get("_static") ? `Feature ${f} is not included in this export.` : `Loading feature ${f}…`));
      return;
    }
    const label = h("input", {
      class: "sk-label", type: "text", placeholder: "label this feature…", "aria-label": "feature label",
    });
    label.value = model.get("label") || view.label || "";
    label.addEventListener("change", () => { model.set("label", label.value); model.save_changes(); });
    const terms = view.score_terms || {};
    const scoreWhy = terms.n_examples
      ? `score = peak-token share ${pct(terms.peak_share)} × document share ${pct(terms.doc_share)} × fill ${pct(terms.fill)}: `
        + `${terms.n_examples} top contexts from ${terms.n_documents} documents`
      : "score 0: the feature never fired";
    root.append(h("div", { class: "sk-header" },
      h("span", { class: "sk-title" }, `Feature ${view.feature}`),
      label,
      view.dense ? h("span", { class: "sk-badge sk-badge-dense",
        title: `fires on more than ${Number((100 * view.dense_threshold).toPrecision(3))}% of tokens: its top contexts rarely explain it; sorted last by default` }, "dense") : null,
      h("span", { class: "sk-stat" }, `density ${pct(view.density)}`),
      h("span", { class: "sk-stat" }, `max ${fmt(view.max_act, 2)}`),
      h("span", { class: "sk-stat" }, `mean ${fmt(view.mean_act, 2)}`),
      view.score === undefined ? null : h("span", { class: "sk-stat sk-score", title: scoreWhy }, `score ${fmt(view.score, 2)}`),
    ));

    const status = h("div", { class: "sk-status sk-muted" }, "Click a token or a neighbour to navigate.");
    const onToken = (tok, a) => {
      status.textContent = `token ${JSON.stringify(tok)} · activation ${fmt(a)}`;
      model.set("clicked_token", tok);
      model.save_changes();
    };

    const logitList = (items, cls) => h("div", { class: "sk-logits" },
      items.map(([tok, v]) => h("span", { class: `sk-chip ${cls}`, title: fmt(v) }, visible(tok))));
    const left = h("div", { class: "sk-col" },
      h("h4", { text: "Activation histogram (nonzero activations)" }), histogram(view.histogram),
      h("h4", { text: "Promoted tokens (direct logit effect)" }), logitList(view.logits_top, "sk-pos"),
      h("h4", { text: "Suppressed tokens (direct logit effect)" }), logitList(view.logits_bottom, "sk-neg"),
      (view.logits_top.length || view.logits_bottom.length) ? h("div", { class: "sk-caveat" },
        "Caveat: these are logit-lens direct effects (the decoder direction through the final norm and W_U), "
        + "ignoring every later layer. Away from the last layers"
        + (view.hookpoint ? ` (this SAE reads ${view.hookpoint})` : "")
        + " they are only weakly meaningful: read them as hints, not as what the feature does.") : null,
      h("h4", { text: "Nearest features (decoder cosine)" }),
      h("div", { class: "sk-links" }, view.neighbours.map(([g, c]) =>
        h("button", { class: "sk-nav", "data-feature": g, title: `cosine ${fmt(c)}`, onclick: () => navigate(g) }, `#${g}`))),
      h("h4", { text: "Co-occurring features (Jaccard)" }),
      h("div", { class: "sk-links" }, view.cooccurring.map(([g, j]) =>
        h("button", { class: "sk-nav", "data-feature": g, title: `Jaccard ${fmt(j)}`, onclick: () => navigate(g) }, `#${g}`))),
    );
    const right = h("div", { class: "sk-col sk-wide" },
      h("h4", { text: "Top-activating contexts" + (terms.n_examples ? ` (${terms.n_examples} distinct windows, ${terms.n_documents} documents)` : "") }),
      view.top_examples.length ? view.top_examples.map((ex) => context(ex, view.max_act, onToken))
        : h("div", { class: "sk-muted", text: "no contexts: the feature never fired" }),
    );
    for (const g of view.quantiles) {
      right.append(h("h4", {}, `Quantile ${Math.round(100 * g.quantile[0])}–${Math.round(100 * g.quantile[1])}% of firings (${fmt(g.range[0], 2)}–${fmt(g.range[1], 2)})`));
      right.append(...g.examples.map((ex) => context(ex, view.max_act, onToken)));
    }
    root.append(h("div", { class: "sk-body" }, left, right), status);
  }

  const events = ["change:feature", "change:_views", "change:label"];
  events.forEach((e) => model.on(e, draw));
  draw();
  return () => { events.forEach((e) => model.off(e, draw)); root.remove(); };
}

export default { render };
