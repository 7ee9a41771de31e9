// Amphi dashboard: refreshes the sync-status section every 5 s. The page holds no token:
// the request carries the HttpOnly session cookie, and the server answers an HTML fragment
// it has already escaped. A 401 (the session ended) reloads to the sign-in form.
(function () {
  "use strict";
  var box = document.querySelector("[data-refresh]");
  if (!box) { return; }
  var url = box.getAttribute("data-refresh");
  setInterval(function () {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html) { box.innerHTML = html; } })
      .catch(function () { /* the node is restarting; try again next tick */ });
  }, 5000);
})();
