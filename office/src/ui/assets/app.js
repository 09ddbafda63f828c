// Live lookup of the caller's number on the consultation register: as the
// number (or the name) is typed, the dossiers it belongs to appear under it.
// The page works without this script; the server matches again on save.
(function () {
  var phone = document.getElementById("phone");
  var name = document.getElementById("name");
  var box = document.getElementById("lookup");
  if (!phone || !box) return;
  var timer = null;
  var last = "";
  function refresh() {
    var q = "phone=" + encodeURIComponent(phone.value) +
      "&name=" + encodeURIComponent(name ? name.value : "");
    if (q === last) return;
    last = q;
    fetch("/lookup?" + q, { headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : ""; })
      .then(function (html) {
        if (q !== last) return;
        // Keep the dossier picked so far when the list is drawn again.
        var picked = box.querySelector("input[name=patient]:checked");
        var value = picked ? picked.value : null;
        box.innerHTML = html;
        if (value === null) return;
        var radios = box.querySelectorAll("input[name=patient]");
        for (var i = 0; i < radios.length; i++) {
          if (radios[i].value === value) radios[i].checked = true;
        }
      })
      .catch(function () { /* the workstation itself is local: ignore */ });
  }
  function soon() { clearTimeout(timer); timer = setTimeout(refresh, 200); }
  phone.addEventListener("input", soon);
  if (name) name.addEventListener("input", soon);
  if (phone.value) refresh();
})();

// The register form's call kind: a non-patient call (wrong number, press,
// sales...) makes no dossier, so the patient's fields are hidden while one
// is chosen. Without this script they stay visible and are ignored.
(function () {
  var kind = document.getElementById("kind");
  var patient = document.getElementById("patient-fields");
  if (!kind || !patient) return;
  function show() { patient.hidden = kind.value !== ""; }
  kind.addEventListener("change", show);
  show();
})();
