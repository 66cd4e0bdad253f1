"""XML namespace and schema constants used by every OAI-PMH module (spec §3.5, §4.2, appendices)."""

from __future__ import annotations

from typing import Final

OAI: Final = "http://www.openarchives.org/OAI/2.0/"
OAI_SCHEMA: Final = "http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd"
OAI_DC: Final = "http://www.openarchives.org/OAI/2.0/oai_dc/"
OAI_DC_SCHEMA: Final = "http://www.openarchives.org/OAI/2.0/oai_dc.xsd"
DC: Final = "http://purl.org/dc/elements/1.1/"
OAI_IDENTIFIER: Final = "http://www.openarchives.org/OAI/2.0/oai-identifier"
OAI_IDENTIFIER_SCHEMA: Final = "http://www.openarchives.org/OAI/2.0/oai-identifier.xsd"
FRIENDS: Final = "http://www.openarchives.org/OAI/2.0/friends/"
FRIENDS_SCHEMA: Final = "http://www.openarchives.org/OAI/2.0/friends.xsd"
PROVENANCE: Final = "http://www.openarchives.org/OAI/2.0/provenance"
PROVENANCE_SCHEMA: Final = "http://www.openarchives.org/OAI/2.0/provenance.xsd"
XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
XML: Final = "http://www.w3.org/XML/1998/namespace"

ESSAIM: Final = "https://essaim.org/ns/sheet/1.0"
ESSAIM_SCHEMA_FILE: Final = "essaim-sheet-1.0.xsd"


def qn(namespace: str, local: str) -> str:
    """Clark notation ``{ns}local`` as lxml expects it."""
    return f"{{{namespace}}}{local}"
