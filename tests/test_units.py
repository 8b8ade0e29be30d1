"""Sizes and durations typed on the command line."""

from __future__ import annotations

import pytest

from autotune._units import (
    format_bytes,
    format_percent,
    format_seconds,
    parse_bytes,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1073741824", 2**30),
        ("4GB", 4 * 10**9),
        ("4gb", 4 * 10**9),
        ("4G", 4 * 2**30),
        ("512MiB", 512 * 2**20),
        ("1.5 GiB", int(1.5 * 2**30)),
        ("100KB", 100_000),
        ("2k", 2048),
        ("64B", 64),
    ],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "GB", "4 XB", "-1GB", "0", "four"])
def test_bad_sizes_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="expected a (positive )?size"):
        parse_bytes(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300.0), ("90s", 90.0), ("5m", 300.0), ("1.5h", 5400.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5d", "m", "0s", "-5m"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="expected a (positive )?duration"):
        parse_duration(text)


def test_format_bytes_picks_the_unit() -> None:
    assert format_bytes(None) == "n/a"
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**20) == "3.0 MiB"
    assert format_bytes(int(1.5 * 2**30)) == "1.5 GiB"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (123.45, "123.5 s"),
        (9.999, "10.0 s"),
        (4.0, "4.00 s"),
        (0.45, "0.45 s"),
        (0.0342, "0.034 s"),  # a few steps of a small model: not "0.0 s"
        (0.0051, "0.0051 s"),
        (0.0, "0.00 s"),
    ],
)
def test_format_seconds_keeps_small_times_readable(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
    assert format_seconds(seconds, unit="") == text.removesuffix(" s")


@pytest.mark.parametrize(
    ("fraction", "text"),
    [(0.123, "12.3%"), (0.001, "0.1%"), (3.1e-5, "0.0031%"), (2.0e-6, "0.00020%"), (0.0, "0.0%")],
)
def test_format_percent_keeps_a_small_models_mfu_readable(fraction: float, text: str) -> None:
    """A bag-of-words model's MFU showed as 0.0%."""
    assert format_percent(fraction) == text


def test_seeds_read_as_a_range_where_consecutive() -> None:
    from autotune._units import format_seeds

    assert format_seeds([4]) == "seed 4"
    assert format_seeds([1, 2, 3]) == "seeds 1-3"
    assert format_seeds([1, 3]) == "seeds 1, 3"
    with pytest.raises(ValueError, match="at least one seed"):
        format_seeds([])
