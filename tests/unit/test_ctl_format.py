"""Tests of alysctl: the system line, the status, dead-letter and filter tables, the tree drawing,
the control client's fast "no daemon" answer, and the command lines parsed up to
the request they send."""

import os
import socket
import threading
import time

import msgspec
import pytest
import zmq
from click.testing import CliRunner

from alysd import zmq_bus
from alysd.control import CtlReply, request_decoder, request_encoder
from alysd.ctl import (
    HEALTH_REASON_WIDTH,
    ControlClient,
    draw_tree,
    format_dead_letters,
    format_filters,
    format_payload,
    format_status,
    format_system,
    format_time,
    main,
    status_cells,
    truncate,
)
from alysd.dead_letters import DeadLetter, describe
from alysd.errors import AlysdError, CommandError, NoDaemon, UnknownActor
from alysd.exits import LastExit
from alysd.runtime_dir import RuntimeDir
from alysd.zmq_bus import ErrorInfo


def row(**over):
    base = {
        "name": "engine", "supervisor": "chain", "pid": 123, "state": "running",
        "restarts": 2, "uptime_s": 90.0, "rss_bytes": 512 << 20, "cpu_percent": 12.345,
        "mailbox_depth": 4, "health": "healthy", "health_reason": None,
        "last_exit": msgspec.to_builtins(LastExit(reason="signal", signal="SIGKILL", pid=100,
                                                  at=1.0)),
        "incarnation": 3, "handled": 10, "errors": 0, "spawned_at": 1.0, "ready_at": 1.1,
    }
    base.update(over)
    return base


# --- format_status ---------------------------------------------------------------------

def test_status_table():
    rows = [
        row(),
        row(name="sync", supervisor="root", pid=None, state="stopped", restarts=0,
            uptime_s=None, rss_bytes=None, cpu_percent=None, mailbox_depth=0, health="unknown",
            last_exit=msgspec.to_builtins(LastExit(reason="clean", code=0, pid=99, at=2.0))),
    ]
    assert format_status(rows).split("\n") == [
        "NAME    SUPERVISOR  STATE    PID  RESTARTS  UPTIME  RSS        CPU%  MAILBOX  HEALTH   LAST EXIT",
        "engine  chain       running  123  2         1.5m    512.0 MiB  12.3  4        healthy  signal SIGKILL",
        "sync    root        stopped  -    0         -       -          -     0        unknown  clean (0)",
    ]


def test_empty_status_is_just_the_header():
    assert format_status([]) == ("NAME  SUPERVISOR  STATE  PID  RESTARTS  UPTIME  RSS  CPU%  "
                                 "MAILBOX  HEALTH  LAST EXIT")


def test_columns_line_up_and_missing_values_are_dashes():
    rows = [row(name="a-very-long-actor-name", pid=None, uptime_s=None, rss_bytes=None,
                cpu_percent=None, last_exit=None),
            row(name="b", pid=7, uptime_s=0.25, rss_bytes=100, cpu_percent=0.0)]
    lines = format_status(rows).split("\n")
    assert len(lines) == 3
    header = lines[0]
    starts = [header.index(h) for h in ("STATE", "PID", "RESTARTS", "UPTIME", "RSS", "CPU%",
                                        "MAILBOX", "HEALTH", "LAST EXIT")]
    first = lines[1]
    assert [first[s] for s in starts[1:4]] == ["-", "2", "-"]      # pid, restarts, uptime
    assert first[starts[4]] == "-" and first[starts[5]] == "-"     # rss, cpu
    assert first.rstrip().endswith("healthy  -")                   # no last exit
    second = lines[2]
    assert second[starts[1]:].split()[0] == "7"
    assert second[starts[3]:].split()[0] == "250ms"
    assert second[starts[4]:starts[5]].strip() == "100 B"
    assert second[starts[5]:].split()[0] == "0.0"
    assert all(line == line.rstrip() for line in lines)


