"""Tests of alysd.control_access: who may connect, which commands each role may run,
the ZAP answers, refusals counted and logged without flooding, and busy actors."""

from __future__ import annotations

import grp
import logging
import os
import threading

import pytest

from alysd.control import COMMANDS
from alysd.control_access import (ZAP_VERSION, AccessPolicy, Caller, ControlGate, DenialLog, Peer,
                                  Role, busy_with, may_run, parse_peer, parse_user_id,
                                  resolve_group, role_of, user_id)
from alysd.errors import ConfigError, PermissionDenied
from alysd.testing import wait_until

OWNER = 1000
OPS = 2000
POLICY = AccessPolicy(owner_uid=OWNER, group_gid=OPS, group_name="alysd-ops")
PRIVATE = AccessPolicy(owner_uid=OWNER)

READ_ONLY = {"status", "tree", "version", "dead_letters", "filter_list", "logs"}


# --- roles ------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", [POLICY, PRIVATE])
def test_the_owner_and_root_are_owners_whatever_their_group(policy):
    assert role_of(policy, OWNER, 9999, ()) is Role.OWNER
    assert role_of(policy, 0, 0, ()) is Role.OWNER


def test_a_member_by_its_gid_or_by_its_groups_is_group():
    assert role_of(POLICY, 3000, OPS, ()) is Role.GROUP
    assert role_of(POLICY, 3000, 3000, [3000, OPS]) is Role.GROUP


def test_anyone_else_may_not_connect():
    assert role_of(POLICY, 3000, 3000, [3000, 4000]) is None
    # Without control_group, a group is nobody's way in, not even the owner's group.
    assert role_of(PRIVATE, 3000, OPS, [OPS]) is None


def test_only_read_only_commands_are_open_to_the_group():
    assert {name for name, c in COMMANDS.items() if may_run(Role.GROUP, c)} == READ_ONLY
    assert all(may_run(Role.OWNER, c) for c in COMMANDS.values())


@pytest.mark.parametrize("name", ["restart", "stop", "start", "reset", "send", "tell", "inject",
                                  "reload",
                                  "dead_letters_replay", "dead_letters_purge", "filter_add",
                                  "filter_remove"])
def test_every_command_that_changes_the_node_is_marked_mutating(name):
    assert COMMANDS[name].mutating


# --- wire forms -------------------------------------------------------------------------

def test_the_peer_credentials_libzmq_appends_to_an_ipc_address():
    assert parse_peer("localhost:65534:100:4242") == Peer(65534, 100, 4242)


@pytest.mark.parametrize("address", ["", "127.0.0.1", "localhost", "localhost:1:2",
                                     "localhost:a:2:3", "localhost:1:2:x"])
def test_an_address_without_credentials_gives_no_peer(address):
    assert parse_peer(address) is None


def test_the_user_id_round_trips_and_nothing_else_parses():
    stamped = user_id(Peer(65534, 100, 7), Role.GROUP)
    assert stamped == "65534:100:group"
    assert parse_user_id(stamped) == Caller(65534, 100, Role.GROUP)
    for text in ("", "65534:100", "65534:100:admin", "x:100:owner", "1:2:owner:3"):
        assert parse_user_id(text) is None


# --- the gate -----------------------------------------------------------------------------

def gate(policy=POLICY, groups=None, logger=None):
    return ControlGate(policy, logger or logging.getLogger("test"),
                       groups=groups or (lambda uid, gid: [gid]))


def zap(address: str, version: bytes = ZAP_VERSION) -> list[bytes]:
    return [version, b"req-7", b"alysd-control", address.encode(), b"", b"NULL"]


def test_zap_admits_the_owner_and_stamps_its_role():
    g = gate()
    assert g.zap_reply(zap(f"localhost:{OWNER}:{OWNER}:12")) == [
        ZAP_VERSION, b"req-7", b"200", b"OK", f"{OWNER}:{OWNER}:owner".encode(), b""]
    assert g.refused_connections == 0


def answers(g, count: int = 1) -> list:
    """What the gate answers once its group lookups (on their thread) are done."""
    got = []
    wait_until(lambda: got.extend(g.looked_up()) or len(got) >= count, timeout=10,
               message="group lookups")
    return got


def test_zap_admits_a_member_through_the_group_database():
    looked_up = []

    def groups(uid, gid):
        looked_up.append(uid)
        return [gid, OPS]
    g = gate(groups=groups)
    assert g.zap_reply(zap("localhost:3000:3000:12"), token="conn-1") is None   # looking up
    [(token, reply)] = answers(g)
    assert token == "conn-1" and reply[2:5] == [b"200", b"OK", b"3000:3000:group"]
    assert looked_up == [3000]
    assert g.zap_reply(zap("localhost:3000:3000:13"))[2:5] == [b"200", b"OK", b"3000:3000:group"]
    g.zap_reply(zap(f"localhost:{OWNER}:1:1"))
    g.zap_reply(zap("localhost:0:0:1"))
    assert looked_up == [3000]          # known now; the owner and root need no lookup


def test_a_slow_lookup_holds_only_its_own_callers():
    release = threading.Event()

    def groups(uid, gid):
        release.wait(10)                # a directory service taking its time
        return [gid, OPS]
    g = gate(groups=groups)
    assert g.zap_reply(zap("localhost:3000:3000:1"), token=1) is None
    assert g.zap_reply(zap("localhost:3000:3000:2"), token=2) is None   # one lookup for both
    # Meanwhile the owner is answered at once.
    assert g.zap_reply(zap(f"localhost:{OWNER}:{OWNER}:3"))[2] == b"200"
    release.set()
    got = answers(g, 2)
    assert sorted(token for token, _ in got) == [1, 2]
    assert all(reply[2] == b"200" for _, reply in got)
    g.close()


