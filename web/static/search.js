/* Enhancements of the search forms; every page works without this file. */
(function () {
  "use strict";

  function autoSubmit() {
    // Delegated: the map page replaces its facet form as the map moves.
    document.addEventListener("change", function (event) {
      var target = event.target;
      if (target && target.type === "checkbox" && target.form && target.form.id === "facet-form") { target.form.submit(); }
    });
    var sort = document.getElementById("sort");
    if (sort && sort.form) {
      sort.addEventListener("change", function () { sort.form.submit(); });
    }
  }

  function suggestions(input) {
    var list = document.getElementById(input.getAttribute("aria-controls"));
    if (!list) { return; }
    var timer = null, items = [], active = -1, last = "";

    function close() {
      list.hidden = true; list.textContent = ""; items = []; active = -1;
      input.setAttribute("aria-expanded", "false"); input.removeAttribute("aria-activedescendant");
    }
    function choose(item) {
      if (item.href) { window.location.assign(item.href); return; }
      input.value = item.text; close(); input.form.submit();
    }
    function highlight(index) {
      items.forEach(function (it, i) { it.el.setAttribute("aria-selected", i === index ? "true" : "false"); });
      active = index;
      if (index >= 0) { input.setAttribute("aria-activedescendant", items[index].el.id); }
    }
    function render(data) {
      list.textContent = ""; items = [];
      var add = function (text, kind, href) {
        var li = document.createElement("li");
        li.id = "sugg-" + items.length; li.setAttribute("role", "option"); li.setAttribute("aria-selected", "false");
        li.appendChild(document.createTextNode(text + " "));
        var k = document.createElement("span"); k.className = "kind"; k.textContent = kind; li.appendChild(k);
        var item = { el: li, text: text, href: href };
        li.addEventListener("mousedown", function (e) { e.preventDefault(); choose(item); });
        list.appendChild(li); items.push(item);
      };
      (data.titles || []).forEach(function (t) { add(t.title, "", t.uri ? new URL(t.uri).pathname : null); });
      (data.communes || []).forEach(function (c) { add(c.value, "(" + c.count + ")", null); });
      (data.partners || []).forEach(function (p) { add(p.value, "(" + p.count + ")", "/recherche?partner=" + encodeURIComponent(p.value)); });
      if (items.length) { list.hidden = false; input.setAttribute("aria-expanded", "true"); } else { close(); }
    }
    input.addEventListener("input", function () {
      var value = input.value.trim();
      clearTimeout(timer);
      if (value.length < 2) { close(); return; }
      timer = setTimeout(function () {
        if (value === last) { return; }
        last = value;
        fetch(input.getAttribute("data-suggest") + "?q=" + encodeURIComponent(value), { headers: { Accept: "application/json" } })
          .then(function (r) { return r.ok ? r.json() : { titles: [] }; })
          .then(function (data) { if (input.value.trim() === value) { render(data); } })
          .catch(function () { close(); });
      }, 150);
    });
    input.addEventListener("keydown", function (e) {
      if (list.hidden) { return; }
      if (e.key === "ArrowDown") { e.preventDefault(); highlight((active + 1) % items.length); }
      else if (e.key === "ArrowUp") { e.preventDefault(); highlight((active - 1 + items.length) % items.length); }
      else if (e.key === "Escape") { close(); }
      else if (e.key === "Enter" && active >= 0) { e.preventDefault(); choose(items[active]); }
    });
    input.addEventListener("blur", function () { setTimeout(close, 100); });
  }

  // On a phone the results come first: the filters fold away (they stay open without JavaScript).
  var box = document.getElementById("facets-box");
  if (box && window.matchMedia && window.matchMedia("(max-width: 56rem)").matches) { box.open = false; }

  autoSubmit();
  Array.prototype.forEach.call(document.querySelectorAll("input[data-suggest]"), suggestions);
})();
