// Gatehouse's player bootstrap (not vendored): the page's Content-Security-Policy forbids inline
// scripts, so the page names the recording in data attributes and this file starts the player.
// The cast is fetched by asciinema-player itself from the same origin (connect-src 'self').
(function () {
  "use strict";
  var el = document.getElementById("gatehouse-player");
  if (!el || typeof AsciinemaPlayer === "undefined") {
    return;
  }
  var src = el.getAttribute("data-src");
  if (!src) {
    return;
  }
  AsciinemaPlayer.create({ url: src, fetchOpts: { credentials: "same-origin" } }, el, {
    autoPlay: true,
    preload: true,
    idleTimeLimit: 2,
    fit: "width",
    terminalFontFamily: "monospace",
  });
})();
