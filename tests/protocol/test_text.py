"""protocol.text: the plain text of sanitised HTML, read without parsing it again, agrees with nh3."""

from __future__ import annotations

import random

import nh3
import pytest

from node.demo import generate, handwritten
from protocol.text import (
    _PLAIN,
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    URL_SCHEMES,
    _blocks,
    _strip_tags,
    html_to_text,
    sanitize_html,
)

TRICKY = [
    "",
    "plain text",
    "<p>a &lt; b &amp; c &gt; d &quot;e&quot; f&nbsp;g h&#39;i</p>",
    '<p>Voir <a href="https://x.example/?a=1&amp;b=2" rel="nofollow noopener">le site</a> et <em>lire</em>.</p>',
    '<p><abbr title="Économie sociale et solidaire">ESS</abbr> &amp; <span>co</span></p>',
    "<ul><li>un</li><li>deux<br>trois</li></ul><blockquote>cité</blockquote><pre>  code\n  bloc</pre>",
    "<p>raw > sign and 1 < 2</p>",
    "<script>alert(1)</script>after",
    "<style>p{}</style><p>styled</p>",
    "<!-- comment --><p>x</p>",
    "<P>upper</P><SPAN>case</SPAN>",
    "<spanx>not a known tag</spanx>",
    "<span title='single quoted'>q</span>",
    "<span title=unquoted>u</span>",
    "<span hidden>bare attribute</span>",
    "&eacute;t&eacute; &#233; &#xE9; &copy",
    "a\r\nb\rc",
    "nul\x00byte",
    "\ufeffbom",
    "<img src=x onerror=y>image",
    "<p>a</p\n><p>b</p >",
    "<textarea><b>raw</b></textarea>t",
    "<b>bold</b> <strong>strong</strong> <i>i</i> <u>u</u> <code>c</code> <sub>2</sub> <sup>3</sup>",
    "<em>unclosed",
    "</em>stray end",
    '<span\u00a0title="x">nbsp in tag</span>',
]

PIECES = [
    "a",
    " ",
    "  ",
    "\n",
    "\t",
    "é",
    "<",
    ">",
    "&",
    "&amp;",
    "&lt;",
    "&nbsp;",
    "&#39;",
    "&quot;",
    '"',
    "'",
    "<p>",
    "</p>",
    "<br>",
    "<em>",
    "</em>",
    "<span>",
    "</span>",
    '<a href="https://x.example/a?b=1&amp;c=2">',
    "</a>",
    '<abbr title="t">',
    "</abbr>",
    "<li>",
    "<script>",
    "</script>",
    "<!--",
    "-->",
    "<b/>",
    "\r",
]


def _reference(text: str) -> str:
    return nh3.clean(text, tags=set())


@pytest.mark.parametrize("text", TRICKY)
def test_strip_tags_agrees_with_nh3(text: str) -> None:
    for candidate in (text, sanitize_html(text)):
        blocks = _blocks.sub("\n", candidate)
        assert _strip_tags(blocks) == _reference(blocks)


def test_strip_tags_agrees_with_nh3_on_random_fragments() -> None:
    rng = random.Random(5)
    fast = 0
    for _ in range(3000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 25)))
        for candidate in (text, sanitize_html(text)):
            blocks = _blocks.sub("\n", candidate)
            fast += bool(_PLAIN.fullmatch(blocks))
            assert _strip_tags(blocks) == _reference(blocks), candidate
    assert fast > 1000  # the comparison covered the path that does not parse


def test_generated_descriptions_take_the_plain_path() -> None:
    items = [*handwritten(), *generate(300, seed=3)]
    descriptions = [sanitize_html(item["description"]) for item in items if item.get("description")]
    assert len(descriptions) > 100
    for description in descriptions:
        blocks = _blocks.sub("\n", description)
        assert _PLAIN.fullmatch(blocks), description
        assert _strip_tags(blocks) == _reference(blocks)


def test_html_to_text_blocks_and_entities() -> None:
    html = "<p>Un &amp; deux</p><ul><li>trois&nbsp;quatre</li><li>cinq  <em>six</em></li></ul>"
    assert html_to_text(html) == "Un & deux\ntrois\xa0quatre\ncinq six"


def test_sanitize_html_is_nh3_clean_with_the_allow_list() -> None:
    """The prebuilt cleaner gives what nh3.clean with the same options gives."""
    rng = random.Random(6)
    texts = [*TRICKY, *("".join(rng.choice(PIECES) for _ in range(rng.randint(1, 25))) for _ in range(1000))]
    for text in texts:
        expected = nh3.clean(
            text,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            url_schemes=URL_SCHEMES,
            link_rel="nofollow noopener",
        ).strip()
        assert sanitize_html(text) == expected, text


def test_html_to_text_of_text_that_is_not_the_sanitisers_output_is_linear() -> None:
    """A long run of text ending in a stray "<" once backtracked exponentially (minutes at 16 words)."""
    text = "mot " * 5000 + "fin <"
    assert html_to_text(text) == ("mot " * 5000 + "fin <").strip().replace("  ", " ")
    assert html_to_text("<strong>a</strong> b " * 3000 + "\x01").startswith("a b a b")
