"""The hub's web front: server-rendered pages (search, map, sheets, dashboards, board), feeds and exports."""
