"""``alysctl``: look at and steer a running alysd over its control socket.

Exit codes: 0 ok, 1 the command failed (the message on stderr names what was
wrong; also when alysd refused the caller: ``PermissionDenied``), 2 usage, 3 no
daemon at that runtime dir, or its socket cannot be reached (the path tried is
named).
Human output is a table; ``--json`` prints what scripts should parse.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click
import msgspec
import zmq
from zmq.utils.monitor import recv_monitor_message

from alysd import health, zmq_bus
from alysd.control import CtlRequest, reply_decoder, request_encoder
from alysd.errors import AlysdError, NoDaemon, PermissionDenied, RemoteError
from alysd.runtime_dir import RuntimeDir, default_runtime_dir
from alysd.reload import summary
from alysd.units import format_duration, format_size, parse_duration
from alysd.versions import version_info

EXIT_FAILED = 1
EXIT_NO_DAEMON = 3
QUERY_TIMEOUT = 10.0
CHANGE_TIMEOUT = 300.0   # the daemon enforces the real deadline of start/stop/restart
DEAD_LETTER_LIMIT = 50
PAYLOAD_WIDTH = 60
HEALTH_REASON_WIDTH = 40
STATUS_COLUMNS = ("NAME", "SUPERVISOR", "STATE", "PID", "RESTARTS", "UPTIME", "RSS", "CPU%",
                  "MAILBOX", "HEALTH", "LAST EXIT")


class ControlClient:
    """One request/reply conversation with alysd's control socket."""

    def __init__(self, rundir: RuntimeDir):
        self.rundir = rundir
        self._next_id = 1

    def _probe(self) -> None:
        """Fail fast with ``NoDaemon`` when nobody listens, instead of waiting out a timeout."""
        path = self.rundir.control
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except FileNotFoundError:
            raise NoDaemon(path, "no control socket") from None
        except ConnectionRefusedError:
            raise NoDaemon(path, "stale control socket, nothing listening") from None
        except PermissionError:
            raise NoDaemon(path, "permission denied") from None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise NoDaemon(path, "no runtime dir") from None
            raise NoDaemon(path, exc.strerror or str(exc)) from None
        finally:
            probe.close()

    def call(self, command: str, args: dict | None = None, *, timeout: float = QUERY_TIMEOUT) -> Any:
        """Run ``command`` and return its decoded result; raises the daemon's typed
        error, and ``PermissionDenied`` at once when alysd refuses the connection
        (to a DEALER a refused handshake looks like silence: its monitor hears it)."""
        self._probe()
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        try:
            sock.connect(zmq_bus.ipc(self.rundir.control))
            rid = self._next_id
            self._next_id += 1
            sock.send(request_encoder.encode(CtlRequest(rid, command, args or {})))
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                ready = dict(poller.poll(remaining * 1000)) if remaining > 0 else {}
                if monitor in ready:
                    recv_monitor_message(monitor)   # the only event it reports
                    raise PermissionDenied(self._refused())
                if sock not in ready:
                    raise AlysdError(f"alysd at {self.rundir.control} did not answer "
                                     f"{command!r} within {timeout:g}s")
                reply = reply_decoder.decode(sock.recv())
                if reply.id != rid:
                    continue
                if not reply.ok:
                    raise reply.error.to_exception() if reply.error else RemoteError("failed")
                return zmq_bus.decode_any(reply.result)
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close()

    def _refused(self) -> str:
        try:
            owner = f"uid {os.stat(self.rundir.path).st_uid}"
        except OSError:
            owner = "its owner"
        return (f"alysd at {self.rundir.control} refused this connection: uid {os.geteuid()} is "
                f"not alysd's user ({owner}), root, or a member of its control_group")


@contextlib.contextmanager
def _exit_on_error(command: str) -> Iterator[None]:
    """Turn the control client's errors into alysctl's message and exit code."""
    try:
        yield
    except NoDaemon as exc:
        click.echo(f"alysctl: {exc}", err=True)
        sys.exit(EXIT_NO_DAEMON)
    except AlysdError as exc:
        click.echo(f"alysctl: {command}: {exc}", err=True)
        sys.exit(EXIT_FAILED)


