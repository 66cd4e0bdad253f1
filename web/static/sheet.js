/* The sheet page's share button (the permalink field works without it). */
(function () {
  "use strict";
  var button = document.getElementById("copy-link");
  var field = document.getElementById("permalink");
  var status = document.getElementById("copy-status");
  if (!button || !field || !navigator.clipboard) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(field.value).then(function () {
      status.textContent = button.getAttribute("data-done");
    }, function () { field.select(); });
  });
})();
