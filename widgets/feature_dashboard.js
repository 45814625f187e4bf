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

function histogram(hist) {
  const W = 320, H = 90, pad = 16;
  const root = svg("svg", { width: W, height: H + pad, class: "sk-hist", role: "img" });
  const counts = hist.counts || [];
  if (!counts.length) return h("div", { class: "sk-muted", text: "never fired" });
  const max = Math.max(...counts);
  const bw = (W - 2) / counts.length;
  counts.forEach((c, i) => {
    const bh = (H * c) / max;
    const r = svg("rect", { x: 1 + i * bw, y: H - bh, width: Math.max(bw - 1, 1), height: bh, class: "sk-bar" });
    const t = svg("title", {});
    t.textContent = `${fmt(hist.edges[i])}–${fmt(hist.edges[i + 1])}: ${c} tokens`;
    r.append(t);
    root.append(r);
  });
  const lo = svg("text", { x: 1, y: H + 12, class: "sk-axis" });
  lo.textContent = fmt(hist.edges[0], 2);
  const hi = svg("text", { x: W - 1, y: H + 12, class: "sk-axis", "text-anchor": "end" });
  hi.textContent = fmt(hist.edges[hist.edges.length - 1], 2);
  root.append(lo, hi);
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
  const meta = h("span", { class: "sk-ctx-meta" }, fmt(ex.max, 2), ex.doc ? ` · ${ex.doc[0]}: ${ex.doc[1]}` : "");
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
    root.append(h("div", { class: "sk-header" },
      h("span", { class: "sk-title" }, `Feature ${view.feature}`),
      label,
      h("span", { class: "sk-stat" }, `density ${pct(view.density)}`),
      h("span", { class: "sk-stat" }, `max ${fmt(view.max_act, 2)}`),
      h("span", { class: "sk-stat" }, `mean ${fmt(view.mean_act, 2)}`),
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
      h("h4", { text: "Activation histogram (nonzero, log₂ bins)" }), histogram(view.histogram),
      h("h4", { text: "Promoted tokens" }), logitList(view.logits_top, "sk-pos"),
      h("h4", { text: "Suppressed tokens" }), logitList(view.logits_bottom, "sk-neg"),
      h("h4", { text: "Nearest features (decoder cosine)" }),
      h("div", { class: "sk-links" }, view.neighbours.map(([g, c]) =>
        h("button", { class: "sk-nav", "data-feature": g, title: `cosine ${fmt(c)}`, onclick: () => navigate(g) }, `#${g}`))),
      h("h4", { text: "Co-occurring features (Jaccard)" }),
      h("div", { class: "sk-links" }, view.cooccurring.map(([g, j]) =>
        h("button", { class: "sk-nav", "data-feature": g, title: `Jaccard ${fmt(j)}`, onclick: () => navigate(g) }, `#${g}`))),
    );
    const right = h("div", { class: "sk-col sk-wide" },
      h("h4", { text: "Top-activating contexts" }),
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
