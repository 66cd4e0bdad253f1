"""Human labels of facet values (taxonomy codes, région and département codes) in the page's language."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from node.geo.gazetteer import Gazetteer
from protocol.taxonomy import Taxonomy, default_taxonomy
from web.i18n import translations


def N_(message: str) -> str:
    """Marks a message for extraction; it is translated where it is shown."""
    return message


# Facets of the search page, in display order, with their French title (the gettext id).
FACETS: tuple[tuple[str, str], ...] = (
    ("themes", N_("Thématique")),
    ("subthemes", N_("Sous-thématique")),
    ("region", N_("Région")),
    ("departement", N_("Département")),
    ("partner", N_("Partenaire")),
    ("audiences", N_("Public")),
    ("stage", N_("Stade")),
    ("engineering", N_("Ingénierie")),
    ("match_directions", N_("Besoin ou offre")),
    ("match_kinds", N_("Type de besoin ou d'offre")),
)
# Values of ``match_directions`` (protocol.sheet.MatchDirection), translated where shown.
DIRECTIONS = {"need": N_("Besoin"), "offer": N_("Offre")}
FACET_NAMES = tuple(name for name, _ in FACETS)


@cache
def gazetteer() -> Gazetteer:
    return Gazetteer.default()


@dataclass(frozen=True)
class Labeller:
    """``label(facet, value)`` in one language; unknown codes fall back to the code itself."""

    lang: str
    taxonomy: Taxonomy

    def tables(self) -> dict[str, Callable[[str], str | None]]:
        tax = self.taxonomy

        def term(table: dict) -> Callable[[str], str | None]:  # type: ignore[type-arg]
            return lambda code: table[code].label(self.lang) if code in table else None

        return {
            "themes": term(tax.themes),  # type: ignore[arg-type]
            "subthemes": term(tax.subthemes),  # type: ignore[arg-type]
            "audiences": term(tax.audiences),  # type: ignore[arg-type]
            "stage": term(tax.stages),  # type: ignore[arg-type]
            "engineering": term(tax.engineering),  # type: ignore[arg-type]
            "match_kinds": term(tax.match_kinds),  # type: ignore[arg-type]
            "match_directions": self.direction,
            "region": self.region,
            "departement": self.departement,
        }

    def label(self, facet: str, value: str) -> str:
        lookup = _tables(self.lang).get(facet)
        found = lookup(value) if lookup else None
        return found or value

    def region(self, code: str) -> str | None:
        term = self.taxonomy.regions.get(code)
        if term is not None:
            return term.label(self.lang)
        return gazetteer().region_name(code)

    def direction(self, code: str) -> str | None:
        message = DIRECTIONS.get(code)
        return translations(self.lang).gettext(message) if message else None

    def departement(self, code: str) -> str | None:
        name = gazetteer().departement_name(code)
        return f"{name} ({code})" if name else None


@cache
def _tables(lang: str) -> dict[str, Callable[[str], str | None]]:
    return Labeller(lang, default_taxonomy()).tables()


@cache
def labeller(lang: str) -> Labeller:
    return Labeller(lang, default_taxonomy())
