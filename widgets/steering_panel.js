// SteeringPanel: features with one strength slider each, a prompt, Generate; default and steered text side by side.
// State: prompt, mode, features, strengths (two-way; a strength may be null for NaN), unit ('raw' or 'max_act':
// multiples of each feature's max activation), where (clamp on 'all' positions or where 'active'), max_strength, default_strength,
// max_new_tokens, do_sample, seed; default_text, steered_text, last_settings, error (from the kernel);
// _generate_clicks (the button increments it), _busy, _n_latents, _static.

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


function render({ model, el }) {
  const isStatic = !!model.get("_static");
  const root = h("div", { class: "saekit-steering" + (isStatic ? " sk-static" : "") });
  const prompt = h("textarea", { class: "sk-prompt", rows: "2", "aria-label": "prompt", spellcheck: "false", placeholder: "prompt…" });
  const modeSel = h("select", { class: "sk-mode", "aria-label": "mode" },
    h("option", { value: "steer" }, "steer (add direction)"), h("option", { value: "clamp" }, "clamp (hold value)"));
  const lenBox = h("input", { class: "sk-len", type: "number", min: "1", step: "1", "aria-label": "max new tokens" });
  const addBox = h("input", { class: "sk-add", type: "number", min: "0", step: "1", placeholder: "#", "aria-label": "feature to add" });
  const addBtn = h("button", { class: "sk-add-btn", type: "button", title: "add this feature" }, "+ feature");
  const rows = h("div", { class: "sk-features" });
  const gen = h("button", { class: "sk-generate", type: "button" }, "Generate");
  const status = h("span", { class: "sk-status" });
  const error = h("div", { class: "sk-error", role: "alert" });
  const outDefault = h("div", { class: "sk-out sk-default" });
  const outSteered = h("div", { class: "sk-out sk-steered" });
  const edits = h("div", { class: "sk-edits" });
  root.append(
    prompt,
    h("div", { class: "sk-controls" },
      h("label", {}, "mode ", modeSel), h("label", {}, "new tokens ", lenBox), h("span", { class: "sk-addrow" }, addBox, addBtn)),
    rows,
    h("div", { class: "sk-actions" }, gen, status),
    error,
    h("div", { class: "sk-outputs" },
      h("div", { class: "sk-col" }, h("div", { class: "sk-col-head" }, "default"), outDefault),
      h("div", { class: "sk-col" }, h("div", { class: "sk-col-head" }, "steered"), outSteered)),
    edits,
  );
  el.append(root);

  const save = (pairs) => { for (const [k, v] of pairs) model.set(k, v); model.save_changes(); };

  function setStrength(i, value) {
    const s = (model.get("strengths") || []).slice();
    s[i] = value;
    save([["strengths", s]]);
  }

  function drawFeatures() {
    const feats = model.get("features") || [], strengths = model.get("strengths") || [];
    const clamp = model.get("mode") === "clamp";
    const max = Math.max(1e-6, Math.abs(model.get("max_strength")));
    const unit = model.get("unit") === "max_act" ? "× max act" : "raw";
    if (!feats.length) {
      rows.replaceChildren(h("div", { class: "sk-muted" }, isStatic ? "No features." : "Add a feature (or select one in a feature browser)."));
      return;
    }
    rows.replaceChildren(...feats.map((f, i) => {
      const v = strengths[i];
      const slider = h("input", {
        class: "sk-slider", type: "range", min: String(clamp ? 0 : -max), max: String(max), step: String(max / 200),
        "aria-label": `${clamp ? "value" : "strength"} of feature ${f}`, "data-feature": f,
      });
      slider.value = String(v ?? 0);
      const num = h("input", { class: "sk-value", type: "number", step: "any", "aria-label": `exact value of feature ${f}` });
      num.value = v === null || v === undefined ? "" : String(v);
      if (num.value === "") num.placeholder = "NaN";
      slider.addEventListener("input", () => { num.value = slider.value; });
      slider.addEventListener("change", () => setStrength(i, Number(slider.value)));
      num.addEventListener("change", () => { if (num.value !== "" && Number.isFinite(Number(num.value))) setStrength(i, Number(num.value)); });
      const remove = h("button", {
        class: "sk-remove", type: "button", title: `remove feature ${f}`, "aria-label": `remove feature ${f}`,
        onclick: () => {
          const fs = feats.slice(), ss = strengths.slice();
          fs.splice(i, 1); ss.splice(i, 1);
          save([["features", fs], ["strengths", ss]]);
        },
      }, "×");
      if (isStatic) { slider.disabled = true; num.readOnly = true; remove.hidden = true; }
      const bad = f < 0 || f >= model.get("_n_latents");
      return h("div", { class: "sk-feature" + (bad ? " sk-bad" : ""), "data-feature": f, title: bad ? "no such feature" : "" },
        h("span", { class: "sk-fid" }, `#${f}`), h("span", { class: "sk-kind" }, clamp ? "value" : "strength"), slider, num,
        h("span", { class: "sk-unit" }, unit), remove);
    }));
  }

  function drawOutputs() {
    const last = model.get("last_settings") || {};
    const d = model.get("default_text") || "", s = model.get("steered_text") || "";
    const has = last.prompt !== undefined;
    const fill = (box, text) => box.replaceChildren(
      h("span", { class: "sk-p" }, has ? last.prompt : ""),
      h("span", { class: "sk-c" }, text),
    );
    fill(outDefault, d);
    fill(outSteered, s);
    outSteered.classList.toggle("sk-same", has && d === s);
    if (!has) { outDefault.replaceChildren(h("span", { class: "sk-muted" }, isStatic ? "Not generated." : "Press Generate.")); outSteered.replaceChildren(); }
    edits.textContent = has
      ? `${last.mode} · ${last.max_new_tokens} tokens · ${last.do_sample ? `sampled, seed ${last.seed}` : "greedy"}` +
        (d === s ? " · same as default" : "") + ` · edits: ${last.edits}`
      : "";
  }

  function drawControls() {
    if (prompt.value !== model.get("prompt")) prompt.value = model.get("prompt");
    modeSel.value = model.get("mode");
    lenBox.value = String(model.get("max_new_tokens"));
    addBox.max = String(Math.max(0, model.get("_n_latents") - 1));
    error.textContent = model.get("error") || "";
    const busy = !!model.get("_busy");
    gen.disabled = busy || isStatic;
    status.textContent = busy ? "generating…" : "";
  }

  gen.addEventListener("click", () => {
    // send the prompt as typed together with the click, in one message
    save([["prompt", prompt.value], ["_generate_clicks", (model.get("_generate_clicks") || 0) + 1]]);
  });
  prompt.addEventListener("change", () => save([["prompt", prompt.value]]));
  prompt.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey || e.shiftKey)) { e.preventDefault(); gen.click(); } });
  modeSel.addEventListener("change", () => save([["mode", modeSel.value]]));
  lenBox.addEventListener("change", () => save([["max_new_tokens", Math.trunc(Number(lenBox.value))]]));
  const add = () => {
    const f = Number(addBox.value);
    if (addBox.value === "" || !Number.isInteger(f)) return;
    const feats = model.get("features") || [];
    if (feats.includes(f)) return;
    save([["features", [...feats, f]], ["strengths", [...(model.get("strengths") || []), model.get("default_strength")]]]);
    addBox.value = "";
  };
  addBtn.addEventListener("click", add);
  addBox.addEventListener("keydown", (e) => { if (e.key === "Enter") add(); });
  if (isStatic) {
    prompt.readOnly = true; modeSel.disabled = true; lenBox.readOnly = true; addBox.hidden = true; addBtn.hidden = true;
    gen.title = "needs a running kernel";
  }

  const handlers = [
    ["change:features", drawFeatures], ["change:strengths", drawFeatures], ["change:mode", () => { drawFeatures(); drawControls(); }],
    ["change:max_strength", drawFeatures], ["change:unit", drawFeatures], ["change:prompt", drawControls], ["change:max_new_tokens", drawControls],
    ["change:error", drawControls], ["change:_busy", drawControls], ["change:default_text", drawOutputs],
    ["change:steered_text", drawOutputs], ["change:last_settings", drawOutputs],
  ];
  handlers.forEach(([e, cb]) => model.on(e, cb));
  drawControls(); drawFeatures(); drawOutputs();
  return () => { handlers.forEach(([e, cb]) => model.off(e, cb)); root.remove(); };
}

export default { render };
