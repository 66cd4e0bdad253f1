"""OAI-PMH sets of a sheet (spec §2.7.2) and the set catalogue served by ListSets (§4.6).

Set hierarchy is expressed with ``:`` as the spec prescribes. A sheet is a member
of every ancestor of its sets (``theme``, ``theme:SOL``, ``theme:SOL:GRA``): the
spec leaves hierarchy semantics to the repository, and harvesters selecting
``set=theme:SOL`` expect the records of its sub-themes. Listing the ancestors in
the sheet's memberships (stored in ``sheet_set``) keeps a selective harvest a
single keyset scan on one spec instead of a prefix scan that could return a
record twice.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from functools import cache
from importlib import resources

from protocol.sheet import Partner, Place, Sheet
from protocol.taxonomy import Taxonomy, default_taxonomy

# setSpec grammar of OAI-PMH.xsd (setSpecType): unreserved URI characters, ':' between levels.
SET_SPEC = re.compile(r"^[A-Za-z0-9\-_.!~*'()]+(:[A-Za-z0-9\-_.!~*'()]+)*$")

ROOTS: tuple[tuple[str, str], ...] = (
    ("theme", "Thématiques"),
    ("region", "Régions"),
    ("departement", "Départements"),
    ("stage", "Stades d'avancement"),
)
PARTNER_ROOT = ("partner", "Partenaires")
# Letters NFKD does not decompose, frequent in French names.
_LIGATURES = {"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss"}


@cache
def departements() -> dict[str, tuple[str, str]]:
    """INSEE départment code -> (name, INSEE region code)."""
    text = resources.files("protocol.oai").joinpath("data/departements.json").read_text(encoding="utf-8")
    return {d["code"]: (d["name"], d["region"]) for d in json.loads(text)["departements"]}


def slug(text: str) -> str:
    """ASCII, lower-case, hyphenated: a setSpec segment that survives every harvester."""
    for ligature, letters in _LIGATURES.items():
        text = text.replace(ligature, letters)
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")


def partner_key(partner: Partner) -> str:
    """The ``partner:`` segment: the name's slug, or the id's when the name has no usable letters."""
    return slug(partner.name) or slug(partner.id or "") or "inconnu"


def departement_of(place: Place) -> str | None:
    """The place's département code, from the explicit code or else an unambiguous postcode."""
    table = departements()
    if place.departement:
        code = place.departement.strip().upper()
        if len(code) == 1 and code.isdigit():
            code = "0" + code
        return code if code in table else None
    postcode = (place.postcode or "").strip()
    if len(postcode) == 5 and postcode.isdigit() and place.country.upper() == "FR":
        # Corsica (20xxx) is split into 2A/2B and cannot be told from the postcode alone.
        code = postcode[:3] if postcode.startswith("97") else postcode[:2]
        return code if code in table else None
    return None


def region_of(place: Place) -> str | None:
    if place.region:
        return place.region.strip()
    code = departement_of(place)
    return departements()[code][1] if code else None


def set_specs(sheet: Sheet, *, hub: bool = False, taxonomy: Taxonomy | None = None) -> tuple[str, ...]:
    """Every setSpec the sheet belongs to, ancestors included, in a stable order without duplicates."""
    tax = taxonomy or default_taxonomy()
    specs: list[str] = []

    def add(*levels: str) -> None:
        for depth in range(1, len(levels) + 1):
            spec = ":".join(levels[:depth])
            if spec not in specs and SET_SPEC.match(spec):
                specs.append(spec)

    themes, subthemes = tax.complete(sheet.themes, sheet.subthemes)
    for theme in themes:
        add("theme", theme)
    for sub in subthemes:
        parent = tax.subthemes[sub].parent
        if parent:
            add("theme", parent, sub)
    for place in sheet.places:
        region = region_of(place)
        if region and region in tax.regions:
            add("region", region)
        departement = departement_of(place)
        if departement:
            add("departement", departement)
    if sheet.stage is not None:
        add("stage", sheet.stage.value)
    if hub:
        add("partner", partner_key(sheet.partner))
    return tuple(specs)


def set_catalogue(
    taxonomy: Taxonomy | None = None, *, hub: bool = False, partners: Iterable[Partner] = ()
) -> list[tuple[str, str]]:
    """(setSpec, setName) pairs for ListSets, names in French; partners only on a hub."""
    tax = taxonomy or default_taxonomy()
    out: list[tuple[str, str]] = []
    roots = dict(ROOTS)
    out.append(("theme", roots["theme"]))
    for code, term in tax.themes.items():
        out.append((f"theme:{code}", term.fr))
        for sub in tax.subthemes_of(code):
            out.append((f"theme:{code}:{sub.code}", f"{term.fr} — {sub.fr}"))
    out.append(("region", roots["region"]))
    out.extend((f"region:{code}", term.fr) for code, term in tax.regions.items())
    out.append(("departement", roots["departement"]))
    out.extend((f"departement:{code}", f"{name} ({code})") for code, (name, _) in departements().items())
    out.append(("stage", roots["stage"]))
    out.extend((f"stage:{code}", term.fr) for code, term in tax.stages.items())
    if hub:
        out.append(PARTNER_ROOT)
        seen: set[str] = set()
        for partner in sorted(partners, key=lambda p: partner_key(p)):
            key = partner_key(partner)
            if key not in seen:
                seen.add(key)
                out.append((f"partner:{key}", partner.name or key))
    return out
