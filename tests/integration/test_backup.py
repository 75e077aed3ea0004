"""alysctl backup: an online copy of alysd's durable state that restores."""

from __future__ import annotations

import os

from click.testing import CliRunner

from alysd.ctl import main
from alysd.dead_letters import DeadLetterQueue
from alysd.errors import HandlerError
from tests.conftest import actor_toml, tree_toml


def test_a_backup_taken_online_holds_the_dead_letters(start_daemon, short_tmp):
    d = start_daemon(tree_toml(actor_toml("a")))
    for k in range(3):
        try:
            d.request("a", {"op": "send", "to": "ghost", "msg": {"k": k}})
        except HandlerError:
            pass
    d.wait_until(lambda: d.call("dead_letters")["count"] == 3, message="3 dead letters")
    dest = os.path.join(short_tmp, "backup")
    out = CliRunner().invoke(main, ["--runtime-dir", d.rundir.path, "backup", dest])
    assert out.exit_code == 0, out.output
    assert "dead-letters:" in out.output and "backed up 1 environments" in out.output
    copy = os.path.join(dest, "dead-letters", "data.mdb")
    assert os.stat(copy).st_mode & 0o077 == 0
    queue = DeadLetterQueue(os.path.join(dest, "dead-letters"))
    try:
        assert sorted(letter.target for letter in queue.list(10)) == ["ghost"] * 3
    finally:
        queue.close()
    again = CliRunner().invoke(main, ["--runtime-dir", d.rundir.path, "backup", dest])
    assert again.exit_code == 1 and "not empty" in again.output
