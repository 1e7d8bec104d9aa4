// The salt web UI's only script (the page's Content-Security-Policy allows no inline one): makes
// its "Back" links go back, and keeps the parts of a page marked `data-live` up to date from
// the server-sent events of its URL. Each event carries {"parts": {"ID": "HTML"}}; the element
// with that id gets the HTML. An `end` event is the last. A part holding the form field being
// typed into waits until the field loses focus.
(function () {
  "use strict";
  // "Back" links: the page's policy allows no `javascript:` URL.
  document.addEventListener("click", function (event) {
    var a = event.target && event.target.closest && event.target.closest("a[data-back]");
    if (a && window.history.length > 1) {
      event.preventDefault();
      window.history.back();
    }
  });
  var live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) return;
  var source = new EventSource(live.getAttribute("data-live"));
  var pending = {};
  function put(id, html) {
    var el = document.getElementById(id);
    if (!el) return;
    var active = document.activeElement;
    if (active && active.form && el.contains(active)) {
      pending[id] = html;
      return;
    }
    delete pending[id];
    el.innerHTML = html;
    document.body.setAttribute("data-updated", String(Date.now()));
  }
  function apply(event) {
    var data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    var parts = (data && data.parts) || {};
    Object.keys(parts).forEach(function (id) { put(id, parts[id]); });
  }
  document.addEventListener("focusout", function () {
    // After focus has moved on.
    setTimeout(function () {
      Object.keys(pending).forEach(function (id) { put(id, pending[id]); });
    }, 0);
  });
  source.onmessage = apply;
  source.addEventListener("end", function (event) {
    apply(event);
    source.close();
    document.body.setAttribute("data-live-ended", "1");
  });
})();
