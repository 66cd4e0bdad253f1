"""Normalisation of French place names, postcodes and département codes.

Both the build step (to index the communes) and the gazetteer (to read what a
partner typed) use the same functions, so an index key and a query key of the
same commune always agree. A key is lower-case ASCII words separated by single
spaces: accents, case, hyphens, apostrophes (’ and ') and punctuation are
folded; "St"/"Ste" become "saint"/"sainte"; a trailing article in brackets
("Mans (Le)") moves to the front; "Paris 11e", "Paris XI", "Paris 11ème
arrondissement" and "Paris Cedex 11" all become ``paris 11``.

The build stores each commune's key: changing the rules here needs a bump of
``node.geo.build.FORMAT_VERSION`` so that existing gazetteer files are rebuilt.
"""

from __future__ import annotations

import re
import unicodedata

ARTICLES = ("le", "la", "les", "l", "aux", "las", "los")
# The INSEE "type de nom" (TNCC) of a commune tells which article its bare name takes.
TNCC_ARTICLES = {2: "Le ", 3: "La ", 4: "Les ", 5: "L'", 6: "Aux ", 7: "Las ", 8: "Los "}
ARRONDISSEMENT_CITIES = {"paris": "75", "lyon": "69", "marseille": "13"}

_ABBREVIATIONS = {"st": "saint", "ste": "sainte", "sts": "saints", "stes": "saintes"}
_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss"})
_NON_WORD = re.compile(r"[^a-z0-9]+")
_BRACKET_ARTICLE = re.compile(r"^(?P<name>.*?)\s*\((?P<art>le|la|les|l'|l’|l|aux|las|los)\)\s*$", re.IGNORECASE)
_ROMAN = {
    "i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10,
    "xi": 11, "xii": 12, "xiii": 13, "xiv": 14, "xv": 15, "xvi": 16, "xvii": 17, "xviii": 18,
    "xix": 19, "xx": 20,
}  # fmt: skip
_ORDINAL = re.compile(r"^(?P<n>\d{1,2})(?:er|re|e|eme|em|ieme|me|d|nd)?$")
_CEDEX = re.compile(r"\bcedex(?:\s+\d{1,3})?\b")
_POSTCODE = re.compile(r"^\d{5}$")


def fold(text: str) -> str:
    """Lower-case ASCII words separated by single spaces (accents and punctuation folded)."""
    text = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def _arrondissement_key(words: list[str]) -> str | None:
    """``paris 11`` for "Paris 11e", "Paris XI", "Paris 11ème arrondissement", "Paris Cedex 11"."""
    if len(words) < 2 or words[0] not in ARRONDISSEMENT_CITIES:
        return None
    rest = [w for w in words[1:] if w not in ("arrondissement", "arr", "arrdt", "cedex")]
    if len(rest) != 1:
        return None
    token = rest[0]
    number: int | None = None
    match = _ORDINAL.match(token)
    if match:
        number = int(match.group("n"))
    else:
        for suffix in ("eme", "e", "er", ""):
            if suffix and not token.endswith(suffix):
                continue
            stem = token[: len(token) - len(suffix)] if suffix else token
            if stem in _ROMAN:
                number = _ROMAN[stem]
                break
    if number is None or not 1 <= number <= 20:
        return None
    return f"{words[0]} {number}"


def name_key(name: str) -> str:
    """The matching key of a commune name as typed (article kept, moved to the front)."""
    name = name.strip()
    match = _BRACKET_ARTICLE.match(name)
    if match:
        article = match.group("art")
        name = f"{article} {match.group('name')}"
    words = [_ABBREVIATIONS.get(w, w) for w in fold(name).split()]
    arrondissement = _arrondissement_key(words)
    if arrondissement:
        return arrondissement
    return " ".join(_CEDEX.sub(" ", " ".join(words)).split())


def strip_article(key: str) -> str:
    """A key without its leading article ("le mans" -> "mans"), or the key itself."""
    head, _, tail = key.partition(" ")
    return tail if head in ARTICLES and tail else key


def official_name(bare: str, tncc: int) -> str:
    """The official commune name from the bare INSEE name and its TNCC ("Mans", 2 -> "Le Mans")."""
    article = TNCC_ARTICLES.get(tncc, "")
    if bare.lower().startswith(article.lower().strip()) and article and bare[len(article.strip()) :][:1] in " '’":
        return bare  # already carries its article
    return f"{article}{bare}"


def normalise_postcode(postcode: object) -> str | None:
    """A five-digit postcode, or None ("75 011", "5000" -> "05000", 75011.0 -> "75011")."""
    if postcode is None:
        return None
    if isinstance(postcode, float) and postcode.is_integer():
        postcode = int(postcode)
    text = re.sub(r"[\s.]", "", str(postcode))
    if text.isdigit() and len(text) == 4:
        text = "0" + text
    return text if _POSTCODE.match(text) else None


def departement_of_postcode(postcode: object) -> str | None:
    """The département a postcode most likely belongs to (prefix rule; La Poste exceptions aside).

    20xxx is split between 2A (below 20200) and 2B; 97x and 98x postcodes carry
    the three-digit overseas code. Postcodes of a département are not always
    within its prefix (some communes are served from a neighbouring office), so
    the gazetteer prefers its postcode table and only falls back to this rule.
    """
    code = normalise_postcode(postcode)
    if code is None or code.startswith("00"):
        return None
    if code.startswith("20"):
        return "2A" if int(code) < 20200 else "2B"
    if code.startswith(("97", "98")):
        return code[:3]
    return code[:2]


def normalise_departement(value: object) -> str | None:
    """A département code ("1" -> "01", "2a" -> "2A", "971" stays); names are handled by the gazetteer."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    if re.fullmatch(r"\d{1,3}", text):
        if len(text) == 3 and text.startswith(("97", "98")):
            return text
        return text.zfill(2) if len(text) <= 2 else None
    if text in ("2A", "2B"):
        return text
    return None
