"""The human units of the command line: sizes and durations parsed, and printed back."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = [
    "format_bytes",
    "format_names",
    "format_percent",
    "format_seconds",
    "parse_bytes",
    "parse_duration",
]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_bytes(text: str) -> int:
    """``"4GB"``, ``"4G"``, ``"512MiB"``, ``"1.5 GiB"`` or plain bytes -> bytes.

    Decimal units (KB, MB, GB, TB) are powers of 1000; binary ones (KiB, MiB, GiB, TiB)
    and bare letters (K, M, G, T, as in ``ulimit`` and Docker) are powers of 1024.

    Raises:
        ValueError: the text is not a size; the message shows accepted forms.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"expected a size such as 4GB, 512MiB or 1073741824, but got {text!r}.")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    letter = unit.rstrip("ib")  # "gib", "gb", "g" -> "g"; "b" -> ""
    decimal = bool(letter) and unit == f"{letter}b"
    value = number * (1000 if decimal else 1024) ** _POWERS[letter]
    if value < 1 or not math.isfinite(value):
        raise ValueError(f"expected a positive size, but got {text!r}.")
    return int(value)


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"5m"``, ``"1.5h"`` -> seconds.

    Raises:
        ValueError: the text is not a duration; the message shows accepted forms.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"expected a duration such as 300, 90s, 5m or 1h, but got {text!r}.")
    seconds = float(match.group(1)) * _SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, but got {text!r}.")
    return seconds


def format_seconds(value: float, unit: str = " s") -> str:
    """Seconds to a tenth from 10 (``123.4 s``), to a hundredth from 0.1 (``1.23 s``,
    ``0.45 s``), and to two significant figures below (``0.034 s``): a time to the target
    of a few steps on a small model is hundredths of a second, and ``0.0 s`` would hide it."""
    size = abs(value)
    if round(size, 2) >= 10:
        return f"{value:.1f}{unit}"
    if round(size, 2) >= 0.1 or size == 0 or not math.isfinite(size):
        return f"{value:.2f}{unit}"
    return f"{value:.{1 - math.floor(math.log10(size))}f}{unit}"


def format_percent(value: float) -> str:
    """A fraction as a percentage to a tenth (``12.3%``), and to two significant figures
    below 0.1% (``0.0031%``): a small model's MFU is thousandths of a percent, and ``0.0%``
    would hide it."""
    size = abs(value) * 100
    if round(size, 1) >= 0.1 or size == 0 or not math.isfinite(size):
        return f"{value:.1%}"
    return f"{value * 100:.{1 - math.floor(math.log10(size))}f}%"


def format_bytes(value: int | float | None) -> str:
    """Bytes in the binary unit that fits: ``1.5 GiB``, ``12.0 MiB``, ``512 B``."""
    if value is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{int(value)} B"


def format_names(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names``, comma-separated, then "and N more" for the rest."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def format_seeds(seeds: Sequence[int]) -> str:
    """``seeds`` as a reader scans them: "seed 4", "seeds 1-5" (consecutive), "seeds 1, 3".

    Raises:
        ValueError: ``seeds`` is empty.
    """
    if not seeds:
        raise ValueError("format_seeds needs at least one seed")
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    consecutive = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
    listed = f"{seeds[0]}-{seeds[-1]}" if consecutive else ", ".join(map(str, seeds))
    return f"seeds {listed}"
