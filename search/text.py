"""Text analysis done by us because Typesense 0.24.1 cannot: apostrophe folding,
HTML to plain text, and the Snowball French stems of the ``stemmed`` shadow field.

The same analyser runs on documents and on queries (and on synonym files), so a
stem produced at index time is always the stem the query asks for.
"""

from __future__ import annotations

import functools
import re
import threading

import snowballstemmer

from protocol.text import html_to_text as sheet_html_to_text

# Typesense 0.24.1 refuses the typographic apostrophe as a token separator, so every
# apostrophe-like character is folded to the ASCII one before indexing and querying.
_APOSTROPHES = str.maketrans(
    {
        "’": "'",
        "‘": "'",
        "ʼ": "'",
        "´": "'",
        "`": "'",
        "＇": "'",
        # the private-use highlight markers of search.query may not occur in text
        "\ue000": None,
        "\ue001": None,
    }
)

# Words are runs of letters and digits; everything else (apostrophes, hyphens,
# punctuation) separates them, matching the collection's token separators.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# French elided articles and pronouns ("l'école", "qu'il"): dropped from the
# stemmed field, as Lucene's ElisionFilter does, so "l'école" and "école" agree.
_ELISIONS = frozenset({"l", "d", "j", "m", "n", "s", "t", "c", "qu", "jusqu", "lorsqu", "puisqu", "quoiqu"})

MAX_TEXT_CHARS = 20_000  # longer descriptions add index size, not recall


# Most texts hold none of them: one scan for the lot, then the (slow, per-character)
# ``str.translate`` only when one is there. Measured: 13 µs → 1 µs per field.
_FOLDED = re.compile("[" + "".join(chr(c) for c in _APOSTROPHES) + "]")


def fold_apostrophes(text: str) -> str:
    if _FOLDED.search(text) is None:
        return text
    return text.translate(_APOSTROPHES)


def html_to_text(html: str | None) -> str:
    """Plain text of a sanitised HTML fragment, whitespace collapsed, apostrophes folded."""
    if not html:
        return ""
    return clean_text(sheet_html_to_text(html))[:MAX_TEXT_CHARS]


def clean_text(text: str | None) -> str:
    if not text:
        return ""
    return " ".join(fold_apostrophes(text).split())


_local = threading.local()


def _stemmer() -> snowballstemmer.stemmer:
    # Snowball stemmer objects keep state between calls: one per thread.
    st = getattr(_local, "stemmer", None)
    if st is None:
        st = _local.stemmer = snowballstemmer.stemmer("french")
    return st


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``, elisions removed."""
    return [w for w in _WORD.findall(fold_apostrophes(text).lower()) if w not in _ELISIONS]


@functools.lru_cache(maxsize=1 << 18)
def _stem(word: str) -> str:
    return str(_stemmer().stemWord(word))


def stem_words(tokens: list[str]) -> list[str]:
    # The pure-Python Snowball stemmer costs ~50 µs a word, most of the indexing time; a
    # corpus's vocabulary is small, so the stems are memoised (same stems, ~50x faster).
    return [_stem(t) for t in tokens]


def stem_text(text: str) -> str:
    """The stemmed analysis of ``text``: space-separated Snowball French stems."""
    return " ".join(stem_words(words(text)))


def stem_query(q: str) -> str:
    """Stem a user query, keeping Typesense's query syntax that still makes sense.

    A quoted phrase stays a phrase of stems and a leading ``-`` still excludes; other
    characters can carry no syntax in Typesense 0.24 and are dropped with the separators.
    """
    q = fold_apostrophes(q).strip()
    if q in ("", "*"):
        return "*"
    out: list[str] = []
    for i, chunk in enumerate(q.split('"')):
        if i % 2 == 1:  # inside a quoted phrase
            phrase = stem_text(chunk)
            if phrase:
                out.append(f'"{phrase}"')
            continue
        for raw in chunk.split():
            negative = raw.startswith("-") and len(raw) > 1
            stems = stem_words(words(raw))
            if not stems:
                continue
            if negative:
                out.extend(f"-{s}" for s in stems)
            else:
                out.extend(stems)
    return " ".join(out) if out else "*"
