"""Text hygiene shared by every entry point: HTML sanitising, Markdown, plain text.

Descriptions arrive as HTML (partner sites, harvested records), Markdown (the
admin) or plain text (spreadsheets). They are stored as HTML sanitised against a
small allow-list, so that every consumer (web pages, ActivityPub ``content``,
OAI ``oai_dc``) can trust them.
"""

from __future__ import annotations

import html
import re

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "p",
    "br",
    "strong",
    "b",
    "em",
    "i",
    "u",
    "ul",
    "ol",
    "li",
    "a",
    "blockquote",
    "h3",
    "h4",
    "h5",
    "h6",
    "code",
    "pre",
    "span",
    "abbr",
    "sub",
    "sup",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title", "hreflang"}, "abbr": {"title"}}
URL_SCHEMES = {"http", "https", "mailto"}

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})
# Runs of blanks become one space; a lone space is left in place (most matches, were it replaced too).
_space = re.compile(r"[ \t\r\f\v]{2,}|[\t\r\f\v]")
_blank_lines = re.compile(r"\n\s*\n+")


# Built once: nh3.clean(text, **options) converts its options on every call (two thirds of its time).
_sanitizer = nh3.Cleaner(
    tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes=URL_SCHEMES, link_rel="nofollow noopener"
)
_tag_stripper = nh3.Cleaner(tags=set())


def sanitize_html(text: str) -> str:
    """Keep only allow-listed tags and attributes; links get ``rel="nofollow noopener"``."""
    return _sanitizer.clean(text).strip()


def markdown_to_html(text: str) -> str:
    """Render Markdown (raw HTML disabled), then sanitise the result."""
    return sanitize_html(_markdown.render(text))


def plain_to_html(text: str) -> str:
    """Escape plain text and turn blank-line-separated blocks into paragraphs."""
    blocks = [b.strip() for b in _blank_lines.split(text.replace("\r\n", "\n")) if b.strip()]
    return "".join("<p>" + html.escape(b).replace("\n", "<br>") + "</p>" for b in blocks)


def to_html(text: str, fmt: str = "html") -> str:
    if fmt == "markdown":
        return markdown_to_html(text)
    if fmt == "text":
        return plain_to_html(text)
    if fmt == "html":
        return sanitize_html(text)
    raise ValueError(f"unknown text format {fmt!r} (html, markdown or text)")


_blocks = re.compile(
    r"(?i)<br\s*/?>|</?(?:p|div|li|ul|ol|h[1-6]|blockquote|pre|table|tr|td|th|section|article)\b[^>]*>"
)


# HTML such as the sanitiser writes it, once _blocks has cut the block tags: text without a raw
# "<" (nor a character the HTML parser rewrites), only the entities the sanitiser writes, and
# tags of the allow-list with double-quoted attributes. The parser reads such text plainly: each
# tag can be cut out as it stands and the entities decoded, which is what nh3 would leave.
_INLINE = "|".join(sorted(ALLOWED_TAGS - {"p", "br", "ul", "ol", "li", "blockquote", "pre", "h3", "h4", "h5", "h6"}))
_TAG_RE = rf'</?(?:{_INLINE})(?:[ \t\n]+[a-z][a-z-]*="[^"]*")*[ \t\n]*/?>'
_TAG = re.compile(_TAG_RE)
# Possessive and atomic: a run of text is never split again when the match fails further on
# (with a plain ``+`` inside ``*`` a long text ending in a stray "<" took exponential time).
_PLAIN = re.compile(rf"(?:[^<>&\x00-\x08\x0b-\x1f\x7f\ufeff]++|&(?:amp|lt|gt|nbsp);|(?>{_TAG_RE}))*+")


def _strip_tags(text: str) -> str:
    """Text of an HTML fragment with every tag dropped (script/style content too), entities kept."""
    if _PLAIN.fullmatch(text):
        return _TAG.sub("", text)  # the sanitiser's own output (every stored description)
    return _tag_stripper.clean(text)


def html_to_text(text: str) -> str:
    """Plain text of sanitised HTML (for oai_dc, search and summaries)."""
    # Block boundaries become line breaks, then every tag goes and entities are decoded.
    stripped = _strip_tags(_blocks.sub("\n", text))
    if "&" in stripped:
        stripped = html.unescape(stripped)
    lines = [_squeeze(line) for line in stripped.split("\n")]
    return "\n".join(line for line in lines if line)


def _squeeze(line: str) -> str:
    # The regex visits every character: asked only of a line with something to squeeze.
    if "  " in line or "\t" in line or "\r" in line or "\f" in line or "\v" in line:
        line = _space.sub(" ", line)
    return line.strip()


def shorten(text: str, limit: int = 280) -> str:
    """Cut at a word boundary and add an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(",;:.") + "…"


def fold_apostrophes(text: str) -> str:
    return text.replace("’", "'").replace("‘", "'")
