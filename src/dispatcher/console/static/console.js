// The console's only script (no inline scripts: the CSP forbids them).
// 1. Forms with data-confirm ask before they are sent.
// 2. An element with data-refresh reloads its content from that URL every 3 s;
//    the server renders (and escapes) the HTML.
// 3. The portal page (a form with data-portal) signs in with the token in the
//    link's fragment (#token=...), after removing it from the address bar.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.querySelector("form[data-portal]");
  var match = /[#&]token=([^&]+)/.exec(window.location.hash);
  if (!form || !match) { return; }
  history.replaceState(null, "", window.location.pathname);
  form.querySelector("[name=key]").value = decodeURIComponent(match[1]);
  form.submit();
});
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    ev.preventDefault();
  }
});
document.addEventListener("DOMContentLoaded", function () {
  var box = document.querySelector("[data-refresh]");
  if (!box) { return; }
  var url = box.getAttribute("data-refresh");
  setInterval(function () {
    fetch(url, {credentials: "same-origin"}).then(function (r) {
      if (r.redirected) { window.location.reload(); throw new Error("signed out"); }
      if (r.ok) { return r.text(); }
      throw new Error(r.status);
    }).then(function (html) {
      box.innerHTML = html;
    }).catch(function () {});
  }, 3000);
});
