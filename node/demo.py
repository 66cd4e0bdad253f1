"""Demo data: plausible French project sheets over the taxonomy and real communes.

Deterministic for a given seed, so demos, tests and benchmarks are repeatable.
The output is Essaim's native JSON-lines format (``--mapping native``). A few
hand-written sheets (``node/demo_data/handwritten.json``) come first.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from protocol.taxonomy import default_taxonomy

# Real communes (name, postcode) spread over every région, mainland and overseas.
COMMUNES = [
    ("Rennes", "35000"),
    ("Brest", "29200"),
    ("Lorient", "56100"),
    ("Saint-Brieuc", "22000"),
    ("Nantes", "44000"),
    ("Angers", "49000"),
    ("Le Mans", "72000"),
    ("Lille", "59000"),
    ("Roubaix", "59100"),
    ("Amiens", "80000"),
    ("Arras", "62000"),
    ("Rouen", "76000"),
    ("Caen", "14000"),
    ("Cherbourg-en-Cotentin", "50100"),
    ("Strasbourg", "67000"),
    ("Metz", "57000"),
    ("Nancy", "54000"),
    ("Reims", "51100"),
    ("Mulhouse", "68100"),
    ("Dijon", "21000"),
    ("Besançon", "25000"),
    ("Auxerre", "89000"),
    ("Orléans", "45000"),
    ("Tours", "37000"),
    ("Bourges", "18000"),
    ("Chartres", "28000"),
    ("Paris", "75011"),
    ("Paris", "75019"),
    ("Montreuil", "93100"),
    ("Saint-Denis", "93200"),
    ("Nanterre", "92000"),
    ("Créteil", "94000"),
    ("Versailles", "78000"),
    ("Lyon", "69003"),
    ("Villeurbanne", "69100"),
    ("Grenoble", "38000"),
    ("Saint-Étienne", "42000"),
    ("Clermont-Ferrand", "63000"),
    ("Annecy", "74000"),
    ("Valence", "26000"),
    ("Bordeaux", "33000"),
    ("Limoges", "87000"),
    ("Poitiers", "86000"),
    ("La Rochelle", "17000"),
    ("Pau", "64000"),
    ("Bayonne", "64100"),
    ("Toulouse", "31000"),
    ("Montpellier", "34000"),
    ("Nîmes", "30000"),
    ("Perpignan", "66000"),
    ("Albi", "81000"),
    ("Rodez", "12000"),
    ("Marseille", "13001"),
    ("Nice", "06000"),
    ("Toulon", "83000"),
    ("Avignon", "84000"),
    ("Gap", "05000"),
    ("Ajaccio", "20000"),
    ("Bastia", "20200"),
    ("Pointe-à-Pitre", "97110"),
    ("Fort-de-France", "97200"),
    ("Cayenne", "97300"),
    ("Saint-Denis", "97400"),
    ("Mamoudzou", "97600"),
    ("Guingamp", "22200"),
    ("Figeac", "46100"),
    ("Die", "26150"),
    ("Aurillac", "15000"),
    ("Mende", "48000"),
]

PROJECTS: dict[str, list[str]] = {
    "EDU": [
        "Cours de soutien solidaire",
        "École des parents",
        "Ateliers philo pour enfants",
        "Bibliobus des quartiers",
    ],
    "EMP": ["Chantier d'insertion", "Garage solidaire", "Couveuse d'activités", "Territoire zéro chômeur"],
    "ENV": [
        "Jardin partagé",
        "Ressourcerie",
        "Composteur collectif",
        "Épicerie vrac",
        "Coopérative d'énergie citoyenne",
    ],
    "SAN": ["Maison de santé participative", "Médiation en santé", "Sport sur ordonnance", "Pair-aidance"],
    "SOL": ["Épicerie solidaire", "Colocation intergénérationnelle", "Bagagerie solidaire", "Café des aidants"],
    "TER": ["Tiers-lieu rural", "Transport solidaire", "Conciergerie de quartier", "Habitat participatif"],
    "ART": ["Fabrique culturelle", "Chorale des quartiers", "Résidence d'artistes"],
    "COM": ["Radio associative", "Journal de quartier"],
    "CON": ["Repair café", "Monnaie locale", "Supermarché coopératif"],
    "DEM": ["Budget participatif", "Assemblée citoyenne"],
    "GOU": ["Pôle territorial de coopération économique", "SCIC de services"],
    "NUM": ["Médiation numérique", "Recyclerie informatique"],
    "SPO": ["Club de sport inclusif", "Vélo-école"],
    "TOU": ["Tourisme solidaire", "Gîte d'insertion"],
    "FIN": ["Club d'investisseurs solidaires", "Fonds de dotation local"],
    "PAT": ["Chantier de restauration du patrimoine", "Moulin associatif"],
}
HOLDER_FORMS = ["Association loi 1901", "SCIC", "SCOP", "Fondation", "Entreprise solidaire d'utilité sociale"]
HOLDER_WORDS = ["Les Amis de", "Collectif", "Association", "Réseau", "Coopérative", "Compagnons de"]
VERBS = [
    "accompagne les habitants de {commune} pour",
    "propose aux publics éloignés de l'emploi de",
    "réunit bénévoles et salariés afin de",
    "expérimente depuis {year} une façon nouvelle de",
]
AIMS = [
    "recréer du lien social entre générations",
    "lutter contre le gaspillage alimentaire",
    "faciliter l'accès aux droits",
    "développer une alimentation durable et locale",
    "réparer plutôt que jeter",
    "accompagner le retour à l'emploi",
    "rendre le numérique accessible à tous",
    "favoriser la mobilité en milieu rural",
    "améliorer l'accès aux soins",
]
NEEDS = [
    ("benevolat", "Recherche des bénévoles pour l'accueil du samedi"),
    ("financement", "Cherche un cofinancement pour essaimer dans deux nouveaux quartiers"),
    ("expertise", "Besoin d'un appui juridique pour passer en SCIC"),
    ("lieu", "Recherche un local de 100 m² en rez-de-chaussée"),
    ("emploi", "Recrute un ou une coordinatrice en CDI"),
    ("partenariat", "Ouvert aux partenariats avec les bailleurs sociaux"),
]
OFFERS = [
    ("expertise", "Partage sa méthode d'évaluation d'impact"),
    ("lieu", "Met sa salle à disposition des associations du quartier"),
    ("partenariat", "Accompagne les porteurs qui veulent répliquer le projet"),
]


def handwritten() -> list[dict[str, Any]]:
    text = resources.files("node").joinpath("demo_data/handwritten.json").read_text(encoding="utf-8")
    return list(json.loads(text))


def generate(count: int, *, seed: int = 1, prefix: str = "demo") -> Iterator[dict[str, Any]]:
    """``count`` sheets in the native JSON shape; the same seed gives the same sheets."""
    rng = random.Random(seed)
    taxonomy = default_taxonomy()
    audiences = list(taxonomy.audiences)
    engineering = list(taxonomy.engineering)
    stages = list(taxonomy.stages)
    for n in range(count):
        theme = rng.choice(list(PROJECTS))
        subs = [t.code for t in taxonomy.subthemes_of(theme)]
        chosen = rng.sample(subs, k=min(len(subs), rng.randint(1, 2)))
        commune, postcode = rng.choice(COMMUNES)
        kind = rng.choice(PROJECTS[theme])
        year = rng.randint(2012, 2025)
        holder = f"{rng.choice(HOLDER_WORDS)} {kind.split()[0].lower()} de {commune}"
        verb = rng.choice(VERBS).format(commune=commune, year=year)
        aim = rng.choice(AIMS)
        sheet: dict[str, Any] = {
            "local_id": f"{prefix}-{n:07d}",
            "title": f"{kind} — {commune}",
            "summary": f"{holder} {verb} {aim}.",
            "description": (
                f"<p>Né en {year}, ce projet {verb} {aim}.</p>"
                f"<p>Il s'appuie sur un collectif d'habitants, des partenaires publics et privés, et une équipe de "
                f"{rng.randint(1, 25)} personnes. <strong>{rng.randint(20, 2000)} personnes</strong> en ont "
                f"bénéficié l'an dernier.</p>"
            ),
            "url": f"https://partenaire.example.org/projets/{prefix}-{n:07d}",
            "holder": {"name": holder, "legal_form": rng.choice(HOLDER_FORMS)},
            "themes": [theme],
            "subthemes": chosen,
            "audiences": rng.sample(audiences, k=rng.randint(1, 3)),
            "stage": rng.choice(stages),
            "engineering": rng.sample(engineering, k=rng.randint(0, 2)),
            "places": [
                {
                    "commune": commune,
                    "postcode": postcode,
                    "scope": rng.choice(["local", "local", "departemental", "regional"]),
                }
            ],
            "start_date": f"{year}-{rng.randint(1, 12):02d}-01",
            "tags": [{"tag": kind.split()[0].lower()}],
        }
        if rng.random() < 0.4:
            need = rng.choice(NEEDS)
            sheet["matches"] = [{"kind": need[0], "text": need[1], "direction": "need"}]
        if rng.random() < 0.15:
            offer = rng.choice(OFFERS)
            sheet.setdefault("matches", []).append({"kind": offer[0], "text": offer[1], "direction": "offer"})
        if rng.random() < 0.2:
            sheet["awards"] = [{"name": f"Lauréat La France s'engage {year + 1}", "year": year + 1}]
        yield sheet


def write_demo_file(
    path: Path, count: int, *, seed: int = 1, partner: str = "", with_handwritten: bool = True, prefix: str = "demo"
) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        items: list[dict[str, Any]] = handwritten() if with_handwritten else []
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
            written += 1
        for item in generate(count, seed=seed, prefix=prefix):
            if partner:
                item["partner"] = {"name": partner}
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
            written += 1
    return written
