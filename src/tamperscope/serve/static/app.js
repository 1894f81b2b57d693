"use strict";
// tamperscope web UI: one upload path for dropped files, chosen files and the bundled sample (?sample=1).
(function () {
  const $ = (id) => document.getElementById(id);
  const format = window.tamperscopeFormat;  // static/format.js
  const MB = 1024 * 1024;
  let maxUpload = 0;
  // the session token the server wrote into this page; every POST carries it (cross-site pages cannot read it)
  const token = (document.querySelector('meta[name="tamperscope-token"]') || {}).content || "";

  function newJobId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Poll /api/progress while an analysis runs: queue position, then windows done of total.
  function watchProgress(job, name) {
    const bar = $("progress");
    let stopped = false;
    async function poll() {
      if (stopped) { return; }
      try {
        const state = await (await fetch("/api/progress?job=" + job)).json();
        if (stopped) { return; }
        if (state.state === "queued" && state.position) {
          setStatus("busy", `Analysing ${name}: waiting for ${state.position} analysis(es) before it…`);
        } else if (state.state === "running" && state.total > 1) {
          bar.hidden = false;
          bar.max = state.total;
          bar.value = state.done;
          setStatus("busy", `Analysing ${name}: ${state.done} of ${state.total} windows…`);
        }
      } catch (err) { /* the answer itself reports errors */ }
      setTimeout(poll, 700);
    }
    setTimeout(poll, 400);
    return () => { stopped = true; bar.hidden = true; };
  }

  function setStatus(state, text) {
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text;
  }

  function stemOf(name) {
    const base = (name || "image").split(/[\\/]/).pop();
    const dot = base.lastIndexOf(".");
    return (dot > 0 ? base.slice(0, dot) : base).replace(/[^A-Za-z0-9._-]+/g, "_") || "image";
  }

  function downloadLink(href, filename, label) {
    const a = document.createElement("a");
    a.href = href;
    a.download = filename;
    a.textContent = label;
    return a;
  }

  function render(result, name) {
    const stem = stemOf(name);
    for (const key of ["original", "heatmap", "overlay"]) {
      $("img-" + key).src = result.images[key];
    }
    const hasNoise = Boolean(result.images.noiseprint);
    $("fig-noiseprint").hidden = !hasNoise;
    if (hasNoise) { $("img-noiseprint").src = result.images.noiseprint; }
    const score = $("score");
    score.className = result.verdict;
    score.textContent = `${result.verdict} (score ${result.score.toFixed(3)})`;
    $("confidence").textContent = result.confidence;
    const fired = format.firedLines(result);
    $("findings").hidden = fired.length === 0;
    $("findings").replaceChildren(...fired.map((line) => {
      const item = document.createElement("li");
      item.textContent = line;
      return item;
    }));
    $("details").textContent = format.detailsLine(result);
    const downloads = $("downloads");
    downloads.replaceChildren();
    for (const key of ["heatmap", "mask", "overlay", "noiseprint"]) {
      if (result.images[key]) {
        downloads.appendChild(downloadLink(result.images[key], `${stem}.${key}.png`, `${key}.png`));
      }
    }
    const summary = Object.assign({}, result, { images: undefined, input: name });
    const blob = new Blob([JSON.stringify(summary, null, 2)], { type: "application/json" });
    downloads.appendChild(downloadLink(URL.createObjectURL(blob), `${stem}.results.json`, "results.json"));
    $("summary").hidden = false;
    $("results").hidden = false;
  }

  async function upload(blob, name) {
    if (maxUpload && blob.size > maxUpload) {
      setStatus("error", `${name}: file too large (${(blob.size / MB).toFixed(1)} MB; limit ${(maxUpload / MB).toFixed(1)} MB)`);
      return;
    }
    setStatus("busy", `Analysing ${name}…`);
    const job = newJobId();
    const params = new URLSearchParams({
      job: job,
      model: $("model").value,
      tiles: $("tiles").checked ? "1" : "0",
      noiseprint: $("noiseprint").checked ? "1" : "0",
      raw_map: $("raw-map").checked ? "1" : "0",
    });
    const stopWatching = watchProgress(job, name);
    try {
      const response = await fetch("/api/predict?" + params.toString(), {
        method: "POST", body: blob,
        headers: { "Content-Type": "application/octet-stream", "X-Tamperscope-Token": token },
      });
      const result = await response.json();
      stopWatching();
      if (!response.ok) {
        setStatus("error", result.error || `server error ${response.status}`);
        return;
      }
      render(result, name);
      setStatus("done", `Done: ${name}`);
    } catch (err) {
      stopWatching();
      setStatus("error", `request failed: ${err}`);
    }
  }

  async function loadModels() {
    const response = await fetch("/api/models");
    const info = await response.json();
    const select = $("model");
    for (const m of info.models) {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.label;
      option.selected = m.id === info.default;
      select.appendChild(option);
    }
    maxUpload = info.max_upload_bytes;
    $("limit").textContent = `Up to ${(maxUpload / MB).toFixed(0)} MB and ${(info.max_pixels / 1e6).toFixed(0)} ` +
      "megapixels; JPEG, PNG, TIFF, WebP, BMP and more.";
    $("noiseprint-option").hidden = !info.noiseprint;
  }

  async function loadSample() {
    const response = await fetch("/static/sample.jpg");
    await upload(await response.blob(), "sample.jpg");
  }

  function wireInputs() {
    $("file").addEventListener("change", (e) => {
      const f = e.target.files[0];
      if (f) { upload(f, f.name); }
    });
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const f = e.dataTransfer.files[0];
      if (f) { upload(f, f.name); }
    });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    wireInputs();
    try {
      await loadModels();
    } catch (err) {
      setStatus("error", `cannot reach the server: ${err}`);
      return;
    }
    if (new URLSearchParams(window.location.search).get("sample") === "1") {
      await loadSample();
    }
  });
})();
