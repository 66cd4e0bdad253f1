"""The test corpus: eleven sheets chosen to exercise French text, every facet and the map."""

from __future__ import annotations

from datetime import UTC, datetime

from protocol.sheet import (
    Holder,
    Match,
    MatchDirection,
    MatchKind,
    MatchStatus,
    Partner,
    Place,
    Sheet,
    Stage,
)

RENNES = (48.1173, -1.6778)
RENNES_2 = (48.1100, -1.6700)
NANTES = (47.2184, -1.5536)
MARSEILLE = (43.2965, 5.3698)
LYON = (45.7640, 4.8357)
PARIS = (48.8566, 2.3522)
BREST = (48.3904, -4.4861)
BAIT_PARTNER = "Réseau `D` && (x) || [y], z:1"


def _place(commune: str, insee: str, dep: str, region: str, point: tuple[float, float] | None) -> Place:
    lat, lon = point if point else (None, None)
    return Place(commune=commune, insee=insee, departement=dep, region=region, lat=lat, lon=lon)


def _t(year: int, month: int = 1) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def make_sheet(n: int, title: str, **kw: object) -> Sheet:
    kw.setdefault("partner", Partner(name="Réseau A", id="https://a.example/actor"))
    kw.setdefault("datestamp", _t(2024, n % 12 + 1))
    return Sheet(id=f"https://node.example/sheets/{n}", local_id=str(n), title=title, **kw)  # type: ignore[arg-type]


def corpus_sheets() -> list[tuple[Sheet, str | None]]:
    rennes = _place("Rennes", "35238", "35", "53", RENNES)
    return [
        (
            make_sheet(
                1,
                "École des jardins partagés",
                summary="Un jardin potager à l’école pour les enfants du quartier",
                themes=("EDU", "ENV"),
                subthemes=("ENF", "AGR"),
                audiences=("enfants",),
                stage=Stage.EXPERIMENTATION,
                engineering=("projet",),
                places=(rennes,),
                matches=(Match(MatchKind.BENEVOLAT, "Jardiniers bénévoles"),),
                created=_t(2019),
            ),
            None,
        ),
        (
            make_sheet(
                2,
                "L’atelier vélo solidaire",
                summary="Réparation et réemploi pour tous",
                themes=("CON", "ENV"),
                subthemes=("GES",),
                audiences=("habitants",),
                stage=Stage.DEVELOPPEMENT,
                partner=Partner(name="Réseau B"),
                places=(_place("Nantes", "44109", "44", "52", NANTES),),
                matches=(
                    Match(MatchKind.FINANCEMENT, "Prêt d'honneur"),
                    Match(MatchKind.EMPLOI, "Mécanicien", status=MatchStatus.FULFILLED),
                ),
                created=_t(2021),
            ),
            None,
        ),
        (
            make_sheet(
                3,
                "Épicerie du quartier",
                description="<p>Aide <b>alimentaire</b> et lien social</p><script>alert('x')</script>",
                themes=("SOL",),
                subthemes=("LUT",),
                audiences=("precarite",),
                stage=Stage.ESSAIMAGE,
                places=(_place("Marseille", "13055", "13", "93", MARSEILLE),),
                created=_t(2018),
            ),
            None,
        ),
        (
            make_sheet(
                4,
                "Chevaux de trait en maraîchage",
                summary="Traction animale pour les fermes",
                themes=("ENV",),
                subthemes=("AGR",),
                audiences=("agriculteurs",),
                stage=Stage.IDEE,
                partner=Partner(name="Réseau B"),
                places=(_place("Lyon", "69123", "69", "84", LYON),),
                created=_t(2022),
            ),
            None,
        ),
        (
            make_sheet(
                5,
                "Chantier d’insertion par l’activité économique",
                themes=("EMP",),
                subthemes=("ACE",),
                audiences=("demandeurs-emploi",),
                stage=Stage.TERMINE,
                partner=Partner(name="Réseau C"),
                matches=(Match(MatchKind.EXPERTISE, "Juriste", direction=MatchDirection.OFFER),),
                created=_t(2015),
            ),
            None,
        ),
        (
            make_sheet(
                6,
                "Tiers-lieu numérique",
                summary="Médiation et fabrication numérique",
                themes=("NUM", "TER"),
                subthemes=("NUM", "INI"),
                audiences=("jeunes", "habitants"),
                stage=Stage.DEVELOPPEMENT,
                engineering=("numerique", "territoriale"),
                places=(_place("Paris", "75056", "75", "11", PARIS), _place("Brest", "29019", "29", "53", BREST)),
                created=_t(2023),
            ),
            None,
        ),
        (
            make_sheet(
                7,
                "Accompagner les personnes en situation de handicap",
                themes=("SOL",),
                subthemes=("HAN",),
                audiences=("handicap",),
                stage=Stage.DEVELOPPEMENT,
                partner=Partner(name="Réseau C"),
                places=(_place("Rennes", "35238", "35", "53", RENNES_2),),
                created=_t(2020),
            ),
            None,
        ),
        (
            make_sheet(
                8,
                "Le guide de l'économie sociale et solidaire",
                themes=("FIN",),
                subthemes=("FIN",),
                holder=Holder(name="Chambre régionale"),
                created=_t(2017),
            ),
            None,
        ),
        (
            make_sheet(
                9,
                "Ferme pédagogique",
                summary="Des animaux pour apprendre",
                themes=("EDU",),
                subthemes=("INN",),
                audiences=("enfants",),
                stage=Stage.IDEE,
                partner=Partner(name=BAIT_PARTNER),
                places=(_place("Rennes", "35238", "35", "53", RENNES),),
                created=_t(2016),
            ),
            None,
        ),
        (
            make_sheet(
                10,
                "Repair café",
                summary="Réparer ensemble",
                themes=("CON",),
                subthemes=("CON",),
                stage=Stage.EXPERIMENTATION,
                places=(_place("Nantes", "44109", "44", "52", NANTES),),
                created=_t(2024),
            ),
            "cluster-repair",
        ),
        (
            make_sheet(
                11,
                "Repair café de Nantes",
                summary="Réparer ensemble à Nantes",
                themes=("CON",),
                subthemes=("CON",),
                stage=Stage.EXPERIMENTATION,
                partner=Partner(name="Réseau B"),
                places=(_place("Nantes", "44109", "44", "52", NANTES),),
                created=_t(2024, 6),
            ),
            "cluster-repair",
        ),
    ]


def ids(result: dict) -> set[str]:
    """Local ids of a plain search result's hits."""
    return {h["document"]["local_id"] for h in result["hits"]}
