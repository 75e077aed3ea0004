"""Checkers of single config keys, and how each value is spelled back.

A checker takes the value found in the TOML data and returns it decoded, or
raises ``ValueError`` whose message says what was expected and shows what was
found, in TOML terms; the loader puts the key path in front. An array checker
refuses item by item with ``ItemIssues``, so each bad item is reported at
``KEY[index]``. A schema maps each allowed key of a table to its checker, or
to a nested schema for a sub-table.

``spell(checker, value)`` is the inverse used to show the effective config:
the decoded value written the way the config file writes it (durations and
sizes as strings with units, addresses as "host:port", enums by value).

Values that may hold credentials (URLs) are never shown with them: a message
about a URL hides its user-info part.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from alysd.units import (DURATION_FORM, SIZE_FORM, duration_text, parse_duration, parse_size,
                         size_text)

Checker = Callable[[Any], Any]
Schema = dict[str, "Checker | Schema"]


class ItemIssues(ValueError):
    """The items of an array that were refused, as (index, message) pairs."""

    def __init__(self, items: list[tuple[int, str]]):
        self.items = items
        super().__init__("; ".join(f"item {index}: {message}" for index, message in items))


BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
"""A key TOML accepts unquoted."""


def key_path(*parts: Any) -> str:
    """Dotted key path; parts that are not TOML bare keys are quoted."""
    return ".".join(p if isinstance(p, str) and BARE_KEY.fullmatch(p)
                    else json.dumps(str(p), ensure_ascii=False) for p in parts)


def show(value: Any) -> str:
    """The found value as an operator reads it in TOML terms."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = repr(value) if isinstance(value, (str, int, float)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_SPELLINGS: dict[Checker, Callable[[Any], Any]] = {}


def spelled_as(how: Callable[[Any], Any]) -> Callable[[Checker], Checker]:
    """Register ``how`` as the way the values of a checker are spelled back."""
    def register(checker: Checker) -> Checker:
        _SPELLINGS[checker] = how
        return checker
    return register


def spell(checker: Checker | None, value: Any) -> Any:
    """``value`` (decoded by ``checker``) as the config file writes it."""
    how = _SPELLINGS.get(checker) if checker is not None else None
    if how is not None:
        return how(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [spell(None, item) for item in value]
    return value


def string(what: str) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected {what}, got {show(value)}")
        return value
    return check


def choice(options: Iterable[str], make: Callable[[str], Any] = str) -> Checker:
    options = tuple(options)

    def check(value: Any) -> Any:
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"expected one of {', '.join(options)}; got {show(value)}")
        return make(value)
    return check


def enum_of(cls: type[enum.Enum]) -> Checker:
    return choice((member.value for member in cls), cls)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {show(value)}")
    return value


def integer(minimum: int, maximum: int | None = None) -> Checker:
    what = (f"an integer >= {minimum}" if maximum is None
            else f"an integer from {minimum} to {maximum}")

    def check(value: Any) -> int:
        # bool is an int in Python but not in TOML
        if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
                or (maximum is not None and value > maximum)):
            raise ValueError(f"expected {what}, got {show(value)}")
        return value
    return check


