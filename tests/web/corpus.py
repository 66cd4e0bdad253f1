"""Sheets of a small hub: three partners' demo sheets, geolocated offline, plus hand-made edge cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from node.demo import generate
from node.geo.gazetteer import Gazetteer
from protocol.sheet import Holder, Match, MatchDirection, MatchKind, Partner, Place, Sheet, sheet_from_dict

PARTNERS = (
    ("bretagne", "Réseau Solidaire de Bretagne", "https://bretagne.example/oai"),
    ("territoires", "Fondation Territoires Engagés", "https://territoires.example/oai"),
    ("occitanie", "Plateforme Innovation Sociale Occitanie", "https://occitanie.example/oai"),
)
PER_PARTNER = 80
XSS_TITLE = '<script>alert("x")</script> Jardin & <b>cie</b>'
SHARED_TITLE = "Le repair café intercommunal"


def partner_sheets(key: str, name: str, count: int, seed: int) -> list[Sheet]:
    gaz = Gazetteer.default()
    out = []
    for data in generate(count, seed=seed, prefix=key):
        data = {
            **data,
            "id": f"https://{key}.example/sheets/{data['local_id']}",
            "partner": {"name": name, "id": f"https://{key}.example/actor"},
        }
        sheet = replace(sheet_from_dict(data), id="")  # the hub mints its own URI
        places = tuple(gaz.resolve_place(p) for p in sheet.places)
        out.append(replace(sheet, places=places))
    return out


def special_sheets() -> list[tuple[str, Sheet]]:
    """(source key, sheet): an escaping bait, and one project listed by two partners."""
    gaz = Gazetteer.default()
    rennes = gaz.resolve_place(Place(commune="Rennes", postcode="35000"))
    brest = gaz.resolve_place(Place(commune="Brest", postcode="29200"))
    bait = Sheet(
        id="",
        local_id="bait-1",
        title=XSS_TITLE,
        partner=Partner(name=PARTNERS[0][1], id="https://bretagne.example/actor"),
        summary='Un "jardin" <img src=x onerror=alert(1)> pour tous',
        description='<p>Texte <strong>gras</strong></p><script>alert(2)</script><p onclick="x()">clic</p>',
        url="https://bretagne.example/projets/bait-1",
        themes=("ENV",),
        subthemes=("AGR",),
        places=(rennes,),
        matches=(Match(MatchKind.BENEVOLAT, "Jardiniers bénévoles le samedi"),),
        created=datetime(2020, 5, 1, tzinfo=UTC),
    )
    shared = [
        (
            key,
            Sheet(
                id="",
                local_id=f"shared-{key}",
                title=SHARED_TITLE,
                partner=Partner(name=name, id=f"https://{key}.example/actor"),
                summary="Réparer ensemble plutôt que jeter : un atelier mensuel",
                holder=Holder(name="Association Repair café du pays de Brest", legal_form="association"),
                themes=("CON",),
                places=(brest,),
                matches=(
                    Match(MatchKind.EXPERTISE, "Un électricien bénévole", MatchDirection.NEED),
                    Match(MatchKind.LIEU, "Une salle pour d'autres ateliers", MatchDirection.OFFER),
                ),
                created=datetime(2022, 3, 1, tzinfo=UTC),
            ),
        )
        for key, name, _ in PARTNERS[:2]
    ]
    return [("bretagne", bait), *shared]
