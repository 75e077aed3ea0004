"""alysctl chaos run against real daemons: each fault kind applied and undone,
the recovery measured, and each invariant failing when it should."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from alysd.chaos import parse_scenario
from alysd.chaos_run import run
from alysd.ctl import main
from tests.conftest import REPO, actor_toml, tree_toml

TREE = f"{REPO}/conf/chaos/tree.toml"


def chaos(daemon, path, *args):
    return CliRunner().invoke(main, ["--runtime-dir", daemon.rundir.path, "chaos", "run",
                                     str(path), *args], catch_exceptions=False)


def scenario_file(short_tmp, text: str) -> str:
    path = os.path.join(short_tmp, "scenario.toml")
    with open(path, "w") as out:
        out.write(text)
    return path


def test_kills_pauses_and_a_partition_are_survived_and_measured(start_daemon, short_tmp):
    d = start_daemon(Path(TREE))
    before = d.status()
    path = scenario_file(short_tmp, '''
name = "mixed"
duration = "2s"
recover_within = "10s"
[traffic]
to = "echo"
every = "20ms"
[[faults]]
kind = "kill"
target = "chain_supervisor"
every = "500ms"
duration = "1s"
[[faults]]
kind = "kill"
target = "sync"
signal = "SIGTERM"
at = "0.2s"
[[faults]]
kind = "pause"
target = "network"
at = "0.1s"
duration = "1s"
[[faults]]
kind = "partition"
groups = [["chain_supervisor"], ["network", "sync"]]
at = "0.1s"
duration = "1.5s"
''')
    out = chaos(d, path, "--json", "--seed", "7")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["failures"] == []
    applied = report["faults_applied"]
    assert sum(a.startswith("SIGKILL chain") or a.startswith("SIGKILL engine")
               for a in applied) == 3
    assert "SIGTERM sync" in applied and "SIGSTOP network for 1s" in applied
    assert "SIGCONT network" in applied
    assert any(a.startswith("partition ['chain', 'engine'] | ['network', 'sync']") and
               "(8 filters)" in a for a in applied)
    actors = report["actors"]
    assert actors["chain"]["restarts"] + actors["engine"]["restarts"] == 3
    assert actors["sync"]["restarts"] == 1 and actors["echo"]["restarts"] == 0
    assert actors["chain"]["detected_s"] is not None and actors["echo"]["detected_s"] is None
    assert report["requests"] > 10 and report["lost"] == 0
    assert d.call("filter_list")["filters"] == []          # the partition was lifted
    after = d.status()
    assert after["echo"]["pid"] == before["echo"]["pid"]   # untouched
    assert all(row["state"] == "running" for row in after.values())


def test_requests_that_never_get_an_answer_fail_no_message_lost(start_daemon, short_tmp):
    d = start_daemon(Path(TREE))
    # A black hole in front of echo: its messages are held past the requests' timeout.
    path = scenario_file(short_tmp, '''
name = "a black hole in front of echo"
duration = "1s"
[traffic]
to = "echo"
every = "50ms"
timeout = "200ms"
[[faults]]
kind = "delay"
to = "echo"
delay = "5s"
at = "0.1s"
duration = "0.5s"
''')
    out = chaos(d, path)
    assert out.exit_code == 1, out.output
    assert "requests were lost (no reply, no error)" in out.output


def test_dropped_messages_are_refusals_with_a_reason_not_losses(start_daemon, short_tmp):
    d = start_daemon(Path(TREE))
    path = scenario_file(short_tmp, '''
name = "echo's messages dropped"
duration = "1s"
[traffic]
to = "echo"
every = "50ms"
[[faults]]
kind = "drop"
to = "echo"
at = "0.1s"
duration = "0.5s"
''')
    out = chaos(d, path, "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["refused"]["dead-lettered filtered"] >= 5 and report["lost"] == 0
    assert report["dead_letters"]["filtered"] == report["refused"]["dead-lettered filtered"]


def test_an_actor_that_does_not_come_back_fails_recovery(start_daemon, short_tmp):
    d = start_daemon(tree_toml(actor_toml("gone", "actors.examples:Echo", strategy="never"),
                               actor_toml("stays", "actors.examples:Echo")))
    scenario = parse_scenario('name = "one kill"\nduration = "0.5s"\nrecover_within = "1s"\n'
                              '[[faults]]\nkind = "kill"\ntarget = "gone"\n')
    report = run(scenario, d.rundir)
    assert report.failures == ["not every actor was running and healthy within 1s of the last "
                               "fault: gone"]
    assert report.actors["gone"].recovered_s is None
    assert report.actors["stays"].restarts == 0


def test_a_bad_scenario_is_refused_before_anything_happens(start_daemon, short_tmp):
    d = start_daemon(Path(TREE))
    path = scenario_file(short_tmp, 'duration = "1s"\n[[faults]]\nkind = "kill"\n')
    out = CliRunner().invoke(main, ["--runtime-dir", d.rundir.path, "chaos", "run", path])
    assert out.exit_code == 1 and "faults[0].target: a kill needs a target" in out.output
    assert all(row["restarts"] == 0 for row in d.status().values())


INJECTABLE = '''
[system]
fault_injection = true
sample_interval = "100ms"
heartbeat_interval = "200ms"
health_interval = "200ms"
health_timeout = "150ms"

[supervisors.root]
strategy = "one_for_one"
max_retries = 100
within_time = "1s"

[actors.leaky]
supervisor = "root"
class = "actors.examples:Echo"
memory_limit = "150MiB"

[actors.spinner]
supervisor = "root"
class = "actors.examples:Echo"
cpu_limit = 0.3
cpu_window = "1s"

[actors.wedged]
supervisor = "root"
class = "actors.examples:Echo"

[actors.stuck]
supervisor = "root"
class = "actors.examples:Echo"
'''


def test_injected_faults_are_acted_on_as_the_real_ones(start_daemon, short_tmp):
    d = start_daemon(INJECTABLE)
    path = scenario_file(short_tmp, '''
name = "injected"
duration = "4s"
recover_within = "10s"
[[faults]]
kind = "memory"
target = "leaky"
mib = 400
duration = "4s"
[[faults]]
kind = "cpu"
target = "spinner"
duration = "4s"
[[faults]]
kind = "hang"
target = "wedged"
gil = true
duration = "3s"
[[faults]]
kind = "hang"
target = "stuck"
at = "0.5s"
duration = "1s"
''')
    out = chaos(d, path, "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert sorted(report["faults_applied"]) == [
        "leaky allocates 400 MiB for 4s", "spinner burns a core for 4s",
        "stuck hangs for 1s", "wedged hangs holding the GIL for 3s"]
    rows = d.status()
    # Each killed for what it did, by the root, and restarted; the one that only
    # stopped answering for a while was left alone.
    assert rows["leaky"]["last_exit"]["reason"] == "memory_limit"
    assert rows["spinner"]["last_exit"]["reason"] == "cpu_limit"
    assert rows["wedged"]["last_exit"]["reason"] == "hung"
    assert report["actors"]["stuck"]["restarts"] == 0
    assert report["actors"]["stuck"]["detected_s"] is None
    assert all(report["actors"][n]["restarts"] >= 1 for n in ("leaky", "spinner", "wedged"))


def test_injection_is_refused_unless_the_config_allows_it(start_daemon, short_tmp):
    d = start_daemon(tree_toml(actor_toml("a", "actors.examples:Echo")))
    path = scenario_file(short_tmp, 'duration = "1s"\n[[faults]]\nkind = "memory"\n'
                                    'target = "a"\nmib = 10\nduration = "1s"\n')
    out = CliRunner().invoke(main, ["--runtime-dir", d.rundir.path, "chaos", "run", path])
    assert out.exit_code == 1 and "fault injection is off" in out.output
    assert d.status()["a"]["restarts"] == 0


def test_a_slow_endpoint_holds_responses_and_shows_in_the_requests(start_daemon, short_tmp):
    import http.server
    import threading

    from tests.integration.test_host_link import free_port

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy = free_port()
    try:
        d = start_daemon(tree_toml(actor_toml("fetcher", "tests.actors:Fetcher",
                                              config={"url": f"http://127.0.0.1:{proxy}/"})))

        def scenario(timeout: str) -> dict:
            path = scenario_file(short_tmp, f'''
name = "slow upstream"
duration = "1.5s"
[traffic]
to = "fetcher"
every = "50ms"
timeout = "{timeout}"
[[faults]]
kind = "slow_endpoint"
listen = "127.0.0.1:{proxy}"
upstream = "127.0.0.1:{upstream.server_address[1]}"
delay = "400ms"
at = "0.3s"
duration = "0.8s"
''')
            return json.loads(chaos(d, path, "--json").output)

        patient = scenario("3s")          # waits out the delay: slow, but nothing lost
        assert patient["failures"] == [] and patient["lost"] == 0
        assert patient["answered"] == patient["requests"] > 5
        held = patient["faults_applied"][-1]
        assert held.startswith("slow endpoint 127.0.0.1:") and int(held.split()[-3]) > 0
        hasty = scenario("200ms")         # gives up sooner than the endpoint answers
        assert hasty["lost"] > 0
        assert any("requests were lost" in failure for failure in hasty["failures"])
    finally:
        upstream.shutdown()


def test_duplicated_messages_arrive_twice_and_too_many_restarts_fail(start_daemon, short_tmp):
    d = start_daemon(tree_toml(actor_toml("counter", "actors.examples:Counter"),
                               actor_toml("victim", "actors.examples:Echo"),
                               max_retries=100, within_time="1s"))
    path = scenario_file(short_tmp, '''
name = "twice, and a restart budget"
duration = "1s"
max_restarts = 1
[traffic]
to = "counter"
every = "50ms"
message = 1
[[faults]]
kind = "duplicate"
to = "counter"
duration = "1s"
[[faults]]
kind = "kill"
target = "victim"
every = "300ms"
duration = "0.6s"
''')
    out = chaos(d, path, "--json")
    assert out.exit_code == 1
    report = json.loads(out.output)
    assert report["failures"] == ["3 restarts, over max_restarts = 1"]
    count = d.request("counter", {"op": "get"})
    assert count > report["answered"]          # each request handled twice


def test_a_run_that_fails_midway_takes_its_faults_back(start_daemon, short_tmp):
    import psutil

    d = start_daemon(tree_toml(actor_toml("a", "actors.examples:Echo"),
                               actor_toml("b", "actors.examples:Echo")))
    path = scenario_file(short_tmp, '''
duration = "2s"
[[faults]]
kind = "pause"
target = "a"
duration = "2s"
[[faults]]
kind = "partition"
groups = [["a"], ["b"]]
duration = "2s"
[[faults]]
kind = "memory"
target = "b"
mib = 10
at = "0.2s"
duration = "1s"
''')
    out = CliRunner().invoke(main, ["--runtime-dir", d.rundir.path, "chaos", "run", path])
    assert out.exit_code == 1 and "fault injection is off" in out.output
    assert psutil.Process(d.actor_pid("a")).status() != psutil.STATUS_STOPPED
    assert d.call("filter_list")["filters"] == []
    assert d.request("a", "still here") == "still here"
