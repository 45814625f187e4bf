// AblationPanel: ablate features on a prompt; per position, the next tokens whose probability rose and fell most.
// State: prompt, features, mode, top (two-way); results ({tokens, top_up, top_down, loss_clean, loss_edited, edits,
// prompt}: per position [[token, p_clean, p_ablated], ...]), last_settings, error (from the kernel);
// _run_clicks (the Run button increments it), _busy, _n_latents, _static.

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

const fmtP = (p) => (p >= 0.01 ? p.toFixed(3) : p === 0 ? "0" : p.toExponential(1));
const fmtD = (d) => (d >= 0 ? "+" : "−") + fmtP(Math.abs(d));
// whitespace-only tokens and control characters as visible marks: ␣ ↵ ⇥, other controls as \xNN
const visible = (s) => (s.trim() ? s : s.replace(/ /g, "␣")).replace(/\n/g, "↵").replace(/\t/g, "⇥")
  .replace(/[\u0000-\u001f\u007f]/g, (c) => "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"));
const EPS = 1e-6;

function render({ model, el }) {
  const isStatic = !!model.get("_static");
  const root = h("div", { class: "saekit-ablation" + (isStatic ? " sk-static" : "") });
  const prompt = h("textarea", { class: "sk-prompt", rows: "2", "aria-label": "prompt", spellcheck: "false", placeholder: "prompt…" });
  const modeSel = h("select", { class: "sk-mode", "aria-label": "ablation mode" },
    h("option", { value: "zero" }, "zero"), h("option", { value: "mean" }, "mean"));
  const topBox = h("input", { class: "sk-top", type: "number", min: "1", max: "20", step: "1", "aria-label": "tokens per position" });
  const addBox = h("input", { class: "sk-add", type: "number", min: "0", step: "1", placeholder: "#", "aria-label": "feature to add" });
  const addBtn = h("button", { class: "sk-add-btn", type: "button", title: "add this feature" }, "+ feature");
  const chips = h("span", { class: "sk-chips" });
  const run = h("button", { class: "sk-run", type: "button" }, "Run");
  const status = h("span", { class: "sk-status" });
  const error = h("div", { class: "sk-error", role: "alert" });
  const summary = h("div", { class: "sk-summary" });
  const table = h("div", { class: "sk-results" });
  root.append(
    prompt,
    h("div", { class: "sk-controls" },
      h("label", {}, "ablate to ", modeSel), h("label", { title: "tokens shown per position" }, "top ", topBox),
      h("span", { class: "sk-addrow" }, addBox, addBtn), h("span", { class: "sk-feats-label" }, "features:"), chips),
    h("div", { class: "sk-actions" }, run, status),
    error, summary, table,
  );
  el.append(root);

  const save = (pairs) => { for (const [k, v] of pairs) model.set(k, v); model.save_changes(); };

  function drawFeatures() {
    const feats = model.get("features") || [];
    if (!feats.length) { chips.replaceChildren(h("span", { class: "sk-muted" }, "none")); return; }
    chips.replaceChildren(...feats.map((f) => {
      const x = h("button", {
        class: "sk-remove", type: "button", title: `remove feature ${f}`, "aria-label": `remove feature ${f}`,
        onclick: () => save([["features", feats.filter((g) => g !== f)]]),
      }, "×");
      if (isStatic) x.hidden = true;
      const bad = f < 0 || f >= model.get("_n_latents");
      return h("span", { class: "sk-chip" + (bad ? " sk-bad" : ""), "data-feature": f, title: bad ? "no such feature" : "" }, `#${f}`, x);
    }));
  }

  function moves(list, up) {
    const shown = (list || []).filter(([, pc, pe]) => Math.abs(pe - pc) > EPS);
    if (!shown.length) return h("span", { class: "sk-muted" }, "—");
    return shown.map(([tok, pc, pe]) => h("span", {
      class: "sk-move " + (up ? "sk-up" : "sk-down"), title: `${JSON.stringify(tok)}: ${fmtP(pc)} → ${fmtP(pe)}`,
    }, h("span", { class: "sk-tok" }, visible(tok)), h("span", { class: "sk-delta" }, fmtD(pe - pc))));
  }

  function drawResults() {
    const r = model.get("results") || {};
    const last = model.get("last_settings") || {};
    if (!r.tokens) {
      summary.textContent = "";
      table.replaceChildren(h("div", { class: "sk-muted" }, isStatic ? "Not run." : "Press Run."));
      return;
    }
    const d = r.loss_edited - r.loss_clean;
    summary.textContent = `loss ${r.loss_clean.toFixed(4)} → ${r.loss_edited.toFixed(4)} (${d >= 0 ? "+" : "−"}${Math.abs(d).toFixed(4)})` +
      ` · features ${JSON.stringify(last.features || [])} → ${last.mode || ""} · edits: ${r.edits}`;
    const head = h("div", { class: "sk-row sk-head" },
      h("span", { class: "sk-pos" }, "pos"), h("span", { class: "sk-after" }, "after token"),
      h("span", { class: "sk-col" }, "rose most"), h("span", { class: "sk-col" }, "fell most"));
    const body = r.tokens.map((tok, t) => {
      const up = (r.top_up || [])[t] || [], down = (r.top_down || [])[t] || [];
      const moved = [...up, ...down].some(([, pc, pe]) => Math.abs(pe - pc) > EPS);
      return h("div", { class: "sk-row" + (moved ? "" : " sk-unchanged"), "data-position": t },
        h("span", { class: "sk-pos" }, String(t)), h("span", { class: "sk-after" }, h("code", {}, visible(tok))),
        h("span", { class: "sk-col" }, moves(up, true)), h("span", { class: "sk-col" }, moves(down, false)));
    });
    table.replaceChildren(head, ...body);
  }

  function drawControls() {
    if (prompt.value !== model.get("prompt")) prompt.value = model.get("prompt");
    modeSel.value = model.get("mode");
    topBox.value = String(model.get("top"));
    addBox.max = String(Math.max(0, model.get("_n_latents") - 1));
    error.textContent = model.get("error") || "";
    const busy = !!model.get("_busy");
    run.disabled = busy || isStatic;
    status.textContent = busy ? "running…" : "";
  }

  run.addEventListener("click", () => save([["prompt", prompt.value], ["_run_clicks", (model.get("_run_clicks") || 0) + 1]]));
  prompt.addEventListener("change", () => save([["prompt", prompt.value]]));
  prompt.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey || e.shiftKey)) { e.preventDefault(); run.click(); } });
  modeSel.addEventListener("change", () => save([["mode", modeSel.value]]));
  topBox.addEventListener("change", () => save([["top", Math.max(0, Math.trunc(Number(topBox.value)))]]));
  const add = () => {
    const f = Number(addBox.value);
    const feats = model.get("features") || [];
    if (addBox.value === "" || !Number.isInteger(f) || feats.includes(f)) return;
    save([["features", [...feats, f]]]);
    addBox.value = "";
  };
  addBtn.addEventListener("click", add);
  addBox.addEventListener("keydown", (e) => { if (e.key === "Enter") add(); });
  if (isStatic) {
    prompt.readOnly = true; modeSel.disabled = true; topBox.readOnly = true; addBox.hidden = true; addBtn.hidden = true;
    run.title = "needs a running kernel";
  }

  const handlers = [
    ["change:features", drawFeatures], ["change:prompt", drawControls], ["change:mode", drawControls], ["change:top", drawControls],
    ["change:error", drawControls], ["change:_busy", drawControls], ["change:results", drawResults], ["change:last_settings", drawResults],
  ];
  handlers.forEach(([e, cb]) => model.on(e, cb));
  drawControls(); drawFeatures(); drawResults();
  return () => { handlers.forEach(([e, cb]) => model.off(e, cb)); root.remove(); };
}

export default { render };
