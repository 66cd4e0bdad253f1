"""The network taxonomy (themes, sub-themes, audiences, stages...) as versioned data.

The data lives in ``protocol/data/taxonomy.json`` (written by the project, labels
in French and English); this module only reads it into lookup tables. Partner
tags reach taxonomy codes through a per-partner :class:`Crosswalk`.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True, slots=True)
class Term:
    code: str
    fr: str
    en: str
    parent: str | None = None

    def label(self, lang: str = "fr") -> str:
        return self.en if lang == "en" else self.fr


@dataclass(frozen=True)
class Taxonomy:
    version: str
    themes: Mapping[str, Term]
    subthemes: Mapping[str, Term]
    audiences: Mapping[str, Term]
    stages: Mapping[str, Term]
    engineering: Mapping[str, Term]
    match_kinds: Mapping[str, Term]
    regions: Mapping[str, Term]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Taxonomy:
        def table(key: str) -> dict[str, Term]:
            return {
                t["code"]: Term(code=t["code"], fr=t["fr"], en=t["en"], parent=t.get("parent"))
                for t in data.get(key, [])
            }

        return cls(
            version=str(data["version"]),
            themes=table("themes"),
            subthemes=table("subthemes"),
            audiences=table("audiences"),
            stages=table("stages"),
            engineering=table("engineering"),
            match_kinds=table("match_kinds"),
            regions=table("regions"),
        )

    def subthemes_of(self, theme: str) -> list[Term]:
        return [t for t in self.subthemes.values() if t.parent == theme]

    def complete(self, themes: Iterable[str], subthemes: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Add the parent theme of every sub-theme; keep only known codes, in taxonomy order."""
        subs = {s for s in subthemes if s in self.subthemes}
        tops = {t for t in themes if t in self.themes}
        tops.update(p for s in subs if (p := self.subthemes[s].parent))
        return (
            tuple(c for c in self.themes if c in tops),
            tuple(c for c in self.subthemes if c in subs),
        )

    def classify(self, code: str) -> str | None:
        """Which table a code belongs to: ``theme``, ``subtheme`` or None."""
        if code in self.themes:
            return "theme"
        if code in self.subthemes:
            return "subtheme"
        return None


@cache
def default_taxonomy() -> Taxonomy:
    """The taxonomy shipped with Essaim (read once from package data)."""
    text = resources.files("protocol").joinpath("data/taxonomy.json").read_text(encoding="utf-8")
    return Taxonomy.from_dict(json.loads(text))


def fold(text: str) -> str:
    """Case-, accent- and space-insensitive key for matching free-text labels."""
    text = unicodedata.normalize("NFKD", text.replace("’", "'")).encode("ascii", "ignore").decode("ascii")
    return " ".join(text.lower().replace("-", " ").split())


@dataclass(frozen=True)
class Crosswalk:
    """A partner's own tags mapped to taxonomy codes.

    ``rules`` maps a folded tag to codes; a tag may map to several codes or to
    none (explicitly ignored). Tags absent from the crosswalk are *unmapped* and
    get reported so the partner (or the hub operator) can complete the mapping.
    """

    partner: str
    rules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Crosswalk:
        rules: dict[str, tuple[str, ...]] = {}
        for tag, codes in (data.get("tags") or {}).items():
            rules[fold(tag)] = tuple(codes)
        return cls(partner=str(data.get("partner", "")), rules=rules)

    def lookup(self, tag: str) -> tuple[str, ...] | None:
        """Codes for a tag, ``()`` when deliberately unmapped, None when unknown."""
        return self.rules.get(fold(tag))

    def labels_fallback(self, taxonomy: Taxonomy, tag: str) -> tuple[str, ...] | None:
        """A tag that *is* a taxonomy label or code maps to it without a rule."""
        key = fold(tag)
        for table in (taxonomy.subthemes, taxonomy.themes):
            for term in table.values():
                if key in (fold(term.fr), fold(term.en), term.code.lower()):
                    return (term.code,)
        return None

    def map(self, taxonomy: Taxonomy, tag: str) -> tuple[str, ...] | None:
        found = self.lookup(tag)
        return found if found is not None else self.labels_fallback(taxonomy, tag)
