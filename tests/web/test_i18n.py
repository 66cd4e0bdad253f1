"""The English catalogue: complete for every message of the front, and compiled from its source."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from web.i18n import LOCALE_DIR, translations

ROOT = Path(__file__).resolve().parents[2]
PO = LOCALE_DIR / "en" / "LC_MESSAGES" / "messages.po"


def test_every_message_is_translated_and_the_mo_is_fresh(tmp_path: Path) -> None:
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "web/babel.cfg", "-k", "gettext:2",
         "-o", str(pot), "--no-location", "--sort-output", "."],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    wanted = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(pot.open("rb")) if m.id}
    source = read_po(PO.open("rb"), locale="en")
    have = {m.id if isinstance(m.id, str) else m.id[0]: m.string for m in source if m.id}
    missing = sorted(w for w in wanted if not have.get(w) or (isinstance(have[w], tuple) and not all(have[w])))
    assert missing == [], f"untranslated (run the catalogue update in web/babel.cfg): {missing}"
    compiled = read_mo(io.BytesIO((PO.with_suffix(".mo")).read_bytes()))

    def table(catalog) -> dict:
        return {
            tuple(m.id) if isinstance(m.id, list | tuple) else m.id: tuple(m.string)
            if isinstance(m.string, list | tuple)
            else m.string
            for m in catalog
            if m.id
        }

    assert table(compiled) == table(source)


def test_french_plural_and_english_lookup() -> None:
    fr, en = translations("fr"), translations("en")
    assert fr.ngettext("%(n)s projet", "%(n)s projets", 0) == "%(n)s projet"  # French: 0 is singular
    assert en.ngettext("%(n)s projet", "%(n)s projets", 0) == "%(n)s projects"
    assert en.gettext("Rechercher des projets") == "Search projects"
