"""The filter builder, checked against a model of Typesense 0.24.1's filter parser.

The model follows ``StringUtils::tokenize_filter_query`` (expression tokens) and
``StringUtils::split_to_values`` (values of one clause) of Typesense 0.24: if a
built filter yields exactly the expected tokens and values there, user input did
not alter the expression. The same property is checked on the real server in
``test_filters_server.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.errors import FilterError
from search.filters import AnyOf, Filter, GeoPolygon, GeoRadius, Range, build_filter, quote
from search.geo import BBox


def tokenize(q: str) -> list[str]:
    """Typesense 0.24 ``tokenize_filter_query``: a backtick toggles quoting, escaped or not."""
    tokens: list[str] = []
    i, size = 0, len(q)
    while i < size:
        c = q[i]
        if c == " ":
            i += 1
        elif c in "()":
            tokens.append(c)
            i += 1
        elif c in "&|":
            assert i + 1 < size and q[i + 1] == c, f"lone {c!r} at {i} in {q!r}"
            tokens.append(c * 2)
            i += 2
        else:
            buf, in_tick, colon, geo = [], False, False, False
            while True:
                if c == ":":
                    colon = True
                if c == ")" and geo:
                    geo = False
                buf.append(c)
                i += 1
                c = q[i] if i < size else "\0"
                if c == "`":
                    in_tick = not in_tick
                if colon and c == "(":
                    geo, colon = True, False
                elif colon and c != " ":
                    colon = False
                nxt = q[i + 1] if i + 1 < size else "\0"
                if not (
                    i < size
                    and (
                        in_tick
                        or geo
                        or (c not in "()" and not (c == "&" and nxt == "&") and not (c == "|" and nxt == "|"))
                    )
                ):
                    break
            tokens.append("".join(buf).strip())
    return tokens


def split_values(s: str) -> list[str]:
    """Typesense 0.24 ``split_to_values``."""
    out, buf, inside = [], "", False
    for i, c in enumerate(s):
        escaped = i != 0 and c == "`" and s[i - 1] == "\\"
        if c == "`":
            if escaped:
                buf += c
            elif inside and buf:
                inside = False
            else:
                inside = True
        elif c == "," and not inside:
            out.append(buf.strip())
            buf = ""
        else:
            buf += c
    if buf:
        out.append(buf.strip())
    return out


def clause_values(token: str, field: str) -> list[str]:
    assert token.startswith(field + ":=") or token.startswith(field + ":!=")
    body = token.split("=", 1)[1].strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    return split_values(body)


def expected(value: str) -> str:
    return " ".join(value.replace("`", "").replace("\\", "").replace(":", "").split())


texts = st.text(alphabet=st.sampled_from([*"ab `\\&|(),[]:=!<>'’\"-*é\n\tx"]), min_size=0, max_size=24) | st.text(
    max_size=40
)


@settings(max_examples=500, deadline=None)
@given(st.lists(texts, min_size=1, max_size=4), texts)
def test_arbitrary_values_stay_inside_their_clause(values: list[str], other: str) -> None:
    if not all(expected(v) for v in values) or not expected(other):
        with pytest.raises(FilterError):
            build_filter([Filter("partner", values), Filter("themes", other)])
        return
    built = build_filter([Filter("partner", values), Filter("themes", other, negate=True)])
    tokens = tokenize(built)
    assert tokens[0] == "(" and tokens[2:5] == [")", "&&", "("] and tokens[6] == ")" and len(tokens) == 7, built
    assert clause_values(tokens[1], "partner") == list(dict.fromkeys(expected(v) for v in values))
    assert clause_values(tokens[5], "themes") == [expected(other)]


@given(texts)
def test_single_value_is_one_token(value: str) -> None:
    if not expected(value):
        with pytest.raises(FilterError):
            quote(value)
        return
    built = build_filter([Filter("stage", value)])
    assert tokenize(built) == [built]
    assert clause_values(built, "stage") == [expected(value)]


def test_escaped_backtick_would_have_been_injectable() -> None:
    # Why we strip instead of escaping: the tokenizer splits this "escaped" value.
    naive = "partner:=`x\\` || id:!=x || partner:=\\`y`"
    assert "||" in tokenize(naive)
    safe = build_filter([Filter("partner", "x` || id:!=x || partner:=`y")])
    assert tokenize(safe) == [safe]


def test_field_names_are_whitelisted() -> None:
    for name in ("title", "nope", "partner || id", "themes:=`EDU` || x", ""):
        with pytest.raises(FilterError):
            build_filter([Filter(name, "EDU")])


def test_kinds_are_checked() -> None:
    with pytest.raises(FilterError):
        build_filter([Range("themes", 1, 2)])
    with pytest.raises(FilterError):
        build_filter([GeoRadius(48.0, -1.0, 5, field="themes")])
    with pytest.raises(FilterError):
        build_filter([Filter("created", "2020 || id:!=x")])
    with pytest.raises(FilterError):
        build_filter([Filter("created", [True])])
    assert build_filter([Filter("created", [1, 2])]) == "created:=[1, 2]"


def test_ranges() -> None:
    assert build_filter([Range("created", 10, 20)]) == "created:[10..20]"
    assert build_filter([Range("datestamp", low=5)]) == "datestamp:>=5"
    assert build_filter([Range("datestamp", high=5)]) == "datestamp:<=5"
    for bad in (Range("created"), Range("created", 3, 1), Range("created", 1.5, 2)):  # type: ignore[arg-type]
        with pytest.raises(FilterError):
            build_filter([bad])


@pytest.mark.parametrize(
    "lat,lon,km",
    [(91, 0, 1), (0, 181, 1), (float("nan"), 0, 1), (0, 0, 0), (0, 0, -1), (0, 0, float("inf")), ("48", 0, 1)],
)
def test_geo_radius_validation(lat: object, lon: object, km: object) -> None:
    with pytest.raises(FilterError):
        build_filter([GeoRadius(lat, lon, km)])  # type: ignore[arg-type]


def test_geo_shapes() -> None:
    assert build_filter([GeoRadius(48.1, -1.6, 10)]) == "locations:(48.1000000, -1.6000000, 10.0000000 km)"
    poly = build_filter([GeoPolygon.from_bbox(BBox(47, -2, 49, 0))])
    assert tokenize(poly) == [poly]
    with pytest.raises(FilterError):
        build_filter([GeoPolygon(((1, 1), (2, 2)))])
    with pytest.raises(ValueError):
        BBox(49, 0, 47, 1)


def test_disjunction_and_value_caps() -> None:
    built = build_filter([AnyOf((Filter("themes", "EDU"), Filter("stage", "idee")))])
    assert built == "((themes:=`EDU`) || (stage:=`idee`))"
    with pytest.raises(FilterError):
        build_filter([Filter("themes", ["x"] * 201)])
    with pytest.raises(FilterError):
        build_filter([Filter("themes", "x" * 300)])
    with pytest.raises(FilterError):
        build_filter([Filter("themes", [])])
