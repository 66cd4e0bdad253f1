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
from functools import cache, lru_cache
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
    # The theme part depends on the codes only: computed once per combination.
    specs = dict.fromkeys(_theme_specs(tax, sheet.themes, sheet.subthemes))

    def add(*levels: str) -> None:
        for depth in range(1, len(levels) + 1):
            spec = ":".join(levels[:depth])
            if spec not in specs and _valid_spec(spec):
                specs[spec] = None

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


@lru_cache(maxsize=4096)
def _valid_spec(spec: str) -> bool:
    return SET_SPEC.match(spec) is not None


# id(taxonomy) -> (taxonomy, {(themes, subthemes): specs}); a taxonomy holds dicts, so it is no
# hashable key itself. Kept with its taxonomy (so the id is not reused) and bounded.
_THEME_SPECS: dict[int, tuple[Taxonomy, dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, ...]]]] = {}
_THEME_SPECS_MAX = 4096


def _theme_specs(tax: Taxonomy, themes: tuple[str, ...], subthemes: tuple[str, ...]) -> tuple[str, ...]:
    entry = _THEME_SPECS.get(id(tax))
    if entry is None or entry[0] is not tax:
        if len(_THEME_SPECS) > 16:
            _THEME_SPECS.clear()
        entry = _THEME_SPECS[id(tax)] = (tax, {})
    cache = entry[1]
    key = (tuple(themes), tuple(subthemes))
    found = cache.get(key)
    if found is None:
        if len(cache) >= _THEME_SPECS_MAX:
            cache.clear()
        found = cache[key] = _compute_theme_specs(tax, *key)
    return found


def _compute_theme_specs(tax: Taxonomy, themes: tuple[str, ...], subthemes: tuple[str, ...]) -> tuple[str, ...]:
    specs: dict[str, None] = {}

    def add(*levels: str) -> None:
        for depth in range(1, len(levels) + 1):
            spec = ":".join(levels[:depth])
            if spec not in specs and _valid_spec(spec):
                specs[spec] = None

    tops, subs = tax.complete(themes, subthemes)
    for theme in tops:
        add("theme", theme)
    for sub in subs:
        parent = tax.subthemes[sub].parent
        if parent:
            add("theme", parent, sub)
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
