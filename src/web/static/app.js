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

// Session page (web-sessions): the element with data-events listens to the session's
// server-sent events and keeps #progress, #approvals, #state and #time-left current; the
// final status reloads the page (the certificate download appears). A file picked in an
// input with data-fills="ID" is read into that textarea (the New request page).
(function () {
  function text(el, value) { if (el) { el.textContent = value; } }
  function when(unix) {
    return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }
  function left(seconds) {
    var s = Math.max(0, seconds);
    if (s < 60) { return s + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min"; }
    return Math.floor(s / 3600) + " h";
  }
  function show(status) {
    text(document.getElementById("progress"),
      status.approved.length + " of " + status.threshold + " approvals");
    var bar = document.getElementById("progress-bar");
    if (bar) { bar.value = status.approved.length; }
    var state = document.getElementById("state");
    text(state, status.state);
    var list = document.getElementById("approvals");
    if (list) {
      while (list.firstChild) { list.removeChild(list.firstChild); }
      status.answers.forEach(function (a) {
        var li = document.createElement("li");
        li.setAttribute("data-outcome", a.outcome);
        var who = document.createElement("strong");
        who.textContent = a.holder;
        li.appendChild(who);
        li.appendChild(document.createTextNode(" " + a.outcome + " at " + when(a.at) +
          (a.detail && a.outcome !== "approved" ? ": " + a.detail : "")));
        list.appendChild(li);
      });
      var none = document.getElementById("no-answers");
      if (none && status.answers.length > 0) { none.remove(); }
    }
    var clock = document.getElementById("time-left");
    if (clock) { clock.setAttribute("data-seconds", String(status.seconds_left)); }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var session = document.querySelector("[data-events]");
    if (session && window.EventSource) {
      var source = new EventSource(session.getAttribute("data-events"));
      source.addEventListener("status", function (e) {
        var status = JSON.parse(e.data);
        show(status);
        if (status.state !== "waiting") { source.close(); window.location.reload(); }
      });
      source.addEventListener("gone", function () { source.close(); });
      var clock = document.getElementById("time-left");
      if (clock) {
        setInterval(function () {
          var s = parseInt(clock.getAttribute("data-seconds"), 10) - 1;
          if (s >= 0) { clock.setAttribute("data-seconds", String(s)); text(clock, left(s)); }
        }, 1000);
      }
    }
    document.querySelectorAll("input[type=file][data-fills]").forEach(function (input) {
      input.addEventListener("change", function () {
        var target = document.getElementById(input.getAttribute("data-fills"));
        var file = input.files && input.files[0];
        if (!target || !file) { return; }
        if (file.size > 65536) { target.value = ""; return; }
        file.text().then(function (t) { target.value = t; });
      });
    });
  });
})();
