// The salt web UI's only script: keeps the parts of a page marked `data-live` up to date from
// the server-sent events of its URL. Each event carries {"parts": {"ID": "HTML"}}; the element
// with that id gets the HTML. An `end` event is the last.
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) return;
  var source = new EventSource(live.getAttribute("data-live"));
  function apply(event) {
    var data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    var parts = (data && data.parts) || {};
    Object.keys(parts).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el) return;
      // Keep what someone is typing into a form of this part.
      if (el.contains(document.activeElement) && document.activeElement.form) return;
      el.innerHTML = parts[id];
    });
    document.body.setAttribute("data-updated", String(Date.now()));
  }
  source.onmessage = apply;
  source.addEventListener("end", function (event) {
    apply(event);
    source.close();
    document.body.setAttribute("data-live-ended", "1");
  });
})();
