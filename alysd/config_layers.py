"""Where the configuration comes from: defaults, the file, ALYS_* variables, --set flags.

``load_layered(sources)`` reads the TOML file, merges onto it the environment
variables and then the ``--set`` flags (each later layer wins), validates the
result once, and returns the :class:`Config` with the origin of every key:
"default", "file", "env ALYS_X__Y" or "flag --set a.b=c".

* File: ``--config PATH``, else ``$ALYS_CONFIG_PATH``, else ``./alys.toml``
  if it exists, else ``/etc/alysd/alys.toml`` if it exists (``discover``);
  ``alysd --dev`` uses the bundled development config instead.
* Environment: ``ALYS_ENVIRONMENT`` sets ``environment``;
  ``ALYS_<A>__<B>[__<C>...]`` sets the key ``a.b.c`` (lowercased; "-" in an
  actor's name may be written as is). Other ALYS_ variables are ignored:
  Kubernetes itself defines ``ALYS_SERVICE_HOST``, ``ALYS_PORT`` ... for a
  service named alys, and none of them has "__".
* Flags: ``--set a.b.c=VALUE``, in the order given.

Choices that are not obvious from the code:

* Layers are merged as raw TOML data (tables deep-merged, arrays and scalars
  replaced) and validated once, so every issue of the result is reported at
  once, each naming where its value came from.
* A value is a TOML literal when it parses as one (``5``, ``true``,
  ``["a", "b"]``, ``"quoted"``), else the text itself (``2s``, ``1GiB``,
  ``127.0.0.1:9615``). Hexadecimal, octal and binary integers are taken as
  text: ``0x``-prefixed values here are addresses and keys, never numbers.
  Surrounding whitespace is dropped (quote a value to keep it).
* Environment variables and flags change the entries of ``[supervisors]`` and
  ``[actors]`` but never add one: the tree's shape is the file's, and a
  mistyped actor name is an error rather than a new, half-configured actor.
* A later layer setting one of two alias keys (``system.log_level`` /
  ``logging.level``, ``max_mailbox_size`` / ``mailbox.capacity``) replaces
  the other one set by an earlier layer, instead of conflicting with it.
* Environment variables are applied in the order of their names, so a
  variable setting a table comes before one setting a key inside it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import msgspec

from alysd.config import (Config, config_document, config_from_dict, parse_toml,
                          read_config_file)
from alysd.config_checks import BARE_KEY, key_path, redact
from alysd.errors import ConfigError, ConfigIssue
from alysd.node_sections import SECRET_KEYS

ENV_PREFIX = "ALYS_"
CONFIG_PATH_VAR = "ALYS_CONFIG_PATH"
ENVIRONMENT_VAR = "ALYS_ENVIRONMENT"
LOCAL_CONFIG = "alys.toml"
SYSTEM_CONFIG = "/etc/alysd/alys.toml"

DEFAULT = "default"
FILE = "file"

KeyPath = tuple[str, ...]


def _printable(text: str) -> str:
    """``text`` on one line: escaped (as a JSON string) if it holds control characters."""
    return text if text.isprintable() else json.dumps(text, ensure_ascii=False)


def dev_config_path() -> str:
    """The development config bundled with the package."""
    return str(resources.files("alysd").joinpath("conf/dev.toml"))


class Override(msgspec.Struct, frozen=True):
    """One ``--set`` flag: the key path and the value's text."""

    path: KeyPath
    value: str

    @property
    def origin(self) -> str:
        """The origin 'flag --set KEY=VALUE', the value hidden where it may be a secret."""
        value = "***" if self.path[-1] in SECRET_KEYS else redact(self.value.strip())
        return f"flag --set {'.'.join(self.path)}={_printable(value)}"


