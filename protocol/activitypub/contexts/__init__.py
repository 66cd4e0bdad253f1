"""Bundled JSON-LD context documents (package data; a package so wheels include the *.jsonld files)."""
