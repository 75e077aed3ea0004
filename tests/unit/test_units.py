"""Tests of alysd.units: duration and size strings, and their human forms."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from alysd.units import (DURATION_UNITS, SIZE_UNITS, format_duration, format_size,
                         parse_duration, parse_size)


@pytest.mark.parametrize("text, seconds", [
    ("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1.5s", 1.5), ("1h", 3600.0),
    ("100us", 0.0001), ("100ms", 0.1), ("5 s", 5.0), ("3\tm", 180.0), ("0s", 0.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, n", [
    ("64MiB", 64 << 20), ("512MiB", 512 << 20), ("1GiB", 1 << 30), ("2TiB", 2 << 40),
    ("1KiB", 1024), ("1kB", 1000), ("3 MB", 3_000_000), ("1GB", 10**9), ("1TB", 10**12),
    ("7B", 7), ("1.5GiB", 3 << 29), ("0.1MiB", 104858),
])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", [
    "5", "-5s", "nan s", "NaNs", "inf s", "", "s", "5x", "5S", "5 sec", "1e3s", " 5s",
    "5s ", ".5s", "5.s", "+5s", "٣s", "9" * 400 + "h", 5, 1.5, None, True, b"5s",
])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError, match=r'expected a duration such as "250ms", "5s" or "2m"'):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["64", "-1MiB", "1mib", "1KB", "1 bytes", "", 64, 1.5, None])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError, match=r'expected a size such as "64MiB"'):
        parse_size(bad)


def test_refusal_names_the_value_and_the_units():
    with pytest.raises(ValueError) as info:
        parse_duration("5")
    assert str(info.value) == ('expected a duration such as "250ms", "5s" or "2m" '
                               "(units: us, ms, s, m, h), got '5'")


@pytest.mark.parametrize("seconds, text", [
    (0.25, "250ms"), (5, "5s"), (5.0, "5s"), (120, "2m"), (90, "1.5m"), (7200, "2h"),
    (0.0001, "100us"), (0, "0s"), (-0.25, "-250ms"), (1.5, "1.5s"), (math.inf, "inf"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("n, text", [
    (512 << 20, "512.0 MiB"), (100, "100 B"), (0, "0 B"), (1536, "1.5 KiB"),
    (16 << 20, "16.0 MiB"), (1 << 30, "1.0 GiB"), (3 << 40, "3.0 TiB"), (-2048, "-2.0 KiB"),
])
def test_format_size(n, text):
    assert format_size(n) == text


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(sorted(DURATION_UNITS)))
def test_integer_durations_are_exact(number, unit):
    assert parse_duration(f"{number}{unit}") == float(number * DURATION_UNITS[unit])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(sorted(SIZE_UNITS)))
def test_integer_sizes_are_exact(number, unit):
    assert parse_size(f"{number} {unit}") == number * SIZE_UNITS[unit]


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e9))
def test_format_duration_parses_back_closely(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-3)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1 << 50))
def test_format_size_parses_back_closely(n):
    assert parse_size(format_size(n)) == pytest.approx(n, rel=0.05)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12) | st.from_regex(r"-?[0-9.]{0,6} ?[A-Za-z]{0,4}", fullmatch=True))
def test_arbitrary_text_gives_a_value_or_value_error(text):
    for parse in (parse_duration, parse_size):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert value >= 0 and math.isfinite(value)
