"""Project data embedded in a partner's web page → an import row (pure: HTML bytes in, dict out).

Three readers, tried in this order, each giving a row keyed by import-mapping targets
(``title``, ``summary``, ``tags``, ``place_commune``, ``holder_name``, … see
``node/mapping.py``), which the node importer then validates like any CSV or JSON row:

- **per-site rules** (:class:`SiteRules`, a TOML file the hub operator keeps under version
  control): a CSS selector or an XPath per target, and test pages with the expected values
  (``essaim hub rules check FILE`` runs them);
- **schema.org JSON-LD** (``<script type="application/ld+json">``), ``@graph`` included;
- **schema.org microdata** (``itemscope`` / ``itemtype`` / ``itemprop``).

The page is parsed by lxml's HTML parser, which never fetches anything (no DTD, no
entities, no network). The ``local_id`` of a crawled sheet is always its page URL:
the crawler must know a page's sheet without fetching it again.

Rules file format (all keys but ``version`` and ``[fields]`` optional)::

    version = 3                          # bump on every change; recorded with each harvested sheet
    site = "https://www.exemple.org"     # documentation
    match = "/projets/"                  # only sitemap URLs containing this are project pages
    description_format = "html"          # html | markdown | text, as in import mappings

    [fields]
    title = { css = "h1.titre" }
    summary = { xpath = "//meta[@name='description']/@content" }
    description = { css = "div.description", html = true }   # the element's inner HTML
    tags = { css = "ul.tags li", list = true }
    holder_name = { css = ".porteur" }
    place_commune = { css = ".lieu .ville" }
    images = { css = "img.visuel", attr = "src", list = true }

    [[tests]]
    page = "tests/projet-12.html"        # relative to the rules file
    url = "https://www.exemple.org/projets/12"
    expect = { title = "Jardin partagé", tags = ["jardin", "quartier"] }
"""

from __future__ import annotations

import codecs
import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from lxml import etree, html

from node.mapping import LIST_TARGETS, SCALAR_TARGETS

PROJECT_TYPES = ("Project", "ResearchProject", "FundingScheme")
OTHER_TYPES = ("CreativeWork", "Article", "Event", "Service", "Organization", "NGO")
HOLDER_KEYS = ("founder", "organizer", "author", "creator", "provider", "producer", "funder", "sponsor")
PLACE_KEYS = ("location", "address", "spatialCoverage", "areaServed", "contentLocation")


class RulesError(ValueError):
    """A rules file is invalid; the message names the file and the key."""


# --------------------------------------------------------------------- HTML


_META_CHARSET = re.compile(rb"<meta[^>]+charset", re.IGNORECASE)


def _encoding(body: bytes, declared: str | None) -> str | None:
    """HTTP's charset first, else the page's own ``<meta charset>`` (lxml reads it), else UTF-8 when
    the bytes are UTF-8, else Windows-1252 (what undeclared French pages are, in practice)."""
    if declared:
        try:
            return codecs.lookup(declared).name
        except LookupError:
            pass
    if _META_CHARSET.search(body[:2048]):
        return None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def parse_html(body: bytes, url: str, charset: str | None = None) -> html.HtmlElement:
    """Parse a page; ``charset`` is the one of the HTTP Content-Type, if any."""
    parser = html.HTMLParser(no_network=True, remove_comments=True, recover=True, encoding=_encoding(body, charset))
    try:
        root = html.document_fromstring(body, parser=parser, base_url=url)
    except (etree.ParserError, ValueError) as exc:
        raise ValueError(f"{url}: not an HTML page: {exc}") from None
    return root


def _text(el: Any) -> str:
    if isinstance(el, str):
        return " ".join(el.split())
    return " ".join(el.text_content().split())


# --------------------------------------------------------------------- schema.org


def _types(node: Mapping[str, Any]) -> list[str]:
    t = node.get("@type", [])
    values = t if isinstance(t, list) else [t]
    return [str(v).rsplit("/", 1)[-1] for v in values]


