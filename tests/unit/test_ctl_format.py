"""Tests of alysctl: the status table, the tree drawing, and the control client's
fast "no daemon" answer."""

import os
import socket
import threading
import time

import msgspec
import pytest
import zmq

from alysd import zmq_bus
from alysd.control import CtlReply, request_decoder, request_encoder
from alysd.ctl import ControlClient, draw_tree, format_status
from alysd.errors import AlysdError, NoDaemon, UnknownActor
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

    with FakeDaemon(rundir, answer):
        with pytest.raises(UnknownActor, match="no actor or supervisor named 'ghost'") as exc:
            ControlClient(rundir).call("stop", {"name": "ghost"}, timeout=5.0)
    assert exc.value.actor == "ghost"


def test_call_times_out_when_the_daemon_does_not_answer(short_tmp):
    rundir = RuntimeDir(short_tmp)
    with FakeDaemon(rundir, lambda req: []):
        with pytest.raises(AlysdError, match="did not answer 'status' within 0.1s") as exc:
            ControlClient(rundir).call("status", timeout=0.1)
    assert not isinstance(exc.value, NoDaemon)
