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
_space = re.compile(r"[ \t\r\f\v]+")
_blank_lines = re.compile(r"\n\s*\n+")


def sanitize_html(text: str) -> str:
    """Keep only allow-listed tags and attributes; links get ``rel="nofollow noopener"``."""
    return nh3.clean(
        text,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="nofollow noopener",
    ).strip()


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


def html_to_text(text: str) -> str:
    """Plain text of sanitised HTML (for oai_dc, search and summaries)."""
    # Block boundaries become line breaks; nh3 then drops every tag (and script/style content).
    stripped = nh3.clean(_blocks.sub("\n", text), tags=set())
    lines = [_space.sub(" ", html.unescape(line)).strip() for line in stripped.split("\n")]
    return "\n".join(line for line in lines if line)


def shorten(text: str, limit: int = 280) -> str:
    """Cut at a word boundary and add an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(",;:.") + "…"


def fold_apostrophes(text: str) -> str:
    return text.replace("’", "'").replace("‘", "'")
