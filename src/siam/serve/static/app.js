// siam explorer: upload a photo, see what the model saw, where, and how much it mattered.
// Plain browser JavaScript, no build step, no external assets. The server is the source of truth:
// edits are applied locally at once (exact, since score = bias + sum of contributions) and then
// confirmed by POST /v1/intervene.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const RAISE = [27, 120, 55];
  const LOWER = [197, 27, 125];
  const NEUTRAL = [247, 247, 247];
  const state = { model: null, file: null, expl: null, off: new Set(), scale: {}, seq: 0, timer: null, target: 0 };

  // --- messages ---------------------------------------------------------------------------------
  function showError(message) {
    const el = $("error");
    el.textContent = message;
    el.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      return typeof body.detail === "string" ? body.detail : JSON.stringify(body);
    } catch (_) {
      return resp.statusText || "no details";
    }
  }

  function fmtBytes(n) {
    if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
    if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
    return `${n} bytes`;
  }

  const fmt = (v) => (v >= 0 ? "+" : "") + v.toFixed(3);

  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    Object.assign(node, props);
    for (const child of children) node.append(child);
    return node;
  }

  // --- colours (green raises, magenta lowers) ---------------------------------------------------
  function diverging(v, vmax) {
    const t = Math.max(-1, Math.min(1, vmax > 0 ? v / vmax : 0));
    const end = t >= 0 ? RAISE : LOWER;
    const a = Math.abs(t);
    return NEUTRAL.map((n, i) => Math.round(n + (end[i] - n) * a));
  }

  // A caveat about the model (e.g. trained on synthetic scenes, not photographs): always visible.
  function showNote(note) {
    const el = $("trained-on-note");
    el.textContent = note ? `Note: ${note}` : "";
    el.hidden = !note;
  }

  // --- model and template gallery ---------------------------------------------------------------
  async function loadModel() {
    let resp;
    try {
      resp = await fetch("/v1/model");
    } catch (err) {
      showError(`Cannot reach the server: ${err}`);
      return;
    }
    if (!resp.ok) {
      showError(`Could not load the model (HTTP ${resp.status}): ${await errorText(resp)}`);
      return;
    }
    state.model = await resp.json();
    const m = state.model;
    const ckpt = m.model && m.model.checkpoint ? ` \u00b7 ${m.model.checkpoint}` : "";
    $("model-info").textContent =
      `${m.attributes.length} attributes \u00b7 ${m.grid}\u00d7${m.grid} maps \u00b7 ` +
      `input ${m.preprocessing.crop}px \u00b7 siam ${m.version}${ckpt}`;
    $("limit").textContent = m.limits.max_upload;
    showNote(m.note);
    setupTargets();
    renderGallery();
  }

  // --- several targets (e.g. beauty and safety): a selector switches what is shown ---------------
  function targetNames() {
    const m = state.model;
    return m && m.targets ? m.targets.map((t) => t.name) : [];
  }

  function setupTargets() {
    const names = targetNames();
    const select = $("target-select");
    select.replaceChildren(...names.map((n, i) => el("option", { value: String(i), textContent: n })));
    $("target-picker").hidden = names.length < 2;
    state.target = 0;
  }

  // The explanation of the selected target: the response's own fields for one target, else its entry.
  function view() {
    const e = state.expl;
    if (!e.targets) return e;
    const name = targetNames()[state.target];
    const entry = e.targets.find((t) => t.name === name) || e.targets[0];
    return Object.assign({}, e, entry, { target: entry.name });
  }

  function renderGallery() {
    const m = state.model;
    const { attributes } = m;
    const templates = m.targets && m.targets.length > 1 ? m.targets[state.target].templates : m.templates;
    const means = templates.map((t) => t.flat().reduce((a, b) => a + b, 0) / t.flat().length);
    const vmax = Math.max(1e-12, ...templates.map((t) => Math.max(...t.flat().map(Math.abs))));
    const order = attributes.map((_, i) => i).sort((a, b) => means[b] - means[a]);
    const gallery = $("gallery");
    gallery.replaceChildren();
    for (const i of order) {
      const t = templates[i];
      const size = t.length;
      const canvas = el("canvas", { width: size, height: size, title: `${attributes[i]}: mean ${fmt(means[i])}` });
      const ctx = canvas.getContext("2d");
      const img = ctx.createImageData(size, size);
      t.flat().forEach((v, p) => {
        const [r, g, b] = diverging(v, vmax);
        img.data.set([r, g, b, 255], p * 4);
      });
      ctx.putImageData(img, 0, 0);
      gallery.append(el("figure", {}, [canvas, el("figcaption", { textContent: attributes[i] })]));
    }
  }

  // --- explain ------------------------------------------------------------------------------------
  async function explainFile(file) {
    clearError();
    const limits = state.model ? state.model.limits : null;
    if (limits && file.size > limits.max_upload_bytes) {
      $("result").hidden = true;
      showError(`${file.name} is ${fmtBytes(file.size)}; the upload limit is ${limits.max_upload}.`);
      return;
    }
    const form = new FormData();
    form.append("image", file, file.name);
    $("busy").hidden = false;
    let resp;
    try {
      resp = await fetch("/v1/explain", { method: "POST", body: form });
    } catch (err) {
      showError(`Upload failed: ${err}`);
      return;
    } finally {
      $("busy").hidden = true;
    }
    if (!resp.ok) {
      $("result").hidden = true;
      showError(`Upload rejected (HTTP ${resp.status}): ${await errorText(resp)}`);
      return;
    }
    state.file = file;
    state.expl = await resp.json();
    if (state.expl.note) showNote(state.expl.note);
    state.off = new Set();
    state.scale = {};
    renderResult();
  }

  function showOverlay(name) {
    const e = view();
    $("overlay").src = e.overlays[name];
    $("overlay-caption").textContent =
      name === "total"
        ? `${e.image}: total contribution map (green raised the score, magenta lowered it)`
        : `${e.image}: where "${name}" contributed`;
    for (const card of document.querySelectorAll("#top-cards .card")) {
      card.classList.toggle("selected", card.dataset.name === name);
    }
  }

  function renderResult() {
    const e = view();
    const what = e.targets ? e.target : "score";
    $("result").hidden = false;
    $("score-label").textContent = what;
    $("score").textContent = e.score.toFixed(3);
    $("formula").textContent =
      `${what} = bias ${e.bias.toFixed(3)} + \u03a3 contributions ${fmt(e.score - e.bias)}`;
    const raise = new Set(e.top_positive.map((t) => t.name));
    const lower = new Set(e.top_negative.map((t) => t.name));
    const frame = (name) => (raise.has(name) ? "raise-frame" : lower.has(name) ? "lower-frame" : "");

    const cards = $("top-cards");
    cards.replaceChildren();
    for (const t of [...e.top_positive, ...e.top_negative]) {
      const card = el("button", { type: "button", className: `card ${frame(t.name)}` }, [
        el("img", { src: e.overlays[t.name] || "", alt: `${t.name} overlay` }),
        el("span", { className: "name", textContent: t.name }),
        el("span", { className: `value ${t.contribution >= 0 ? "up" : "down"}`, textContent: fmt(t.contribution) }),
      ]);
      card.dataset.name = t.name;
      card.addEventListener("click", () => showOverlay(t.name));
      cards.append(card);
    }
    showOverlay("total");

    const body = $("attributes").tBodies[0];
    body.replaceChildren();
    const rows = [...e.attributes].sort((a, b) => b.contribution - a.contribution);
    for (const a of rows) {
      const bar = el("span", { className: "bar" });
      bar.style.width = `${Math.round(Math.max(0, a.presence) * 80)}px`;
      const toggle = el("input", { type: "checkbox", checked: true, className: "attr-toggle" });
      toggle.setAttribute("aria-label", `${a.name} on`);
      const slider = el("input", { type: "range", min: "0", max: "2", step: "0.05", value: "1", className: "attr-scale" });
      slider.setAttribute("aria-label", `${a.name} scale`);
      const shown = el("span", { textContent: "\u00d71.00" });
      const row = el("tr", { className: frame(a.name) }, [
        el("td", { textContent: a.name }),
        el("td", { className: "num" }, [bar, a.presence.toFixed(2)]),
        el("td", { className: `num ${a.contribution >= 0 ? "up" : "down"}`, textContent: fmt(a.contribution) }),
        el("td", {}, [toggle]),
        el("td", { className: "scale-cell" }, [slider, " ", shown]),
      ]);
      row.dataset.name = a.name;
      toggle.addEventListener("change", () => {
        if (toggle.checked) state.off.delete(a.name);
        else state.off.add(a.name);
        row.classList.toggle("off", !toggle.checked);
        slider.disabled = !toggle.checked;
        edited();
      });
      slider.addEventListener("input", () => {
        const v = Number(slider.value);
        shown.textContent = `\u00d7${v.toFixed(2)}`;
        if (v === 1) delete state.scale[a.name];
        else state.scale[a.name] = v;
        edited();
      });
      body.append(row);
    }
    edited();
  }

  // --- interventions ----------------------------------------------------------------------------
  function factor(name) {
    return state.off.has(name) ? 0 : name in state.scale ? state.scale[name] : 1;
  }

  function showNewScore(score, source) {
    const e = view();
    const delta = score - e.score;
    $("new-score").textContent = score.toFixed(3);
    $("new-score").dataset.source = source;
    const d = $("delta");
    d.textContent = Math.abs(delta) < 5e-4 ? "" : `(${fmt(delta)})`;
    d.className = delta >= 0 ? "up" : "down";
  }

  function edited() {
    const e = view();
    // Exact: g is linear, so the new score is bias + sum of the edited contributions.
    const local = e.bias + e.attributes.reduce((s, a) => s + factor(a.name) * a.contribution, 0);
    showNewScore(local, "local");
    const nEdits = state.off.size + Object.keys(state.scale).length;
    if (nEdits === 0) {
      state.seq += 1; // drop answers still in flight
      showNewScore(e.score, "server");
      $("server-status").textContent = "no edits";
      return;
    }
    $("server-status").textContent = "checking with the server\u2026";
    clearTimeout(state.timer);
    state.timer = setTimeout(confirmWithServer, 150);
  }

  async function confirmWithServer() {
    const seq = ++state.seq;
    const form = new FormData();
    form.append("image", state.file, state.file.name);
    form.append("remove", JSON.stringify([...state.off]));
    form.append("scale", JSON.stringify(state.scale));
    const names = targetNames();
    if (names.length > 1) form.append("target", names[state.target]);
    let resp;
    try {
      resp = await fetch("/v1/intervene", { method: "POST", body: form });
    } catch (err) {
      if (seq === state.seq) showError(`The server did not answer: ${err}`);
      return;
    }
    if (seq !== state.seq) return; // a newer edit is on its way
    if (resp.status === 503) {
      const wait = Number(resp.headers.get("Retry-After") || "1");
      $("server-status").textContent = `server busy; retrying in ${wait} s`;
      state.timer = setTimeout(confirmWithServer, wait * 1000);
      return;
    }
    if (!resp.ok) {
      showError(`Could not apply the edits (HTTP ${resp.status}): ${await errorText(resp)}`);
      return;
    }
    const result = await resp.json();
    showNewScore(result.score, "server");
    $("server-status").textContent =
      `confirmed by the server: ${result.changes.length} attribute(s) changed, ` +
      `score ${result.original_score.toFixed(3)} \u2192 ${result.score.toFixed(3)}`;
  }

  function resetEdits() {
    if (state.expl) renderResult();
  }

  // --- wiring -----------------------------------------------------------------------------------
  function setup() {
    const input = $("file-input");
    const zone = $("drop-zone");
    input.addEventListener("change", () => {
      if (input.files.length) explainFile(input.files[0]);
      input.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (ev) => {
        ev.preventDefault();
        zone.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      const files = ev.dataTransfer ? ev.dataTransfer.files : [];
      if (files.length) explainFile(files[0]);
    });
    // A photo dropped outside the zone must not navigate away from the page.
    window.addEventListener("dragover", (ev) => ev.preventDefault());
    window.addEventListener("drop", (ev) => ev.preventDefault());
    $("reset").addEventListener("click", resetEdits);
    $("target-select").addEventListener("change", () => {
      state.target = Number($("target-select").value);
      state.seq += 1; // an answer for the previous target must not be shown for this one
      renderGallery();
      if (state.expl) renderResult();
    });
    loadModel();
  }

  setup();
})();
