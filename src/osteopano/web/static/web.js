// osteopano upload page: drag-and-drop onto the file input's drop zone, a size check before sending,
// and a "screening..." status while the server works. The form works without JavaScript too.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var zone = document.getElementById("dropzone");
  var input = document.getElementById("file");
  var chosen = document.getElementById("file-chosen");
  var status = document.getElementById("status");
  var button = document.getElementById("submit");
  var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10);

  function describe() {
    var file = input.files && input.files[0];
    chosen.textContent = file ? "Selected: " + file.name + " (" + (file.size / 1048576).toFixed(1) + " MB)" : "";
    status.textContent = "";
  }
  input.addEventListener("change", describe);

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      describe();
      input.focus();
    }
  });

  form.addEventListener("submit", function (event) {
    var file = input.files && input.files[0];
    if (!file) { return; }
    if (maxBytes && file.size > maxBytes) {
      event.preventDefault();
      status.textContent = "This file is larger than the limit of " + (maxBytes / 1048576) + " MB.";
      return;
    }
    button.disabled = true;
    status.textContent = "Screening the radiograph\u2026 this takes a few seconds.";
  });
  // Coming back with the browser's Back button: make the form usable again.
  window.addEventListener("pageshow", function () { button.disabled = false; status.textContent = ""; });
});