def parse_override(text: str) -> Override:
    """``a.b.c=VALUE`` as an Override; ValueError when malformed."""
    key, equals, value = text.partition("=")
    path = tuple(part.strip() for part in key.split("."))
    if not (equals and all(BARE_KEY.fullmatch(part) for part in path)):
        raise ValueError(f"expected KEY=VALUE with a dotted key, such as "
                         f"chain.slot_duration=2s; got {text!r}")
    return Override(path, value)


class ConfigSources(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a configuration is built from, captured once at start so that
    a reload reads the file again with the same variables and flags.

    ``path`` is the TOML file, None for the bundled development config;
    ``env`` the ALYS_* variables as (name, value) pairs sorted by name;
    ``overrides`` the ``--set`` flags in the order given.
    """

    path: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    overrides: tuple[Override, ...] = ()

    @classmethod
    def capture(cls, path: str | None, environ: Mapping[str, str],
                overrides: Iterable[str] = ()) -> ConfigSources:
        """Sources from a file path (None: bundled dev config), the process
        environment (only ALYS_* is kept) and ``--set`` texts; ValueError
        naming a malformed ``--set``."""
        return cls(path=None if path is None else os.path.abspath(path),
                   env=tuple(sorted((name, value) for name, value in environ.items()
                                    if name.startswith(ENV_PREFIX))),
                   overrides=tuple(parse_override(text) for text in overrides))


def discover(explicit: str | None, environ: Mapping[str, str], cwd: str | None = None) -> str:
    """The config file: ``explicit`` (--config), else $ALYS_CONFIG_PATH, else
    ./alys.toml if it is a file, else /etc/alysd/alys.toml if it is one.

    Raises ConfigError naming the places looked at when there is none.
    """
    if explicit:
        return explicit
    if environ.get(CONFIG_PATH_VAR):
        return environ[CONFIG_PATH_VAR]
    local = os.path.join(cwd or os.getcwd(), LOCAL_CONFIG)
    for candidate in (local, SYSTEM_CONFIG):
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError([ConfigIssue("", f"no configuration file: give --config PATH or set "
                                   f"{CONFIG_PATH_VAR} (looked for {local} and {SYSTEM_CONFIG})")])


def env_key(name: str) -> KeyPath | None:
    """The key path an environment variable sets, or None if it sets none."""
    if name == ENVIRONMENT_VAR:
        return ("environment",)
    rest = name.removeprefix(ENV_PREFIX)
    if rest == name or "__" not in rest:
        return None
    return tuple(rest.lower().split("__"))


_NON_DECIMAL = re.compile(r"[+-]?0[xob]")


def literal(text: str) -> Any:
    """The value written in ``text``: a TOML literal when it is one (hex, octal
    and binary integers excepted), else the text; surrounding whitespace dropped."""
    text = text.strip()
    if _NON_DECIMAL.match(text):
        return text
    try:
        parsed = tomllib.loads("v = " + text)
    except (ValueError, RecursionError):
        return text
    return parsed["v"] if list(parsed) == ["v"] else text


class Layered(msgspec.Struct, frozen=True):
    """A validated Config and where each of its keys came from.

    ``origins`` maps the dotted path of every key of ``config_document(config)``
    (and of every key a layer set, aliases included) to "default", "file",
    "env NAME" or "flag --set TEXT".
    """

    config: Config
    origins: dict[str, str]

    def origin(self, path: str) -> str:
        return self.origins.get(path, DEFAULT)


# --- merging

_ENTRY_TABLES = {"supervisors": "supervisor", "actors": "actor"}
# Pairs of alias keys ("*": any entry name).
_ALIASES: tuple[tuple[KeyPath, KeyPath], ...] = (
    (("system", "log_level"), ("logging", "level")),
    (("actors", "*", "max_mailbox_size"), ("actors", "*", "mailbox", "capacity")),
)


def _aliases_of(path: KeyPath) -> list[KeyPath]:
    """The other spellings of the key at ``path``."""
    found = []
    for first, second in _ALIASES:
        for this, other in ((first, second), (second, first)):
            if len(path) == len(this) and all(want in ("*", part)
                                              for part, want in zip(path, this)):
                name = next((part for part, want in zip(path, this) if want == "*"), "")
                found.append(tuple(name if part == "*" else part for part in other))
    return found


class _Merge:
    """The raw document being layered, the origin of each key set, and the
    issues of the layers themselves."""

    def __init__(self, document: dict[str, Any]):
        self.document = document
        self.origins: dict[KeyPath, str] = {}
        self.issues: list[ConfigIssue] = []
        self._record((), document, FILE)

    def _record(self, path: KeyPath, value: Any, origin: str) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                self._record(path + (key,), item, origin)
        elif path:
            self.origins[path] = origin

    def _forget(self, path: KeyPath) -> None:
        for known in [known for known in self.origins if known[:len(path)] == path]:
            del self.origins[known]

    def _remove(self, path: KeyPath) -> None:
        parent = self.document
        for part in path[:-1]:
            parent = parent.get(part)
            if not isinstance(parent, dict):
                return
        if path[-1] in parent:
            del parent[path[-1]]
            self._forget(path)

    def set(self, path: KeyPath, value: Any, origin: str) -> None:
        """Set ``path`` to ``value`` as a later layer: a table is merged into the
        table there, anything else replaces what is there."""
        if path[0] in _ENTRY_TABLES and len(path) == 1 and isinstance(value, dict):
            for name, entry in value.items():  # entries are checked one by one
                self.set(path + (name,), entry, origin)
            return
        if path[0] in _ENTRY_TABLES and len(path) > 1:
            entries = self.document.get(path[0])
            if not (isinstance(entries, dict) and path[1] in entries):
                self.issues.append(ConfigIssue(
                    key_path(*path[:2]), f"no {_ENTRY_TABLES[path[0]]} named {path[1]!r} in "
                    f"the config file (from {origin})"))
                return
        parent = self.document
        for depth, part in enumerate(path[:-1], 1):
            if not isinstance(parent.get(part), dict):
                self._forget(path[:depth])  # a value replaced by a table
                parent[part] = {}
            parent = parent[part]
        last = path[-1]
        if isinstance(value, dict) and value:
            if not isinstance(parent.get(last), dict):
                self._forget(path)
                parent[last] = {}
            for key, item in value.items():
                self.set(path + (key,), item, origin)
            return
        self._forget(path)
        parent[last] = value
        self.origins[path] = origin
        for alias in _aliases_of(path):
            self._remove(alias)


def _env_layer(env: Iterable[tuple[str, str]]) -> tuple[list[tuple[KeyPath, Any, str]],
                                                        list[ConfigIssue]]:
    """(path, value, origin) per variable that sets a key, in name order; two
    variables setting one key (their names differ in case) to different
    values are an issue."""
    settings: list[tuple[KeyPath, Any, str]] = []
    issues: list[ConfigIssue] = []
    first: dict[KeyPath, tuple[str, str]] = {}
    for name, text in sorted(env):
        path = env_key(name)
        if path is None:
            continue
        if path in first:
            other, other_text = first[path]
            if other_text != text:
                issues.append(ConfigIssue(key_path(*path), f"set by both env {_printable(other)} "
                                          f"and env {_printable(name)}, to different values"))
            continue
        first[path] = (name, text)
        settings.append((path, literal(text), f"env {_printable(name)}"))
    return settings, issues


def _within(path: str, table: str) -> bool:
    """Whether the key at ``path`` is the key ``table`` or inside it."""
    return path.startswith(table) and path[len(table):len(table) + 1] in ("", ".", "[")


def _located(issue: ConfigIssue, origins: dict[str, str]) -> ConfigIssue:
    """``issue`` naming the variable or flag that set its key (or a table
    holding it), or else the one that set the keys inside it, when none of
    those came from the file."""
    owners = [path for path in origins if _within(issue.path, path)]
    if owners:
        origin = origins[max(owners, key=len)]
    else:
        inside = [origins[path] for path in origins if _within(path, issue.path)]
        origin = inside[0] if inside and FILE not in inside else FILE
    if origin == FILE:
        return issue
    return ConfigIssue(issue.path, f"{issue.message} (from {origin})")


def _leaves(document: dict[str, Any], path: KeyPath = ()) -> Iterable[KeyPath]:
    for key, value in document.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + (key,))
        else:
            yield path + (key,)


def _origin_of(path: KeyPath, origins: dict[KeyPath, str]) -> str:
    if path in origins:
        return origins[path]
    return next((origins[alias] for alias in _aliases_of(path) if alias in origins), DEFAULT)


def load_layered(sources: ConfigSources) -> Layered:
    """Build the Config of ``sources``: the file, then the environment, then the
    flags, validated once, with the origin of every key. Raises ConfigError
    listing every issue; an issue about a value set by a variable or flag says
    which one."""
    config, merge = _load(sources)
    leaves = list(_leaves(config_document(config)))
    origins = {key_path(*path): _origin_of(path, merge.origins) for path in leaves}
    tables = {path[:depth] for path in leaves for depth in range(1, len(path))}
    for path, origin in merge.origins.items():  # keys the document does not show: aliases
        if path not in tables:
            origins.setdefault(key_path(*path), origin)
    return Layered(config, origins)


def load_config_layers(sources: ConfigSources) -> Config:
    """``load_layered(sources).config`` without working out the origins (half
    the cost of a load; a reload has no use for them)."""
    return _load(sources)[0]


def _load(sources: ConfigSources) -> tuple[Config, _Merge]:
    source = sources.path or dev_config_path()
    text = read_config_file(source)
    merge = _Merge(parse_toml(text, source))
    env_settings, issues = _env_layer(sources.env)
    for path, value, origin in env_settings:
        merge.set(path, value, origin)
    for override in sources.overrides:
        merge.set(override.path, literal(override.value), override.origin)
    issues += merge.issues  # these name their origin already
    try:
        config = config_from_dict(merge.document, source, text)
    except ConfigError as e:
        origins = {key_path(*path): origin for path, origin in merge.origins.items()}
        issues += [_located(issue, origins) for issue in e.issues]
    if issues:
        raise ConfigError(issues, source)
    return config, merge


# --- showing the effective configuration

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # inf, nan and 1e+16 are TOML too
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are TOML escapes
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return "{" + ", ".join(f"{key_path(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def render_text(layered: Layered) -> str:
    """The effective configuration as TOML, each key followed by its origin
    (``key = value  # origin``), one table after another."""
    lines: list[str] = []

    def table(path: KeyPath, body: dict[str, Any]) -> None:
        for key, value in body.items():
            if not (isinstance(value, dict) and value):
                lines.append(f"{key_path(key)} = {_toml_value(value)}  "
                             f"# {layered.origin(key_path(*path, key))}")
        for key, value in body.items():
            if isinstance(value, dict) and value:
                if path or key not in _ENTRY_TABLES:  # [supervisors.NAME], not [supervisors]
                    lines.extend(["", f"[{key_path(*path, key)}]"])
                table(path + (key,), value)

    lines.append(f"# {layered.config.source}")
    table((), config_document(layered.config))
    return "\n".join(lines) + "\n"


def render_json(layered: Layered) -> str:
    """``{"source", "config", "origins", "warnings"}`` as indented JSON."""
    return msgspec.json.format(msgspec.json.encode({
        "source": layered.config.source,
        "config": config_document(layered.config),
        "origins": layered.origins,
        "warnings": list(layered.config.warnings),
    }).decode(), indent=2)


def render_errors_json(source: str | None, issues: Iterable[ConfigIssue]) -> str:
    """``{"source", "errors": [{"path", "message"}]}`` as indented JSON."""
    return json.dumps({"source": source, "errors": [{"path": issue.path, "message": issue.message}
                                                     for issue in issues]}, indent=2)
