// SplitTree: how one feature of the smallest SAE splits in larger ones. State: _widths (dictionary size per
// level), _forest ({root feature: {level, feature, children: [{feature, level, cosine, coactivation,
// score, children}]}}), _roots (root features in picker order: most descendants first), _tokens
// ({"level:feature": top tokens}), root (the shown root), opened ([level, feature] of the node last
// opened: Python shows it in a FeatureDashboard).

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

const num = (x) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(2) : "—");

function count(node) {
  return (node.children || []).reduce((n, c) => n + 1 + count(c), 0);
}

function render({ model, el }) {
  const picker = h("select", { class: "sk-root-picker", "aria-label": "feature of the smallest SAE" });
  const tree = h("div", { class: "sk-tree" });
  const note = h("div", { class: "sk-note" });
  const root = h("div", { class: "saekit-splits" },
    h("div", { class: "sk-controls" }, h("label", {}, "feature of the smallest SAE ", picker), note), tree);
  el.append(root);

  const tokens = (level, f) => (model.get("_tokens") || {})[`${level}:${f}`] || "";

  function fillPicker() {
    const widths = model.get("_widths") || [];
    const forest = model.get("_forest") || {};
    picker.replaceChildren();
    for (const f of model.get("_roots") || []) {
      const n = count(forest[String(f)] || {});
      picker.append(h("option", { value: String(f) }, `#${f}  ${tokens(0, f)}  (${n} descendant${n === 1 ? "" : "s"})`));
    }
    picker.value = String(model.get("root"));
    note.textContent = `widths ${widths.join(" → ")}`;
  }

  function nodeEl(node, widths) {
    const opened = model.get("opened") || [];
    const isOpen = opened[0] === node.level && opened[1] === node.feature;
    const row = h("div", {
      class: `sk-node${isOpen ? " sk-opened" : ""}`, "data-level": String(node.level), "data-feature": String(node.feature),
      title: "open in the feature dashboard",
    },
      h("span", { class: "sk-level" }, `${widths[node.level] ?? "?"}`),
      h("span", { class: "sk-fid" }, `#${node.feature}`),
      h("span", { class: "sk-toks" }, tokens(node.level, node.feature)),
      node.level > 0 ? h("span", { class: "sk-score", title: "decoder cosine / co-activation with the parent" },
        `cos ${num(node.cosine)} · coact ${num(node.coactivation)}`) : null,
    );
    row.addEventListener("click", () => {
      model.set("opened", [node.level, node.feature]);
      model.save_changes();
    });
    const kids = (node.children || []).map((c) => nodeEl(c, widths));
    return h("div", { class: "sk-branch" }, row, kids.length ? h("div", { class: "sk-children" }, kids) : null);
  }

  function draw() {
    const forest = model.get("_forest") || {};
    const widths = model.get("_widths") || [];
    const r = model.get("root");
    const node = forest[String(r)];
    tree.replaceChildren();
    if (!node) {
      tree.append(h("div", { class: "sk-missing" }, `feature ${r} is not in this tree (or not in this export)`));
      return;
    }
    tree.append(nodeEl(node, widths));
    if (!(node.children || []).length) tree.append(h("div", { class: "sk-leaf-note" }, "no feature of the next size matched this one above the threshold"));
  }

  const onPick = () => { model.set("root", Number(picker.value)); model.save_changes(); };
  picker.addEventListener("change", onPick);
  const onRoot = () => { picker.value = String(model.get("root")); draw(); };
  const onData = () => { fillPicker(); draw(); };
  model.on("change:root", onRoot);
  model.on("change:opened", draw);
  for (const n of ["_forest", "_tokens", "_roots", "_widths"]) model.on(`change:${n}`, onData);
  fillPicker();
  draw();
  return () => {
    model.off("change:root", onRoot);
    model.off("change:opened", draw);
    for (const n of ["_forest", "_tokens", "_roots", "_widths"]) model.off(`change:${n}`, onData);
    root.remove();
  };
}

export default { render };
