"""The package layout reads like the architecture: imports go one way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_runtime_never_imports_the_node():
    for path in (ROOT / "alysd").rglob("*.py"):
        assert not any(n == "actors" or n.startswith("actors.") for n in _imports(path)), path


def test_actors_use_only_the_public_runtime_api():
    allowed = {"alysd", "alysd.errors"}
    for path in (ROOT / "actors").glob("*.py"):
        used = {n for n in _imports(path) if n == "alysd" or n.startswith("alysd.")}
        assert used <= allowed, f"{path.name} imports {used - allowed}"


def test_only_the_root_side_imports_psutil():
    package = ROOT / "alysd"
    users = {str(p.relative_to(package)) for p in package.rglob("*.py") if "psutil" in _imports(p)}
    # sampler reads resources; versions reports library versions; testing is for tests.
    assert users <= {"sampler.py", "versions.py", "testing/daemon.py"}, users


def test_what_the_fork_server_preloads_for_tests_imports_nothing_heavy():
    # alysd.testing.probe is an actor class: every process of a test tree has it.
    heavy = {"hypothesis", "pytest", "psutil", "alysd.testing.property", "alysd.testing.plugin"}
    assert not _imports(ROOT / "alysd" / "testing" / "probe.py") & heavy