def _run(obj: dict, command: str, args: dict | None = None, timeout: float = QUERY_TIMEOUT) -> Any:
    with _exit_on_error(command):
        return ControlClient(obj["rundir"]).call(command, args, timeout=timeout)


def _echo_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--runtime-dir", type=click.Path(file_okay=False, readable=False), default=None,
              help="alysd's runtime dir (default: $ALYSD_RUNTIME_DIR, $RUNTIME_DIRECTORY, "
                   "/run/alysd as root, else $XDG_RUNTIME_DIR/alysd).")
@click.pass_context
def main(ctx: click.Context, runtime_dir: str | None) -> None:
    """Look at and steer a running alysd."""
    ctx.obj = {"rundir": RuntimeDir(runtime_dir or default_runtime_dir())}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per actor.")
@click.pass_obj
def status(obj: dict, as_json: bool) -> None:
    """Show the system's health, then every actor: state, pid, restarts, resources, health."""
    rows = _run(obj, "status")
    if as_json:
        _echo_json(rows)
        return
    click.echo(format_system(rows))
    click.echo(format_status(rows))


def format_system(rows: list[dict]) -> str:
    """The system line: "system: degraded (2/3 actors running)", the health being
    ``health.aggregate`` over every actor's."""
    running = sum(r["state"] == "running" for r in rows)
    return (f"system: {health.aggregate(r['health'] for r in rows)} "
            f"({running}/{len(rows)} actors running)")


def format_status(rows: list[dict]) -> str:
    """The human status table."""
    return format_table([STATUS_COLUMNS, *([cells[c] for c in STATUS_COLUMNS]
                                           for cells in map(status_cells, rows))])


def status_cells(row: dict) -> dict[str, str]:
    """One actor's status row as table cells keyed by column title, "-" where a
    value is unknown; shared by ``status`` and ``top``."""
    return {
        "NAME": _cell(row["name"]),
        "SUPERVISOR": row["supervisor"],
        "STATE": row["state"],
        "PID": str(row["pid"]) if row["pid"] else "-",
        "RESTARTS": str(row["restarts"]),
        "UPTIME": format_duration(row["uptime_s"]) if row["uptime_s"] is not None else "-",
        "RSS": format_size(row["rss_bytes"]) if row["rss_bytes"] is not None else "-",
        "CPU%": f"{row['cpu_percent']:.1f}" if row["cpu_percent"] is not None else "-",
        "MAILBOX": str(row["mailbox_depth"]),
        "HEALTH": _describe_health(row),
        "LAST EXIT": _describe_exit(row["last_exit"]),
    }


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as aligned columns, two spaces apart, no trailing blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def _describe_health(row: dict) -> str:
    """The actor's health, and its reason (escaped, cut to ``HEALTH_REASON_WIDTH``)
    when it is not healthy: a healthy actor's reason says nothing new."""
    reason = row.get("health_reason")
    if not reason or row["health"] == health.HEALTHY:
        return row["health"]
    return f"{row['health']} ({truncate(_cell(reason), HEALTH_REASON_WIDTH)})"


def _describe_exit(last: dict | None) -> str:
    if not last:
        return "-"
    if last.get("signal"):
        return f"{last['reason']} {last['signal']}"
    if last.get("code") is not None:
        return f"{last['reason']} ({last['code']})"
    return last["reason"]


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
@click.pass_obj
def tree(obj: dict, as_json: bool) -> None:
    """Draw the supervision tree."""
    root = _run(obj, "tree")
    if as_json:
        _echo_json(root)
        return
    click.echo("\n".join(draw_tree(root)))


