"""Durations and sizes as the configuration spells them, and back for humans.

The config format writes every duration and size as a string carrying its
unit ("250ms", "5s", "512MiB"), so a bare number is never ambiguous; the
parsers therefore refuse ints and floats. Parsing multiplies in ``Decimal``
so "100ms" gives exactly the float nearest 0.1 and "1.5GiB" an exact byte
count. Every refusal is a ``ValueError`` whose message shows the accepted form,
ready to be put in front of an operator.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

DURATION_UNITS: dict[str, Decimal] = {
    "us": Decimal("0.000001"),
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}

SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "kB": 1000, "KiB": 1 << 10,
    "MB": 1000**2, "MiB": 1 << 20,
    "GB": 1000**3, "GiB": 1 << 30,
    "TB": 1000**4, "TiB": 1 << 40,
}

# ASCII digits only (``\d`` would accept other scripts' digits); no sign, so
# negatives are refused by the same message as any other malformed text.
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)[ \t]*([A-Za-z]+)")

# What a duration / a size looks like, for messages.
DURATION_FORM = ('a duration such as "250ms", "5s" or "2m" (units: '
                  + ", ".join(DURATION_UNITS) + ")")
SIZE_FORM = ('a size such as "64MiB", "512MiB" or "1GiB" (units: '
              + ", ".join(SIZE_UNITS) + ")")


def _split(text: object, units: dict, form: str) -> tuple[Decimal, Decimal | int]:
    """Return (number, unit factor) of ``text`` or raise ValueError naming ``form``."""
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if match is None or match[2] not in units:
        raise ValueError(f"expected {form}, got {text!r}")
    return Decimal(match[1]), units[match[2]]


def parse_duration(text: str) -> float:
    """Seconds in ``text`` ("250ms", "1.5 s", "2m"); always finite and >= 0."""
    number, factor = _split(text, DURATION_UNITS, DURATION_FORM)
    seconds = float(number * factor)
    if math.isinf(seconds):
        raise ValueError(f"expected {DURATION_FORM}, got {text!r} (too large)")
    return seconds


def parse_size(text: str) -> int:
    """Bytes in ``text`` ("64MiB", "1.5 GB"), rounded to a whole byte; >= 0."""
    number, factor = _split(text, SIZE_UNITS, SIZE_FORM)
    return round(number * factor)


def format_duration(seconds: float) -> str:
    """Short human form in the largest fitting unit: "250ms", "5s", "1.5m".

    Up to three decimals are kept, so the text parses back (sign aside) to
    within 0.1% of ``seconds``.
    """
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds == 0:
        return "0s"
    magnitude = abs(seconds)
    for unit in ("h", "m", "s", "ms", "us"):
        scale = float(DURATION_UNITS[unit])
        if magnitude >= scale:
            break
    number = f"{magnitude / scale:.3f}".rstrip("0").rstrip(".")
    return f"{'-' if seconds < 0 else ''}{number}{unit}"


def format_size(n: int) -> str:
    """Human form in binary units with one decimal: "512 B", "512.0 MiB"."""
    value = float(n)
    if abs(value) < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if abs(value) < 1024:
            break
    return f"{value:.1f} {unit}"


def duration_text(seconds: float) -> str:
    """``seconds`` as the config spells it, in the largest unit that keeps it
    whole ("4s", "100ms", "6h"), else in seconds with every digit kept
    ("1.25s"); ``parse_duration`` of the result gives ``seconds`` back."""
    exact = Decimal(repr(float(seconds)))
    if not exact:
        return "0s"
    for unit in ("h", "m", "s", "ms", "us"):
        count = exact / DURATION_UNITS[unit]
        if count == count.to_integral_value():
            return f"{int(count)}{unit}"
    return f"{exact:f}s"


def size_text(n: int) -> str:
    """``n`` bytes as the config spells it, in the largest unit that divides it
    exactly ("16GiB", "1GB", "1500B"); ``parse_size`` of the result is ``n``."""
    for unit in ("TiB", "TB", "GiB", "GB", "MiB", "MB", "KiB", "kB"):
        if n and n % SIZE_UNITS[unit] == 0:
            return f"{n // SIZE_UNITS[unit]}{unit}"
    return f"{n}B"
