/* The map page (server clusters, the list following the viewport) and the sheet page's small map.
   Leaflet and leaflet.markercluster are served by the hub from its npm packages. */
(function () {
  "use strict";
  if (!window.L) { return; }

  function base(map, el) {
    var tiles = el.getAttribute("data-tiles");
    if (tiles) {
      L.tileLayer(tiles, { attribution: el.getAttribute("data-attribution") || "", maxZoom: 18 }).addTo(map);
      return;
    }
    // No tiles configured: the départements' names and codes keep the map readable.
    var places = el.getAttribute("data-places") || "/carte/departements.json";
    var layer = L.layerGroup().addTo(map);
    fetch(places).then(function (r) { return r.json(); }).then(function (points) {
      function draw() {
        layer.clearLayers();
        var z = map.getZoom();
        points.forEach(function (p) {
          var text = z >= 7 ? p.name : p.code;
          layer.addLayer(L.marker([p.lat, p.lon], {
            icon: L.divIcon({ className: "place-label", html: "", iconSize: [110, 14] }),
            interactive: false, keyboard: false
          }).on("add", function (e) { e.target.getElement().textContent = text; }));
        });
      }
      draw(); map.on("zoomend", draw);
    });
  }

  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

  function mapPage(el) {
    var map = L.map(el, { zoomSnap: 1, minZoom: 3, maxZoom: 16 });
    var south = +el.getAttribute("data-south"), west = +el.getAttribute("data-west");
    var north = +el.getAttribute("data-north"), east = +el.getAttribute("data-east");
    var query = el.getAttribute("data-query") || "";
    map.fitBounds([[south, west], [north, east]]);
    base(map, el);
    var clusters = L.layerGroup().addTo(map);
    var pins = L.markerClusterGroup ? L.markerClusterGroup({ showCoverageOnHover: false }) : L.layerGroup();
    pins.addTo(map);
    var sheets = el.getAttribute("data-label-sheets"), zoomLabel = el.getAttribute("data-label-zoom");
    var seq = 0;

    function box() {
      var b = map.getBounds();
      return [clamp(b.getSouth(), -90, 90), clamp(b.getWest(), -180, 180), clamp(b.getNorth(), -90, 90), clamp(b.getEast(), -180, 180)]
        .map(function (v) { return v.toFixed(5); }).join(",");
    }
    function params(extra) { return [query, extra].filter(Boolean).join("&"); }

    function drawClusters(data) {
      clusters.clearLayers();
      data.clusters.forEach(function (c) {
        var label = c.count + " " + sheets;
        var marker = L.marker([c.lat, c.lon], {
          icon: L.divIcon({ className: "cluster-icon", html: "", iconSize: [c.size, c.size] }),
          title: label + " — " + zoomLabel, alt: label, keyboard: true, riseOnHover: true
        });
        marker.on("add", function (e) {
          var node = e.target.getElement(); node.textContent = String(c.count); node.setAttribute("aria-label", label + " — " + zoomLabel);
        });
        marker.on("click", function () {
          map.fitBounds([[c.bounds[0], c.bounds[1]], [c.bounds[2], c.bounds[3]]], { maxZoom: Math.min(16, map.getZoom() + 3) });
        });
        clusters.addLayer(marker);
      });
    }

    function drawPins() {
      pins.clearLayers();
      if (map.getZoom() < 11) { return; }
      Array.prototype.forEach.call(document.querySelectorAll("#results .hit[data-lat]"), function (li) {
        var m = L.marker([+li.getAttribute("data-lat"), +li.getAttribute("data-lon")], { title: li.getAttribute("data-title") });
        var link = document.createElement("a");
        link.href = li.getAttribute("data-href"); link.textContent = li.getAttribute("data-title");
        m.bindPopup(link);
        pins.addLayer(m);
      });
    }

    // The keyword form keeps the viewport too (the facet form comes from the server with it).
    function keepBox(bbox) {
      var form = document.getElementById("search-form");
      if (!form) { return; }
      var input = form.querySelector("input[name=bbox]");
      if (!input) {
        input = document.createElement("input");
        input.type = "hidden"; input.name = "bbox";
        form.appendChild(input);
      }
      input.value = bbox;
    }

    function refresh() {
      var mine = ++seq, bbox = box(), zoom = map.getZoom();
      fetch("/carte/clusters.json?" + params("bbox=" + bbox + "&zoom=" + zoom))
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data && mine === seq) { drawClusters(data); } });
      fetch(el.getAttribute("data-results") + "?" + params("view=map&bbox=" + bbox))
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null || mine !== seq) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html");
          // The list, the chips, the facet counts and the list-view link all follow the viewport.
          ["results", "map-chips", "map-facets", "list-view"].forEach(function (id) {
            var holder = document.getElementById(id), next = fresh.getElementById(id);
            if (!holder || !next) { return; }
            var box = holder.querySelector("#facets-box"), nextBox = next.querySelector("#facets-box");
            if (box && nextBox) { nextBox.open = box.open; }  // keeps the panel folded or open as the user left it
            holder.replaceWith(document.importNode(next, true));
          });
          keepBox(bbox);
          drawPins();
        });
      if (window.history && history.replaceState) {
        history.replaceState(null, "", "/carte?" + params("bbox=" + bbox + "&zoom=" + zoom));
      }
    }
    map.on("moveend", refresh);
    refresh();
  }

  function miniMap(el) {
    var point = [+el.getAttribute("data-lat"), +el.getAttribute("data-lon")];
    var map = L.map(el, { scrollWheelZoom: false }).setView(point, 9);
    base(map, el);
    L.marker(point, { keyboard: false, interactive: false }).addTo(map);
  }

  var page = document.getElementById("map");
  if (page) { mapPage(page); }
  var mini = document.getElementById("sheet-map");
  if (mini) { miniMap(mini); }
})();