@pytest.mark.parametrize("last, text", [
    (LastExit(reason="exit_code", code=1), "exit_code (1)"),
    (LastExit(reason="start_failed", code=3), "start_failed (3)"),
    (LastExit(reason="config", code=78), "config (78)"),
    (LastExit(reason="clean", code=0), "clean (0)"),
    (LastExit(reason="signal", signal="SIGTERM"), "signal SIGTERM"),
    (LastExit(reason="start_timeout", signal="SIGKILL"), "start_timeout SIGKILL"),
    (LastExit(reason="lost"), "lost"),
])
def test_last_exit_is_described(last, text):
    out = format_status([row(last_exit=msgspec.to_builtins(last))])
    assert out.split("\n")[1].endswith("  " + text)


def test_health_reason_is_shown():
    out = format_status([row(health="degraded", health_reason="db slow")])
    assert "degraded (db slow)" in out.split("\n")[1]


def test_a_healthy_actors_reason_is_not_shown():
    assert status_cells(row(health="healthy", health_reason="stale"))["HEALTH"] == "healthy"


def test_a_long_health_reason_is_cut_and_escaped():
    cell = status_cells(row(health="unhealthy", health_reason="\x1b[2J" + "x" * 100))["HEALTH"]
    reason = truncate("\\x1b[2J" + "x" * 100, HEALTH_REASON_WIDTH)
    assert cell == f"unhealthy ({reason})" and len(reason) == HEALTH_REASON_WIDTH


@pytest.mark.parametrize("states, healths, line", [
    (["running", "running"], ["healthy", "healthy"], "system: healthy (2/2 actors running)"),
    (["running", "stopped"], ["healthy", "unknown"], "system: degraded (1/2 actors running)"),
    (["running", "running"], ["degraded", "unhealthy"],
     "system: unhealthy (2/2 actors running)"),
    ([], [], "system: healthy (0/0 actors running)"),
])
def test_system_line(states, healths, line):
    rows = [row(name=f"a{i}", state=s, health=h) for i, (s, h) in enumerate(zip(states, healths))]
    assert format_system(rows) == line


@pytest.mark.parametrize("text, width, cut", [
    ("abc", 3, "abc"), ("abcd", 3, "ab…"), ("abcd", 1, "…"), ("abcd", 0, "…"), ("", 0, ""),
])
def test_truncate(text, width, cut):
    assert truncate(text, width) == cut


# --- draw_tree ----------------------------------------------------------------------------

def actor(name, state="running", pid=None, strategy="one_for_one"):
    return {"name": name, "kind": "actor", "strategy": strategy, "state": state, "pid": pid}


def sup(name, children, strategy="one_for_one"):
    return {"name": name, "kind": "supervisor", "strategy": strategy, "children": children}


def test_tree_drawing():
    tree = sup("alys", [
        sup("chain_supervisor", [
            actor("engine", pid=123, strategy="circuit_breaker"),
            actor("sync", state="stopped"),
        ]),
        actor("monitor", pid=7),
        sup("net", [
            sup("p2p", [actor("peer", state="restarting")], strategy="rest_for_one"),
            actor("rpc", pid=8),
        ]),
    ], strategy="one_for_all")
    assert draw_tree(tree) == [
        "alys (one_for_all)",
        "├── chain_supervisor (one_for_one)",
        "│   ├── engine [running pid 123] (circuit_breaker)",
        "│   └── sync [stopped] (one_for_one)",
        "├── monitor [running pid 7] (one_for_one)",
        "└── net (one_for_one)",
        "    ├── p2p (rest_for_one)",
        "    │   └── peer [restarting] (one_for_one)",
        "    └── rpc [running pid 8] (one_for_one)",
    ]


