"""The ``Accept-*`` request headers' lists of values with their quality (RFC 9110 §12.4.2, §12.5)."""

from __future__ import annotations


def qualities(header: str) -> list[tuple[str, float | None]]:
    """``(value, quality)`` of each item of an ``Accept-*`` header, in order: values lower-cased,
    quality 1.0 when the item gives none, None when its ``q`` is not a number; empty items skipped."""
    out: list[tuple[str, float | None]] = []
    for item in header.lower().split(","):
        value, _, parameters = item.partition(";")
        value = value.strip()
        if not value:
            continue
        quality: float | None = 1.0
        for parameter in parameters.split(";"):
            key, _, text = parameter.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(text.strip())
                except ValueError:
                    quality = None
        out.append((value, quality))
    return out


__all__ = ["qualities"]