def draw_tree(node: dict, prefix: str = "", last: bool = True, top: bool = True) -> list[str]:
    """Lines of the tree drawing, box-drawing characters as in ``tree(1)``."""
    if node["kind"] == "supervisor":
        label = f"{node['name']} ({node['strategy']})"
    else:
        pid = f" pid {node['pid']}" if node["pid"] else ""
        label = f"{node['name']} [{node['state']}{pid}] ({node['strategy']})"
    lines = [label if top else f"{prefix}{'└── ' if last else '├── '}{label}"]
    kids = node.get("children", [])
    inner = "" if top else prefix + ("    " if last else "│   ")
    for i, kid in enumerate(kids):
        lines += draw_tree(kid, inner, i == len(kids) - 1, False)
    return lines


@main.command()
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, metavar="SECONDS",
              help="Seconds between refreshes, over which MSG/S is measured.")
@click.option("--once", is_flag=True,
              help="Print one plain frame and exit (what happens when not on a terminal).")
@click.pass_obj
def top(obj: dict, interval: float, once: bool) -> None:
    """A live view of every actor, like top(1); q or Ctrl-C quits."""
    # Imported here, not above: alysd.top builds on this module's table helpers.
    from alysd import top as live_view
    fetch = functools.partial(ControlClient(obj["rundir"]).call, "status")
    with _exit_on_error("status"):
        if once or not (sys.stdin.isatty() and sys.stdout.isatty()):
            width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
            click.echo(live_view.one_frame(fetch, interval, width=width))
        else:
            live_view.run_live(fetch, interval)


def _change(obj: dict, command: str, name: str) -> None:
    rows = _run(obj, command, {"name": name}, timeout=CHANGE_TIMEOUT)
    for r in rows:
        pid = f" (pid {r['pid']})" if r["pid"] else ""
        click.echo(f"{r['name']}: {r['state']}{pid}")


@main.command()
@click.argument("name")
@click.pass_obj
def restart(obj: dict, name: str) -> None:
    """Restart an actor (or every actor under a supervisor); returns once it is ready."""
    _change(obj, "restart", name)


@main.command()
@click.argument("name")
@click.pass_obj
def stop(obj: dict, name: str) -> None:
    """Stop an actor; it stays stopped until `alysctl start`."""
    _change(obj, "stop", name)


@main.command()
@click.argument("name")
@click.pass_obj
def start(obj: dict, name: str) -> None:
    """Start a stopped actor; returns once it is ready."""
    _change(obj, "start", name)


@main.command()
@click.argument("name")
@click.pass_obj
def reset(obj: dict, name: str) -> None:
    """Close an actor's open circuit breaker (and forget its backoff) and start it."""
    _change(obj, "reset", name)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--network-key", is_flag=True,
              help="Write a network's HMAC key (network.network_key_file) instead.")
def keygen(path: str, network_key: bool) -> None:
    """Write a new CURVE key pair for a TCP endpoint: PATH (the secret key,
    readable by its owner only) and PATH.pub; print the public key, the value
    peers list in network.curve_clients and network.peers. With --network-key,
    write instead a network's HMAC key (network.network_key_file: every node of
    the network holds a copy, 0600). Never overwrites a key."""
    with _exit_on_error("keygen"):
        if network_key:
            from alysd.seal import generate_network_key
            generate_network_key(path)
            click.echo(f"wrote a network key to {path}: copy it to every node of the network "
                       "(mode 0600)")
            return
        from alysd.curve import generate_keypair   # zmq.auth: only this command needs it
        click.echo(generate_keypair(path))


@main.command()
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def reload(obj: dict, dry_run: bool, as_json: bool) -> None:
    """Load the configuration again and apply what changed.

    Returns once the affected actors are healthy. Exit 1 when the new
    configuration is refused (nothing changed), or when it failed and was
    rolled back.
    """
    report = _run(obj, "reload", {"dry_run": dry_run}, timeout=CHANGE_TIMEOUT)
    if as_json:
        _echo_json(report)
    else:
        click.echo(format_reload(report))


def format_reload(report: dict) -> str:
    """What a reload changed (or would change, for a dry run)."""
    source = report.get("config") or "the configuration"
    head = {"applied": f"reloaded {source} in {report.get('seconds', 0):.3f}s",
            "unchanged": f"no change: {source} matches the running configuration",
            "dry_run": f"dry run of {source} (nothing changed)"}[report["outcome"]]
    lines = [head] + [f"  {line}" for line in summary(report)]
    return "\n".join(lines)


