"""Batches, and the dead-letter queue as an operator uses it: listing, persistence
across restarts, replay, purge, its bound, and ``alysctl dead-letters``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alysd.ctl import main as alysctl
from alysd.errors import CommandError, HandlerError
from alysd.testing import wait_until
from tests.conftest import REPO, actor_toml, tree_toml
from tests.integration.test_delivery import PUMP, letters, ns, pump, recorder, records


def to_ghost(d, *keys: int) -> None:
    """Make one unknown_actor dead letter per key: ``a`` sends {"k": key} to nobody."""
    for k in keys:
        with pytest.raises(HandlerError, match="UnknownActor"):
            d.request("a", {"op": "send", "to": "ghost", "msg": {"k": k}})


def settled_count(d, count: int) -> dict:
    return wait_until(lambda: (r := d.call("dead_letters"))["count"] == count and r,
                      message=f"{count} dead letters")


def test_handle_batch_gets_lists_of_at_most_max_batch_in_order(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(
        actor_toml("b", cls="tests.actors:BatchRecorder", config={"journal": str(journal)},
                   batch={"max_batch": 4, "max_wait": "50ms"}), PUMP))
    sent = [{"n": n} for n in range(10)]
    assert pump(d, "b", sent)["results"] == ["ok"] * 10
    def all_in():
        got = [r["batch"] for r in records(journal)]
        return sum(map(len, got)) == 10 and got
    batches = wait_until(all_in, message="10 messages in batches")
    assert [m for batch in batches for m in batch] == sent
    assert all(1 <= len(batch) <= 4 for batch in batches)
    assert max(len(batch) for batch in batches) > 1   # they were batched
    # a request is not batched: handle_message answers it
    assert d.request("b", "ping") == "pong"
    assert records(journal)[-1] == {"single": "ping"}


def test_send_batch_to_a_plain_actor_is_handled_one_by_one_in_order(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal), PUMP))
    out = pump(d, "r", [{"n": n} for n in range(10)], batch=4)
    assert out["results"] == ["ok"] * 3   # three frames: 4 + 4 + 2 messages
    wait_until(lambda: ns(journal) == list(range(10)), message="10 handled in order")


def test_dead_letters_survive_a_restart_of_alysd(start_daemon, short_tmp):
    state = os.path.join(short_tmp, "state")
    config = tree_toml(actor_toml("a"))
    d = start_daemon(config, state_dir=state)
    to_ghost(d, 1, 2, 3)
    before = settled_count(d, 3)
    d.stop()
    d = start_daemon(config, state_dir=state)
    after = d.call("dead_letters")
    assert after == before
    assert [x["payload"] for x in after["letters"]] == [{"k": 3}, {"k": 2}, {"k": 1}]
    # ids go on from where they were, never reused
    to_ghost(d, 4)
    newest = settled_count(d, 4)["letters"][0]
    assert newest["payload"] == {"k": 4} and newest["id"] > max(x["id"] for x in before["letters"])


def test_replay_sends_a_dead_letter_again_and_takes_it_out(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal), PUMP))
    d.call("filter_add", {"sender": "pump", "receiver": "r", "action": "drop"})
    assert pump(d, "r", [{"n": 1}])["results"] == ["ok"]
    letter = wait_until(lambda: letters(d, "filtered"), message="a filtered dead letter")[0]
    assert ns(journal) == []
    out = d.call("dead_letters_replay", {"id": letter["id"]})
    assert out["id"] == letter["id"] and out["target"] == "r" and out["message_id"]
    handled = wait_until(lambda: records(journal), message="the replayed message handled")
    assert [(r["m"], r["from"]) for r in handled] == [({"n": 1}, "$ctl")]
    assert letter["id"] not in [x["id"] for x in letters(d)]
    with pytest.raises(CommandError, match="no dead letter"):
        d.call("dead_letters_replay", {"id": letter["id"]})


def test_purge_empties_the_queue(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a")))
    to_ghost(d, 1, 2, 3)
    settled_count(d, 3)
    assert d.call("dead_letters_purge") == {"purged": 3}
    after = d.call("dead_letters")
    assert (after["letters"], after["count"], after["evicted"]) == ([], 0, 0)
    assert after["by_reason"] == {"unknown_actor": 3}   # totals ever put stay
    assert d.call("dead_letters_purge") == {"purged": 0}


def test_the_queue_is_bounded_by_dead_letter_capacity(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), system="dead_letter_capacity = 5"))
    to_ghost(d, *range(8))
    wait_until(lambda: d.call("dead_letters")["by_reason"].get("unknown_actor") == 8,
               message="8 dead letters put")
    listing = d.call("dead_letters")
    assert (listing["count"], listing["evicted"]) == (5, 3)
    assert [x["payload"]["k"] for x in listing["letters"]] == [7, 6, 5, 4, 3]  # oldest went


def alysctl_run(d, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.run([sys.executable, "-m", "alysd.ctl", "--runtime-dir", d.rundir.path,
                           *args], check=False, capture_output=True, text=True, timeout=30,
                          env=env)


@pytest.mark.skipif("dead-letters" not in alysctl.commands,
                    reason="alysctl has no dead-letters subcommand yet")
def test_alysctl_dead_letters_lists_replays_and_purges(start_daemon, tmp_path):
    d = start_daemon(tree_toml(actor_toml("a")))
    to_ghost(d, 1, 2)
    expected = settled_count(d, 2)
    out = alysctl_run(d, "dead-letters", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected
    out = alysctl_run(d, "dead-letters")
    assert out.returncode == 0, out.stderr
    assert "unknown_actor" in out.stdout and "ghost" in out.stdout and '{"k":2}' in out.stdout
    out = alysctl_run(d, "dead-letters", "purge")
    assert out.returncode == 0 and "purged 2 dead letters" in out.stdout, out.stderr
    assert d.call("dead_letters")["count"] == 0
