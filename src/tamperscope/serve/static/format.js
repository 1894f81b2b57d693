"use strict";
// tamperscope web UI: the text lines of a result, kept apart from the page code so that they can be tested
// without a browser (tests/test_serve.py runs them under Node when it is installed).
(function (root) {
  // One line per detector that called the photo tampered, with what it found where it says (results.json "fired",
  // "findings"; as the verdict line of the command line).
  function firedLines(result) {
    const findings = result.findings || {};
    return (result.fired || []).map((name) => `fired: ${name}` + (findings[name] ? ` — ${findings[name]}` : ""));
  }

  // The line under the score: the drawn area (none on an authentic verdict), the size, the model, the windows.
  function detailsLine(result) {
    const drawn = result.verdict === "authentic" && !result.raw_map
      ? "no region drawn (authentic)" : `${result.tampered_area_pct.toFixed(2)}% of pixels above ${result.threshold}`;
    return `${drawn}; ${result.width}×${result.height} px; model ${result.model}` +
      (result.tiles > 1 ? `; ${result.tiles} windows` : "");
  }

  const api = { firedLines, detailsLine };
  if (typeof module !== "undefined" && module.exports) { module.exports = api; } else { root.tamperscopeFormat = api; }
})(this);