@main.command()
@click.argument("name")
@click.argument("payload", metavar="JSON")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Seconds to wait for the reply.")
@click.pass_obj
def send(obj: dict, name: str, payload: str, timeout: float) -> None:
    """Send JSON to actor NAME as a request and print its reply as JSON.

    Pass - as JSON to read the payload from standard input.
    """
    reply = _run(obj, "send", {"name": name, "payload": _json_payload(payload),
                               "timeout": timeout}, timeout=timeout + 5.0)
    _echo_json(reply)


@main.command()
@click.argument("name")
@click.argument("payload", metavar="JSON")
@click.pass_obj
def tell(obj: dict, name: str, payload: str) -> None:
    """Send JSON to actor NAME as a one-way message; print its message id.

    Answers once the message is handed to the actor, not once it is handled.
    Pass - as JSON to read the payload from standard input.
    """
    click.echo(_run(obj, "tell", {"name": name, "payload": _json_payload(payload)})["message_id"])


def _json_payload(payload: str) -> Any:
    text = sys.stdin.read() if payload == "-" else payload
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="JSON") from None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def version(obj: dict, as_json: bool) -> None:
    """Print the versions of alysctl and, when one is running, of the daemon."""
    info: dict[str, Any] = {"alysctl": version_info()}
    try:
        info["daemon"] = ControlClient(obj["rundir"]).call("version")
    except NoDaemon as exc:
        info["daemon"] = None
        click.echo(f"alysctl: {exc}", err=True)
    except AlysdError as exc:
        click.echo(f"alysctl: version: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if as_json:
        _echo_json(info)
        return
    for who, data in info.items():
        if data is None:
            click.echo(f"{who}: not running")
            continue
        click.echo(f"{who}: " + ", ".join(f"{k} {v}" for k, v in data.items() if v is not None))


# --- dead letters -------------------------------------------------------------------------

@main.group("dead-letters", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help=f"Show the newest N dead letters (default {DEAD_LETTER_LIMIT}).")
@click.pass_context
def dead_letters(ctx: click.Context, as_json: bool, limit: int | None) -> None:
    """List the dead letters, newest first; or replay or purge them."""
    if ctx.invoked_subcommand is not None:
        if as_json or limit is not None:
            raise click.UsageError(f"--json and --limit apply to the listing, not to "
                                   f"{ctx.invoked_subcommand!r}")
        return
    result = _run(ctx.obj, "dead_letters", {"limit": limit or DEAD_LETTER_LIMIT})
    if as_json:
        _echo_json(result)
        return
    click.echo(format_dead_letters(result))


@dead_letters.command()
@click.argument("letter_id", metavar="ID", type=click.IntRange(min=1))
@click.pass_obj
def replay(obj: dict, letter_id: int) -> None:
    """Send dead letter ID to its target again, as a new message."""
    result = _run(obj, "dead_letters_replay", {"id": letter_id})
    click.echo(f"re-sent dead letter {result['id']} to {_cell(result['target'])} "
               f"as message {result['message_id']}")


@dead_letters.command()
@click.pass_obj
def purge(obj: dict) -> None:
    """Delete every dead letter."""
    result = _run(obj, "dead_letters_purge")
    click.echo(f"purged {_plural(result['purged'], 'dead letter')}")


def format_dead_letters(result: dict) -> str:
    """The human dead-letter table and its footer line."""
    letters, count, evicted = result["letters"], result["count"], result["evicted"]
    if not letters:
        return "no dead letters" + (f" ({evicted} evicted)" if evicted else "")
    table = [("ID", "TIME", "REASON", "SENDER", "TARGET", "MSG ID", "PAYLOAD", "DETAIL")]
    for letter in letters:
        table.append((
            str(letter["id"]), format_time(letter["time"]), _cell(letter["reason"]),
            _cell(letter["sender"]), _cell(letter["target"]), str(letter["message_id"]),
            format_payload(letter), _cell(letter["detail"]) if letter["detail"] else "-",
        ))
    footer = f"{_plural(count, 'dead letter')} ({evicted} evicted)"
    if len(letters) < count:
        footer += f", the newest {len(letters)} shown"
    return format_table(table) + "\n" + footer


def format_time(at: float | None) -> str:
    """A wall-clock time as local ISO 8601 to the second ("-" when unknown)."""
    if not at:
        return "-"
    return datetime.datetime.fromtimestamp(at).isoformat(timespec="seconds")


def format_payload(letter: dict, width: int = PAYLOAD_WIDTH) -> str:
    """A described letter's payload as compact JSON, cut to ``width`` characters."""
    if letter.get("payload_error"):
        text = "(undecodable)"
    else:
        text = _cell(msgspec.json.encode(letter["payload"]).decode())
    return truncate(text, width)


def truncate(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` characters, else cut to exactly ``width``
    (at least one) ending in "…"."""
    return text if len(text) <= width else text[:max(width, 1) - 1] + "…"


def _cell(text: str) -> str:
    """``text`` with control characters escaped: names and payloads come from the
    wire and must not steer the operator's terminal or break the table."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# --- message filters ----------------------------------------------------------------------

class Duration(click.ParamType):
    """A duration as the config spells it ("100ms", "2s"), in seconds; > 0."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail(f"must be longer than 0s, got {value!r}", param, ctx)
        return seconds


@main.group("filter")
def filter_group() -> None:
    """Drop, delay or duplicate matching messages (fault injection).

    A filter matches by sender, receiver and message type; an unset one matches
    anything, and a trailing * matches a prefix.
    """


@filter_group.command("add")
@click.option("--from", "sender", metavar="NAME", help="Only messages from this actor.")
@click.option("--to", "receiver", metavar="NAME", help="Only messages to this actor.")
@click.option("--type", "message_type", metavar="T",
              help="Only messages of this type: an event type, or the payload's type tag.")
@click.option("--drop", is_flag=True,
              help="Drop matching messages (they are dead-lettered as filtered).")
@click.option("--delay", type=Duration(), metavar="DURATION",
              help='Deliver matching messages this much later, e.g. "100ms".')
@click.option("--duplicate", is_flag=True, help="Deliver matching messages twice.")
@click.option("--rate", type=click.FloatRange(0, 1, min_open=True), default=1.0, metavar="R",
              show_default=True, help="The fraction of matching messages affected.")
@click.pass_obj
def filter_add(obj: dict, sender: str | None, receiver: str | None, message_type: str | None,
               drop: bool, delay: float | None, duplicate: bool, rate: float) -> None:
    """Install a filter: exactly one of --drop, --delay DURATION, --duplicate."""
    actions = [name for name, chosen in (("drop", drop), ("delay", delay is not None),
                                         ("duplicate", duplicate)) if chosen]
    if len(actions) != 1:
        given = f" (got {' and '.join('--' + a for a in actions)})" if actions else ""
        raise click.UsageError(
            f"give exactly one action: --drop, --delay DURATION or --duplicate{given}")
    result = _run(obj, "filter_add", {
        "sender": sender, "receiver": receiver, "message_type": message_type,
        "action": actions[0], "rate": rate, "delay": delay})
    click.echo(f"added filter {result['id']}")


@filter_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.pass_obj
def filter_list(obj: dict, as_json: bool) -> None:
    """Show the installed filters and how many messages each matched."""
    result = _run(obj, "filter_list")
    if as_json:
        _echo_json(result)
        return
    click.echo(format_filters(result))


@filter_group.command("remove")
@click.argument("filter_id", metavar="ID", type=click.IntRange(min=1), required=False)
@click.option("--all", "remove_all", is_flag=True, help="Remove every filter.")
@click.pass_obj
def filter_remove(obj: dict, filter_id: int | None, remove_all: bool) -> None:
    """Remove filter ID, or every filter with --all."""
    if (filter_id is not None) == remove_all:
        raise click.UsageError("give a filter ID or --all (not both)")
    result = _run(obj, "filter_remove", {"id": filter_id, "all": remove_all})
    if filter_id is not None and not result["removed"]:
        click.echo(f"alysctl: filter remove: no filter {filter_id}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"removed {_plural(result['removed'], 'filter')}")


def format_filters(result: dict) -> str:
    """The human filter table ("no filters" when there is none)."""
    filters = result["filters"]
    if not filters:
        return "no filters"
    table = [("ID", "FROM", "TO", "TYPE", "ACTION", "RATE", "MATCHED")]
    for f in filters:
        action = f["action"]
        if f.get("delay") is not None:
            action += " " + format_duration(f["delay"])
        table.append((str(f["id"]), _cell(f["sender"] or "*"), _cell(f["receiver"] or "*"),
                      _cell(f["message_type"] or "*"), action, f"{f['rate']:g}",
                      str(f["matched"])))
    return format_table(table)




@main.group("chaos")
def chaos() -> None:
    """Break a running tree on purpose, and check that it recovers (alysd.chaos)."""


@chaos.command("run")
@click.argument("scenario_path", metavar="SCENARIO.toml", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--seed", type=int, default=None, help="Seed of the random choices (targets).")
@click.pass_obj
def chaos_run(obj: dict, scenario_path: str, as_json: bool, seed: int | None) -> None:
    """Run the faults of SCENARIO.toml against the daemon and report how it
    recovered; exit 1 when an invariant failed (the report says which)."""
    from alysd.chaos import format_report, parse_scenario
    from alysd.chaos_run import run

    with _exit_on_error("chaos run"):
        try:
            with open(scenario_path, encoding="utf-8") as src:
                scenario = parse_scenario(src.read(), scenario_path)
        except OSError as exc:
            raise click.BadParameter(f"cannot read it: {exc.strerror}",
                                     param_hint="SCENARIO.toml") from None
        report = run(scenario, obj["rundir"], seed=seed)
    if as_json:
        _echo_json(msgspec.to_builtins(report))
    else:
        click.echo(format_report(report))
    if report.failures:
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("name", required=False)
@click.option("-n", "lines", type=click.IntRange(min=0), default=50, show_default=True,
              help="How many of the latest lines.")
@click.option("-f", "--follow", is_flag=True, help="Then print new lines as they come.")
@click.pass_obj
def logs(obj: dict, name: str | None, lines: int, follow: bool) -> None:
    """What actor NAME (or every actor, interleaved) wrote to its stdout and
    stderr: the latest lines alysd keeps ([logging] buffer_lines per actor)."""
    result = _run(obj, "logs", {"name": name, "lines": lines})
    _print_output(result["lines"], with_actor=name is None)
    last = result["last"]
    try:
        while follow:
            time.sleep(FOLLOW_INTERVAL)
            result = _run(obj, "logs", {"name": name, "after": last})
            _print_output(result["lines"], with_actor=name is None)
            last = result["last"]
    except KeyboardInterrupt:
        pass


FOLLOW_INTERVAL = 0.2


def _print_output(lines: list[dict], with_actor: bool) -> None:
    for entry in lines:
        click.echo(f"{entry['actor']}[{entry['pid']}]: {entry['line']}" if with_actor
                   else entry["line"])


@main.command()
@click.argument("dest", type=click.Path(file_okay=False))
@click.pass_obj
def backup(obj: dict, dest: str) -> None:
    """Copy alysd's durable state (its LMDB environments) to DEST, online.

    Restore: stop alysd, copy DEST/NAME back over STATE_DIR/NAME, start it.
    """
    from alysd.backup import backup as copy_state

    info = _run(obj, "version")
    with _exit_on_error("backup"):
        sizes = copy_state(info["state_dir"], dest)
    for name, size in sizes.items():
        click.echo(f"{name}: {size} bytes")
    click.echo(f"backed up {len(sizes)} environments of {info['state_dir']} to {dest}")


if __name__ == "__main__":
    main()