def test_lone_supervisor_and_childless_nodes():
    assert draw_tree(sup("root", [])) == ["root (one_for_one)"]
    assert draw_tree({"name": "root", "kind": "supervisor", "strategy": "one_for_one"}) == \
        ["root (one_for_one)"]
    assert draw_tree(sup("root", [sup("empty", [])])) == ["root (one_for_one)",
                                                        "└── empty (one_for_one)"]


# --- ControlClient ------------------------------------------------------------------------

def _call_fails_fast(rundir: RuntimeDir) -> NoDaemon:
    t0 = time.monotonic()
    with pytest.raises(NoDaemon) as info:
        ControlClient(rundir).call("status")
    elapsed = time.monotonic() - t0
    assert elapsed < 0.5, f"NoDaemon took {elapsed:.2f}s"
    assert info.value.path == rundir.control
    assert rundir.control in str(info.value)
    return info.value


def test_no_control_socket(short_tmp):
    err = _call_fails_fast(RuntimeDir(short_tmp))
    assert "no control socket" in str(err)


def test_missing_runtime_dir(short_tmp):
    _call_fails_fast(RuntimeDir(os.path.join(short_tmp, "nope")))


def test_runtime_dir_is_a_file(short_tmp):
    path = os.path.join(short_tmp, "file")
    open(path, "w").close()
    err = _call_fails_fast(RuntimeDir(path))
    assert "no runtime dir" in str(err)


def test_stale_control_socket(short_tmp):
    rundir = RuntimeDir(short_tmp)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(rundir.control)
    s.close()                                   # the socket file stays, nobody listens
    assert os.path.exists(rundir.control)
    err = _call_fails_fast(rundir)
    assert "stale control socket" in str(err)


class FakeDaemon:
    """A control ROUTER that answers one request with the replies ``answer(req)`` gives."""

    def __init__(self, rundir: RuntimeDir, answer):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(zmq_bus.ipc(rundir.control))
        self.answer = answer
        self.requests = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        if not self.sock.poll(5000):
            return
        ident, data = self.sock.recv_multipart()
        req = request_decoder.decode(data)
        self.requests.append(req)
        for reply in self.answer(req):
            self.sock.send_multipart([ident, request_encoder.encode(reply)])

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(10)
        self.sock.close()
        self.ctx.term()


def test_call_returns_the_decoded_result_and_skips_other_ids(short_tmp):
    rundir = RuntimeDir(short_tmp)
    rows = [{"name": "engine", "pid": 1}]

    def answer(req):
        yield CtlReply(req.id + 1000, True, result=msgspec.Raw(zmq_bus.encode("not mine")))
        yield CtlReply(req.id, True, result=msgspec.Raw(zmq_bus.encode(rows)))

    with FakeDaemon(rundir, answer) as daemon:
        got = ControlClient(rundir).call("restart", {"name": "engine"}, timeout=5.0)
    assert got == rows
    assert [(r.command, r.args) for r in daemon.requests] == [("restart", {"name": "engine"})]


def test_call_raises_the_daemons_typed_error(short_tmp):
    rundir = RuntimeDir(short_tmp)
    info = ErrorInfo.from_exception(UnknownActor("no actor or supervisor named 'ghost'",
                                                 actor="ghost"), actor="ghost", message_id=None)

    def answer(req):
        yield CtlReply(req.id, False, error=info)

    with FakeDaemon(rundir, answer), \
            pytest.raises(UnknownActor, match="no actor or supervisor named 'ghost'") as exc:
        ControlClient(rundir).call("stop", {"name": "ghost"}, timeout=5.0)
    assert exc.value.actor == "ghost"


def test_call_times_out_when_the_daemon_does_not_answer(short_tmp):
    rundir = RuntimeDir(short_tmp)
    with FakeDaemon(rundir, lambda req: []), \
            pytest.raises(AlysdError, match="did not answer 'status' within 0.1s") as exc:
        ControlClient(rundir).call("status", timeout=0.1)
    assert not isinstance(exc.value, NoDaemon)


# --- format_dead_letters ------------------------------------------------------------------