def _finite(value: Any) -> float:
    """``value`` as a float when it is a TOML number, else NaN (never passes a bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        return math.inf


def number(bound: float, inclusive: bool) -> Checker:
    relation = ">=" if inclusive else ">"

    def check(value: Any) -> float:
        found = _finite(value)
        if not (math.isfinite(found) and (found >= bound if inclusive else found > bound)):
            raise ValueError(f"expected a number {relation} {bound:g}, got {show(value)}")
        return found
    return check


def number_between(low: float, high: float) -> Checker:
    def check(value: Any) -> float:
        found = _finite(value)
        if not low <= found <= high:  # False for NaN
            raise ValueError(f"expected a number from {low:g} to {high:g}, got {show(value)}")
        return found
    return check


def _positive(parse: Callable[[str], Any], form: str, what: str) -> Checker:
    def check(value: Any) -> Any:
        if not isinstance(value, str):  # checked here to show the value in TOML terms
            raise ValueError(f"expected {form}, got {show(value)}")
        amount = parse(value)
        if amount <= 0:
            raise ValueError(f"expected {what} > 0, got {show(value)}")
        return amount
    return check


duration = spelled_as(duration_text)(_positive(parse_duration, DURATION_FORM, "a duration"))
size = spelled_as(size_text)(_positive(parse_size, SIZE_FORM, "a size"))


def _host_port(value: Any, lowest_port: int, example: str) -> tuple[str, int]:
    text = value if isinstance(value, str) else ""
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (colon and host and port.isascii() and port.isdigit()
            and lowest_port <= int(port) <= 65535):
        raise ValueError(f'expected "host:port" such as "{example}", got {show(value)}')
    return host, int(port)


def address_text(host_port: tuple[str, int]) -> str:
    """(host, port) as "host:port" ("[::1]:port" for IPv6)."""
    host, port = host_port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@spelled_as(address_text)
def listen(value: Any) -> tuple[str, int]:
    """ "host:port" to listen on (IPv6 as "[::1]:port"); port 0 picks a free port."""
    return _host_port(value, 0, "127.0.0.1:9615")


@spelled_as(address_text)
def address(value: Any) -> tuple[str, int]:
    """ "host:port" to reach (IPv6 as "[::1]:port"); port 1 to 65535."""
    return _host_port(value, 1, "203.0.113.7:30303")


_USER_INFO = re.compile(r"(//)[^/?#]*@")


def redact(text: str) -> str:
    """``text`` with the user-info part of a URL ("user:password@") hidden."""
    return _USER_INFO.sub(r"\1***@", text)


def url(schemes: tuple[str, ...], example: str) -> Checker:
    """An absolute URL with one of ``schemes`` and a host; credentials in it are
    refused (they belong in a user name and a password file)."""
    prefixes = " or ".join(f"{scheme}://" for scheme in schemes)
    what = f'a URL ({prefixes}) such as "{example}"'

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected {what}, got {show(value)}")
        shown = show(redact(value))
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:  # an unbalanced "[" or a port out of range
            raise ValueError(f"expected {what}, got {shown}") from None
        if (parts.scheme not in schemes or not parts.hostname or port == 0
                or any(c.isspace() for c in value)):
            raise ValueError(f"expected {what}, got {shown}")
        if "@" in parts.netloc:
            raise ValueError(f"expected a URL without credentials (they belong in a password "
                             f"file), got {shown}")
        return value
    return check


def array(item: Checker, what: str, key: Callable[[Any], Any] | None = None) -> Checker:
    """An array whose every item passes ``item``, as a tuple. With ``key``, two
    items with the same ``key(decoded)`` are refused (the later one)."""
    def check(value: Any) -> tuple:
        if not isinstance(value, list):
            raise ValueError(f"expected an array of {what}, got {show(value)}")
        decoded, refused, seen = [], [], {}
        for index, found in enumerate(value):
            try:
                item_value = item(found)
            except ValueError as e:
                refused.append((index, str(e)))
                continue
            if key is not None:
                first = seen.setdefault(key(item_value), index)
                if first != index:
                    refused.append((index, f"duplicate of item {first}, got {show(found)}"))
                    continue
            decoded.append(item_value)
        if refused:
            raise ItemIssues(refused)
        return tuple(decoded)

    item_spelling = _SPELLINGS.get(item)
    if item_spelling is not None:
        _SPELLINGS[check] = lambda items: [item_spelling(one) for one in items]
    return check


def table(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"expected a table, got {show(value)}")
    return value


def refused_inline(instead: str) -> Checker:
    """A key that would hold a secret in the config file: always refused, and
    its value is never shown."""
    def check(value: Any) -> Any:
        raise ValueError(f"secrets are not accepted in the configuration: {instead}")
    return check


REFUSED: Any = object()
"""Stands for a key that was present but refused (and already reported), so
later checks can tell "refused" from "absent" and stay silent about it."""
