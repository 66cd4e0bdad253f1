"""The XSLT a browser applies to OAI-PMH responses (``<?xml-stylesheet?>``), served next to the schema."""

from __future__ import annotations

from importlib import resources

STYLESHEET_FILE = "essaim-oai.xsl"


def stylesheet_bytes() -> bytes:
    return resources.files("protocol.oai").joinpath("schemas", STYLESHEET_FILE).read_bytes()