@pytest.fixture
def utc(monkeypatch):
    """Local time is UTC for the test, so the TIME column is the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def described(payload=None, *, frame=None, **over):
    fields = {"reason": "mailbox_full", "sender": "engine", "target": "sync", "message_id": 7,
              "detail": "capacity 10 reached", "time": 1700000000.0, "id": 12}
    fields.update(over)
    if frame is None:
        frame = zmq_bus.encode_envelope(zmq_bus.Kind.TELL, fields["message_id"], payload,
                                        sender=fields["sender"], target=fields["target"])
    return describe(DeadLetter(frame=frame, **fields))


def test_dead_letter_table(utc):
    result = {"letters": [described({"a": 1}),
                          described(frame=b"\xc1", reason="rejected", sender="?", message_id=0,
                                    detail=None, time=1700000001.0, id=11)],
              "count": 2, "evicted": 3, "by_reason": {"mailbox_full": 4, "rejected": 1}}
    assert format_dead_letters(result).split("\n") == [
        "ID  TIME                 REASON        SENDER  TARGET  MSG ID  PAYLOAD        DETAIL",
        "12  2023-11-14T22:13:20  mailbox_full  engine  sync    7       {\"a\":1}        capacity 10 reached",
        "11  2023-11-14T22:13:21  rejected      ?       sync    0       (undecodable)  -",
        "2 dead letters (3 evicted)",
    ]


def test_no_dead_letters():
    assert format_dead_letters({"letters": [], "count": 0, "evicted": 0, "by_reason": {}}) == \
        "no dead letters"
    assert format_dead_letters({"letters": [], "count": 0, "evicted": 4, "by_reason": {}}) == \
        "no dead letters (4 evicted)"


def test_the_footer_says_when_only_the_newest_are_shown(utc):
    one = {"letters": [described(1)], "count": 1, "evicted": 0, "by_reason": {}}
    assert format_dead_letters(one).split("\n")[-1] == "1 dead letter (0 evicted)"
    some = {"letters": [described(1)], "count": 120, "evicted": 9, "by_reason": {}}
    assert format_dead_letters(some).split("\n")[-1] == \
        "120 dead letters (9 evicted), the newest 1 shown"


def test_payload_is_compact_json_cut_to_fit():
    assert format_payload(described({"a": [1, 2], "b": None})) == '{"a":[1,2],"b":null}'
    assert format_payload(described(None)) == "null"
    assert format_payload(described(b"\x00")) == '{"base64":"AA=="}'
    long = format_payload(described({"text": "x" * 200}))
    assert len(long) == 60 and long.startswith('{"text":"xxx') and long.endswith("x…")
    assert format_payload(described({"k": "abc"}), width=5) == '{"k"…'
    assert format_payload(described(frame=b"")) == "(undecodable)"


def test_wire_text_cannot_steer_the_terminal(utc):
    letter = described({"s": "\u202e"}, sender="evil\x1b[2J", detail="line\nbreak")
    out = format_dead_letters({"letters": [letter], "count": 1, "evicted": 0, "by_reason": {}})
    assert "\x1b" not in out and "\u202e" not in out and len(out.split("\n")) == 3
    assert "evil\\x1b[2J" in out and "line\\nbreak" in out and "\\u202e" in out


def test_format_time(utc):
    assert format_time(1700000000.75) == "2023-11-14T22:13:20"
    assert format_time(0) == "-" and format_time(None) == "-"


# --- format_filters -----------------------------------------------------------------------

def rule(**over):
    base = {"id": 1, "sender": None, "receiver": "sync", "message_type": None, "action": "drop",
            "rate": 1.0, "delay": None, "matched": 5}
    base.update(over)
    return base


def test_filter_table():
    result = {"filters": [rule(), rule(id=2, sender="engine*", receiver=None,
                                       message_type="block", action="delay", rate=0.25,
                                       delay=0.1, matched=0)]}
    assert format_filters(result).split("\n") == [
        "ID  FROM     TO    TYPE   ACTION       RATE  MATCHED",
        "1   *        sync  *      drop         1     5",
        "2   engine*  *     block  delay 100ms  0.25  0",
    ]


def test_no_filters():
    assert format_filters({"filters": []}) == "no filters"


# --- command lines ----------------------------------------------------------------------------

def cli(rundir: str, *args: str):
    return CliRunner().invoke(main, ["--runtime-dir", rundir, *args])


def cli_against(rundir: str, result, *args: str):
    """Run alysctl against a fake daemon answering ``result``; (cli result, requests)."""
    def answer(req):
        yield CtlReply(req.id, True, result=msgspec.Raw(zmq_bus.encode(result)))

    with FakeDaemon(RuntimeDir(rundir), answer) as daemon:
        got = cli(rundir, *args)
    return got, [(r.command, r.args) for r in daemon.requests]


@pytest.mark.parametrize("args, complaint", [
    (["filter", "add"], "give exactly one action"),
    (["filter", "add", "--from", "a"], "give exactly one action"),
    (["filter", "add", "--drop", "--duplicate"], "(got --drop and --duplicate)"),
    (["filter", "add", "--drop", "--delay", "1s"], "(got --drop and --delay)"),
    (["filter", "add", "--drop", "--rate", "0"], "--rate"),
    (["filter", "add", "--drop", "--rate", "1.5"], "--rate"),
    (["filter", "add", "--drop", "--rate", "often"], "--rate"),
    (["filter", "add", "--delay", "0s"], "must be longer than 0s"),
    (["filter", "add", "--delay", "soon"], "expected a duration"),
    (["filter", "add", "--delay", "5"], "expected a duration"),
    (["filter", "remove"], "give a filter ID or --all"),
    (["filter", "remove", "3", "--all"], "give a filter ID or --all"),
    (["filter", "remove", "0"], "ID"),
    (["filter", "nope"], "No such command"),
    (["dead-letters", "replay"], "Missing argument 'ID'"),
    (["dead-letters", "replay", "0"], "ID"),
    (["dead-letters", "replay", "x"], "ID"),
    (["dead-letters", "--limit", "0"], "--limit"),
    (["dead-letters", "--json", "purge"], "apply to the listing, not to 'purge'"),
    (["dead-letters", "--limit", "3", "replay", "1"], "apply to the listing, not to 'replay'"),
    (["dead-letters", "5"], "No such command"),
])
def test_usage_errors_exit_2_without_asking_the_daemon(short_tmp, args, complaint):
    got = cli(short_tmp, *args)
    assert got.exit_code == 2, got.output
    assert complaint in got.output


def test_a_valid_command_line_without_a_daemon_exits_3(short_tmp):
    got = cli(short_tmp, "filter", "add", "--drop")
    assert got.exit_code == 3
    assert "no control socket" in got.output


def test_filter_add_sends_the_whole_rule(short_tmp):
    got, requests = cli_against(short_tmp, {"id": 4}, "filter", "add", "--from", "engine",
                                "--to", "sync*", "--type", "block", "--delay", "100ms",
                                "--rate", "0.5")
    assert got.exit_code == 0, got.output
    assert got.output == "added filter 4\n"
    assert requests == [("filter_add", {"sender": "engine", "receiver": "sync*",
                                        "message_type": "block", "action": "delay",
                                        "rate": 0.5, "delay": 0.1})]


@pytest.mark.parametrize("flag, action", [("--drop", "drop"), ("--duplicate", "duplicate")])
def test_filter_add_defaults(short_tmp, flag, action):
    _, requests = cli_against(short_tmp, {"id": 1}, "filter", "add", flag)
    assert requests == [("filter_add", {"sender": None, "receiver": None, "message_type": None,
                                        "action": action, "rate": 1.0, "delay": None})]


def test_filter_list(short_tmp):
    result = {"filters": [rule()]}
    got, requests = cli_against(short_tmp, result, "filter", "list")
    assert requests == [("filter_list", {})]
    assert got.output == format_filters(result) + "\n"
    got, _ = cli_against(short_tmp, result, "filter", "list", "--json")
    assert msgspec.json.decode(got.output) == result


def test_filter_remove(short_tmp):
    got, requests = cli_against(short_tmp, {"removed": 3}, "filter", "remove", "--all")
    assert requests == [("filter_remove", {"id": None, "all": True})]
    assert got.output == "removed 3 filters\n"
    got, requests = cli_against(short_tmp, {"removed": 1}, "filter", "remove", "7")
    assert requests == [("filter_remove", {"id": 7, "all": False})]
    assert got.output == "removed 1 filter\n"


def test_removing_an_absent_filter_fails(short_tmp):
    got, _ = cli_against(short_tmp, {"removed": 0}, "filter", "remove", "7")
    assert got.exit_code == 1
    assert "no filter 7" in got.output


def test_dead_letters_lists_the_newest_50_by_default(short_tmp, utc):
    result = {"letters": [described({"a": 1})], "count": 1, "evicted": 0,
              "by_reason": {"mailbox_full": 1}}
    got, requests = cli_against(short_tmp, result, "dead-letters")
    assert got.exit_code == 0, got.output
    assert requests == [("dead_letters", {"limit": 50})]
    assert got.output == format_dead_letters(result) + "\n"


def test_dead_letters_json_prints_the_whole_result(short_tmp):
    result = {"letters": [described({"a": 1})], "count": 1, "evicted": 2,
              "by_reason": {"mailbox_full": 3}}
    got, requests = cli_against(short_tmp, result, "dead-letters", "--json", "--limit", "5")
    assert requests == [("dead_letters", {"limit": 5})]
    assert msgspec.json.decode(got.output) == result


def test_dead_letters_replay_and_purge(short_tmp):
    got, requests = cli_against(short_tmp, {"id": 3, "target": "sync", "message_id": 99},
                                "dead-letters", "replay", "3")
    assert requests == [("dead_letters_replay", {"id": 3})]
    assert got.output == "re-sent dead letter 3 to sync as message 99\n"
    got, requests = cli_against(short_tmp, {"purged": 12}, "dead-letters", "purge")
    assert requests == [("dead_letters_purge", {})]
    assert got.output == "purged 12 dead letters\n"


def test_replay_of_an_unknown_letter_exits_1_with_the_daemons_message(short_tmp):
    info = ErrorInfo.from_exception(CommandError("no dead letter 3"), actor=None,
                                    message_id=None)

    def answer(req):
        yield CtlReply(req.id, False, error=info)

    with FakeDaemon(RuntimeDir(short_tmp), answer):
        got = cli(short_tmp, "dead-letters", "replay", "3")
    assert got.exit_code == 1
    assert "dead_letters_replay: no dead letter 3" in got.output


def test_status_prints_the_system_line_above_the_table(short_tmp):
    rows = [row(), row(name="sync", state="stopped", pid=None, health="unknown")]
    got, requests = cli_against(short_tmp, rows, "status")
    assert got.exit_code == 0, got.output
    assert requests == [("status", {})]
    assert got.output == "system: degraded (1/2 actors running)\n" + format_status(rows) + "\n"


def test_status_json_is_the_daemons_list_unchanged(short_tmp):
    rows = [row()]
    got, _ = cli_against(short_tmp, rows, "status", "--json")
    assert msgspec.json.decode(got.output) == rows


@pytest.mark.parametrize("args", [["--interval", "0"], ["--interval", "-1"],
                                  ["--interval", "soon"], ["--once", "extra"]])
def test_top_usage_errors_exit_2(short_tmp, args):
    got = cli(short_tmp, "top", *args)
    assert got.exit_code == 2, got.output