def _walk(data: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(data, list):
        for item in data:
            yield from _walk(item)
    elif isinstance(data, Mapping):
        yield data
        for key in ("@graph", "mainEntity", "itemListElement"):
            if key in data:
                yield from _walk(data[key])


def _pick(nodes: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for wanted in (PROJECT_TYPES, OTHER_TYPES):
        for node in nodes:
            if any(t in wanted for t in _types(node)):
                return node
    return None


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _name(value: Any) -> str | None:
    value = _first(value)
    if isinstance(value, Mapping):
        value = value.get("name")
    return " ".join(str(value).split()) if value else None


def _url(value: Any) -> str | None:
    value = _first(value)
    if isinstance(value, Mapping):
        value = value.get("url") or value.get("contentUrl") or value.get("@id")
    return str(value) if value else None


def schema_row(node: Mapping[str, Any], page_url: str) -> dict[str, Any]:
    """Import-row values from one schema.org object (JSON-LD, or microdata turned into the same shape)."""
    row: dict[str, Any] = {}
    if _name(node.get("name") or node.get("headline")):
        row["title"] = _name(node.get("name") or node.get("headline"))
    description = _first(node.get("description"))
    if isinstance(description, str) and description.strip():
        key = "summary" if len(description) <= 600 else "description"
        row[key] = description.strip()
    abstract = _first(node.get("abstract") or node.get("disambiguatingDescription"))
    if isinstance(abstract, str) and abstract.strip() and "summary" not in row:
        row["summary"] = abstract.strip()
    url = _url(node.get("url"))
    row["url"] = urljoin(page_url, url) if url else page_url
    keywords = node.get("keywords")
    if isinstance(keywords, str):
        row["tags"] = [k.strip() for k in keywords.split(",") if k.strip()]
    elif isinstance(keywords, list):
        row["tags"] = [n for k in keywords if (n := _name(k))]
    images = node.get("image")
    if images:
        row["images"] = [
            urljoin(page_url, u) for u in (_url(i) for i in (images if isinstance(images, list) else [images])) if u
        ]
    for key in HOLDER_KEYS:
        holder = _name(node.get(key))
        if holder:
            row["holder_name"] = holder
            break
    for key in PLACE_KEYS:
        if node.get(key):
            row.update(_place(_first(node[key])))
            break
    for target, keys in (("start_date", ("startDate", "foundingDate", "dateCreated")), ("end_date", ("endDate",))):
        for key in keys:
            value = _first(node.get(key))
            if isinstance(value, str) and len(value) >= 10:
                row[target] = value[:10]
                break
    language = _first(node.get("inLanguage"))
    if isinstance(language, str) and language[:2].isalpha():
        row["language"] = language[:2].lower()
    licence = _url(node.get("license"))
    if licence and licence.startswith(("http://", "https://")):
        row["licence"] = licence
    if isinstance(node.get("email"), str):
        row["contact_email"] = node["email"].removeprefix("mailto:")
    return row


def _place(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, str):
        return {"place_address": value}
    if not isinstance(value, Mapping):
        return out
    address = value.get("address", value)
    if isinstance(address, str):
        out["place_address"] = address
    elif isinstance(address, Mapping):
        for target, key in (
            ("place_address", "streetAddress"),
            ("place_postcode", "postalCode"),
            ("place_commune", "addressLocality"),
        ):
            if address.get(key):
                out[target] = " ".join(str(address[key]).split())
    geo = value.get("geo")
    if isinstance(geo, Mapping) and geo.get("latitude") is not None and geo.get("longitude") is not None:
        out["place_lat"], out["place_lon"] = str(geo["latitude"]), str(geo["longitude"])
    if not out and value.get("name"):
        out["place_address"] = _name(value.get("name"))
    return out


def json_ld_nodes(root: html.HtmlElement) -> list[Mapping[str, Any]]:
    nodes: list[Mapping[str, Any]] = []
    for script in root.xpath("//script[@type='application/ld+json']"):
        try:
            data = json.loads(script.text or "")
        except json.JSONDecodeError:
            continue  # one broken block does not hide the others
        nodes.extend(_walk(data))
    return nodes


def _microdata_value(el: html.HtmlElement, page_url: str) -> Any:
    if el.get("itemscope") is not None:
        return microdata_item(el, page_url)
    tag = el.tag.lower() if isinstance(el.tag, str) else ""
    if el.get("content") is not None:
        return el.get("content")
    if tag in ("a", "link", "area") and el.get("href"):
        return urljoin(page_url, el.get("href"))
    if tag in ("img", "audio", "video", "source", "iframe", "embed") and el.get("src"):
        return urljoin(page_url, el.get("src"))
    if tag in ("time",) and el.get("datetime"):
        return el.get("datetime")
    if tag in ("data", "meter") and el.get("value"):
        return el.get("value")
    return _text(el)


def microdata_item(scope: html.HtmlElement, page_url: str) -> dict[str, Any]:
    """One ``itemscope`` as a JSON-LD-shaped dict (nested scopes become nested dicts)."""
    item: dict[str, Any] = {"@type": (scope.get("itemtype") or "").split()}
    stack = list(scope)
    while stack:
        el = stack.pop(0)
        if not isinstance(el.tag, str):
            continue
        props = (el.get("itemprop") or "").split()
        for prop in props:
            value = _microdata_value(el, page_url)
            if prop in item:
                existing = item[prop]
                item[prop] = [*(existing if isinstance(existing, list) else [existing]), value]
            else:
                item[prop] = value
        if el.get("itemscope") is None:  # a nested item's properties are its own
            stack[0:0] = list(el)
    return item


def microdata_nodes(root: html.HtmlElement, page_url: str) -> list[Mapping[str, Any]]:
    return [microdata_item(el, page_url) for el in root.xpath("//*[@itemscope and not(@itemprop)]")]


# --------------------------------------------------------------------- per-site rules


@dataclass(frozen=True, slots=True)
class FieldSelector:
    target: str
    css: str | None = None
    xpath: str | None = None
    attr: str | None = None
    many: bool = False
    inner_html: bool = False


@dataclass(frozen=True)
class SiteRules:
    path: str
    version: int
    match: str
    description_format: str
    fields: tuple[FieldSelector, ...]
    tests: tuple[Mapping[str, Any], ...]

    def wants(self, url: str) -> bool:
        return not self.match or self.match in url

    def row(self, root: html.HtmlElement, page_url: str) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for f in self.fields:
            found = root.xpath(f.xpath) if f.xpath else root.cssselect(f.css or "")
            values: list[str] = []
            for el in found if isinstance(found, list) else [found]:
                if isinstance(el, str):
                    value = " ".join(el.split())
                elif f.attr:
                    value = el.get(f.attr) or ""
                    if f.attr in ("href", "src") and value:
                        value = urljoin(page_url, value)
                elif f.inner_html:
                    value = (el.text or "") + "".join(etree.tostring(c, encoding="unicode") for c in el)
                    value = value.strip()
                else:
                    value = _text(el)
                if value and value not in values:
                    values.append(value)
            if values:
                row[f.target] = values if f.many else values[0]
        row.setdefault("url", page_url)
        return row


def load_rules(path: str | Path) -> SiteRules:
    """Read and check a rules file; every problem is a :class:`RulesError` naming the key."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"{where}: {exc}") from None
    unknown = sorted(set(data) - {"version", "site", "match", "description_format", "fields", "tests"})
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if not isinstance(data.get("version"), int):
        raise RulesError(f"{where}: version (an integer, bumped on every change) is required")
    fields = data.get("fields")
    if not isinstance(fields, Mapping) or "title" not in fields:
        raise RulesError(f"{where}: [fields] must at least say where the title is")
    selectors = []
    for target, spec in fields.items():
        if target == "local_id":
            raise RulesError(f"{where}: fields.local_id: a crawled sheet is identified by its page URL")
        if target not in SCALAR_TARGETS and target not in LIST_TARGETS:
            raise RulesError(f"{where}: fields.{target}: unknown target")
        if not isinstance(spec, Mapping) or ("css" in spec) == ("xpath" in spec):
            raise RulesError(f"{where}: fields.{target}: give exactly one of css or xpath")
        extra = sorted(set(spec) - {"css", "xpath", "attr", "list", "html"})
        if extra:
            raise RulesError(f"{where}: fields.{target}: unknown key(s) {', '.join(extra)}")
        try:
            if "css" in spec:
                from cssselect import GenericTranslator, SelectorError

                try:
                    GenericTranslator().css_to_xpath(str(spec["css"]))
                except SelectorError as exc:
                    raise RulesError(f"{where}: fields.{target}: bad CSS selector: {exc}") from None
            else:
                etree.XPath(str(spec["xpath"]))
        except etree.XPathSyntaxError as exc:
            raise RulesError(f"{where}: fields.{target}: bad XPath: {exc}") from None
        selectors.append(
            FieldSelector(
                target=target,
                css=spec.get("css"),
                xpath=spec.get("xpath"),
                attr=spec.get("attr"),
                many=bool(spec.get("list", target in LIST_TARGETS)),
                inner_html=bool(spec.get("html", False)),
            )
        )
    fmt = str(data.get("description_format", "text"))
    if fmt not in ("html", "markdown", "text"):
        raise RulesError(f"{where}: description_format must be html, markdown or text")
    tests = data.get("tests", [])
    if not isinstance(tests, list) or not all(isinstance(t, Mapping) and "page" in t for t in tests):
        raise RulesError(f"{where}: each [[tests]] needs a page")
    return SiteRules(where, int(data["version"]), str(data.get("match", "")), fmt, tuple(selectors), tuple(tests))


def check_rules(rules: SiteRules) -> list[str]:
    """Run the rules file's own tests; returns the failures (empty: all pass)."""
    failures = []
    base = Path(rules.path).parent
    for n, test in enumerate(rules.tests, start=1):
        page = base / str(test["page"])
        url = str(test.get("url") or page.as_uri())
        try:
            row = rules.row(parse_html(page.read_bytes(), url), url)
        except (OSError, ValueError) as exc:
            failures.append(f"test {n} ({page.name}): {exc}")
            continue
        for key, want in (test.get("expect") or {}).items():
            if row.get(key) != want:
                failures.append(f"test {n} ({page.name}): {key} is {row.get(key)!r}, expected {want!r}")
    return failures


def extract(
    body: bytes, page_url: str, rules: SiteRules | None = None, charset: str | None = None
) -> tuple[dict[str, Any] | None, str]:
    """The import row of a page and how it was found (``rules``, ``json-ld``, ``microdata``), or
    ``(None, reason)`` when the page carries no project."""
    root = parse_html(body, page_url, charset)
    if rules is not None:
        row = rules.row(root, page_url)
        if not row.get("title"):
            return None, "the rules found no title"
        return {**row, "local_id": page_url}, "rules"
    node = _pick(json_ld_nodes(root))
    how = "json-ld"
    if node is None:
        node, how = _pick(microdata_nodes(root, page_url)), "microdata"
    if node is None:
        return None, "no schema.org project (JSON-LD or microdata) in the page"
    row = schema_row(node, page_url)
    if not row.get("title"):
        return None, f"the schema.org {_types(node)} has no name"
    return {**row, "local_id": page_url}, how
