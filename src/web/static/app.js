// nkpki web UI: progressive enhancement only; every page works without this file.
// An element with data-refresh="SECONDS" is re-fetched from the page's own URL and
// replaced in place (the Overview's holders and sessions stay current).
"use strict";
(function () {
  function refresh(el, seconds) {
    setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
        .then(function (text) {
          if (text !== null) {
            var doc = new DOMParser().parseFromString(text, "text/html");
            var fresh = el.id ? doc.getElementById(el.id) : null;
            if (fresh) { el.replaceWith(fresh); el = fresh; }
          }
          refresh(el, seconds);
        })
        .catch(function () { refresh(el, seconds * 2); });
    }, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh][id]").forEach(function (el) {
      var s = parseInt(el.getAttribute("data-refresh"), 10);
      if (s > 0) { refresh(el, s); }
    });
  });
})();
