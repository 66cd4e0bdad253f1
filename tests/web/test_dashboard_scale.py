"""The choropleth's legend says exactly which counts each shade covers."""

from __future__ import annotations

from web.dashboards import bins, shade


def test_legend_matches_the_shades() -> None:
    for top in (1, 2, 3, 7, 11, 50, 997, 100_000):
        legend = bins(top)
        covered = [n for _, lo, hi in legend for n in range(lo, min(hi, 3000) + 1)]
        assert covered == list(range(1, min(top, 3000) + 1)), top
        for k, lo, hi in legend:
            assert shade(lo, top) == k and shade(hi, top) == k
    assert shade(0, 10) == 0 and bins(0) == []