def test_zap_refuses_others_counted_and_logged(caplog):
    g = gate()
    with caplog.at_level(logging.WARNING):
        assert g.zap_reply(zap("localhost:3000:3000:12")) is None
        [(_, reply)] = answers(g)
    assert reply == [ZAP_VERSION, b"req-7", b"400", b"not allowed", b"", b""]
    assert g.refused_connections == 1
    assert "refused a control connection: uid 3000 gid 3000 pid 12" in caplog.text
    assert "system.control_group 'alysd-ops'" in caplog.text


@pytest.mark.parametrize("request_", [zap("127.0.0.1"), zap("localhost:1:1:1", b"0.9"),
                                      [ZAP_VERSION, b"req-7"], []])
def test_zap_refuses_what_it_cannot_read(request_):
    g = gate()
    reply = g.zap_reply(request_)
    assert reply[2] == b"400" and reply[0] == ZAP_VERSION
    assert g.refused_connections == 1


def test_a_group_member_may_read_but_not_change(caplog):
    g = gate()
    assert g.authorise("3000:2000:group", COMMANDS["status"]) is None
    with caplog.at_level(logging.WARNING):
        refusal = g.authorise("3000:2000:group", COMMANDS["restart"])
    assert isinstance(refusal, PermissionDenied)
    assert "restart" in str(refusal) and "uid 3000" in str(refusal)
    assert f"uid {OWNER} or root" in str(refusal)
    assert g.refused_commands == 1
    assert "refused a control command" in caplog.text
    assert g.authorise(f"{OWNER}:1:owner", COMMANDS["restart"]) is None


@pytest.mark.parametrize("user", [None, "", "garbage"])
def test_a_frame_without_a_stamped_identity_may_run_nothing(user):
    g = gate()
    assert isinstance(g.authorise(user, COMMANDS["status"]), PermissionDenied)
    assert g.refused_commands == 1


def test_refusals_are_logged_at_most_burst_per_window_per_uid(caplog):
    now = [0.0]
    log = DenialLog(logging.getLogger("test"), burst=2, per=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            log.refused("uid 3000", "no")
        log.refused("uid 4000", "other uid")
        assert len(caplog.records) == 3
        now[0] = 10.0
        log.refused("uid 3000", "no")
    assert caplog.records[-1].getMessage() == "no (3 more refusals of uid 3000 were not logged)"


# --- group lookup ---------------------------------------------------------------------------

def test_an_unknown_group_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError) as info:
        resolve_group("no-such-group-for-alysd")
    assert [i.path for i in info.value.issues] == ["system.control_group"]
    assert "no-such-group-for-alysd" in str(info.value)


def test_a_known_group_resolves_to_its_gid():
    assert resolve_group(None) is None
    name = grp.getgrgid(os.getegid()).gr_name
    assert resolve_group(name) == os.getegid()


# --- busy -------------------------------------------------------------------------------------

def test_an_actor_of_a_pending_command_is_busy_with_it():
    pending = [("`stop b`", ["b"]), ("`restart w`", ["w.0", "w.1"])]
    assert busy_with(["a"], pending) is None
    assert busy_with(["x", "w.1"], pending) == "actor 'w.1' is busy: `restart w` is in progress"
    assert busy_with([], pending) is None
    assert busy_with(["b"], []) is None


def test_group_lookups_are_made_at_most_once_a_minute_per_uid():
    from alysd.control_access import GROUPS_TTL

    calls, now = [], [0.0]

    def groups(uid, gid):
        calls.append(uid)
        return [4242]
    g = ControlGate(AccessPolicy(1, 4242, "ops"), logging.getLogger("t"), groups,
                    clock=lambda: now[0])
    assert g.zap_reply(zap("localhost:7:7:1")) is None
    answers(g)
    for pid in range(2, 5):
        assert g.zap_reply(zap(f"localhost:7:7:{pid}"))[2] == b"200"
    assert calls == [7]
    now[0] = GROUPS_TTL
    assert g.zap_reply(zap("localhost:7:7:5")) is None     # looked up again
    answers(g)
    assert calls == [7, 7]
    assert g.zap_reply(zap("localhost:1:1:6"))[2] == b"200"   # the owner: no lookup at all
    assert calls == [7, 7]


def test_a_failing_lookup_judges_by_the_primary_gid():
    def groups(uid, gid):
        raise OSError("the directory is down")
    g = gate(groups=groups)
    assert g.zap_reply(zap(f"localhost:3000:{OPS}:1")) is None
    [(_, reply)] = answers(g)
    assert reply[2:5] == [b"200", b"OK", f"3000:{OPS}:group".encode()]


def test_an_allowed_mutating_command_is_audit_logged(caplog):
    import logging as _logging

    from alysd.control import COMMANDS
    from alysd.control_access import AccessPolicy, ControlGate

    gate = ControlGate(AccessPolicy(1, None, None), _logging.getLogger("audit-test"))
    with caplog.at_level(_logging.INFO, logger="audit-test"):
        assert gate.authorise("1:1:owner", COMMANDS["restart"], "engine") is None
        assert gate.authorise("1:1:owner", COMMANDS["status"]) is None
    assert [r.getMessage() for r in caplog.records] == [
        "control: uid 1 (owner) runs restart engine"]
