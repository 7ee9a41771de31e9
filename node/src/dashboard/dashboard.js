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

// The language links come back to this page; the print button prints the certificate.
(function () {
  "use strict";
  var links = document.querySelectorAll("a.lang");
  for (var i = 0; i < links.length; i++) {
    links[i].href += "&back=" + encodeURIComponent(location.pathname + location.search);
  }
  var print = document.getElementById("print");
  if (print) { print.addEventListener("click", function () { window.print(); }); }
})();

// Bundle import: sends the chosen file as the request body and shows the node's report
// (as text, never as markup). The request carries the page's form token in a header.
(function () {
  "use strict";
  var button = document.getElementById("bundle-import");
  var input = document.getElementById("bundle-file");
  var out = document.getElementById("bundle-result");
  if (!button || !input || !out) { return; }
  button.addEventListener("click", function () {
    var file = input.files && input.files[0];
    if (!file) { out.textContent = button.getAttribute("data-choose"); return; }
    out.textContent = "…";
    fetch("/dashboard/bundle", {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: {
        "Content-Type": "application/octet-stream",
        "X-Form-Token": button.getAttribute("data-form-token")
      },
      body: file
    })
      .then(function (r) { return r.json().then(function (v) { return [r.ok, v]; }); })
      .then(function (res) {
        var v = res[1];
        out.textContent = res[0] ? v.summary : ((v.error && v.error.message) || "error");
      })
      .catch(function (e) { out.textContent = String(e); });
  });
})();
