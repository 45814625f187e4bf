// saekit static runtime: runs anywidget ES modules in a standalone HTML page, no kernel, no network.
// The page carries {widgets: [{esm, state}], links: [[src, name, dst, name]]} in #saekit-state.
// Each widget gets a small model with anywidget's front-end API (get/set/on/off/save_changes/send).

function decode(value) {
  if (Array.isArray(value)) return value.map(decode);
  if (value && typeof value === "object") {
    if (typeof value.$bytes === "string") {
      const bin = atob(value.$bytes);
      const buf = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) buf[i] = bin.charCodeAt(i);
      return new DataView(buf.buffer);
    }
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = decode(v);
    return out;
  }
  return value;
}

function makeModel(state) {
  const data = decode(state);
  const handlers = new Map();
  const fire = (event, ...args) => (handlers.get(event) || []).slice().forEach((cb) => cb(...args));
  return {
    get: (name) => data[name],
    set(name, value) {
      const old = data[name];
      data[name] = value;
      if (old !== value) fire(`change:${name}`, value);
    },
    save_changes() { fire("change"); },
    on(event, cb) {
      if (!handlers.has(event)) handlers.set(event, []);
      handlers.get(event).push(cb);
    },
    off(event, cb) {
      if (!event) { handlers.clear(); return; }
      if (!cb) { handlers.delete(event); return; }
      handlers.set(event, (handlers.get(event) || []).filter((f) => f !== cb));
    },
    send() { /* no kernel in a static page */ },
  };
}

async function main() {
  const payload = JSON.parse(document.getElementById("saekit-state").textContent);
  const models = payload.widgets.map((w) => makeModel(w.state));
  for (const [src, srcName, dst, dstName] of payload.links) {
    models[src].on(`change:${srcName}`, (v) => { models[dst].set(dstName, v); models[dst].save_changes(); });
  }
  for (let i = 0; i < payload.widgets.length; i++) {
    const url = URL.createObjectURL(new Blob([payload.widgets[i].esm], { type: "text/javascript" }));
    let mod;
    try { mod = await import(url); } finally { URL.revokeObjectURL(url); }
    let widget = mod.default ?? mod;
    if (typeof widget === "function") widget = await widget();
    const el = document.getElementById(`saekit-widget-${i}`);
    if (widget.initialize) await widget.initialize({ model: models[i] });
    await widget.render({ model: models[i], el });
  }
  document.body.dataset.saekitReady = "1";
}

main().catch((err) => {
  const pre = document.createElement("pre");
  pre.className = "saekit-error";
  pre.textContent = `saekit: could not render this page: ${err}`;
  document.body.append(pre);
  throw err;
});
