"""default_runtime_dir under systemd: ``RuntimeDirectory=`` is honoured."""

import pytest

from alysd import runtime_dir as rd_mod
from alysd.runtime_dir import default_runtime_dir


@pytest.fixture
def service_user(monkeypatch):
    """The environment of the alysd service: its own user, no XDG_RUNTIME_DIR."""
    monkeypatch.delenv("ALYSD_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(rd_mod.os, "geteuid", lambda: 998)
    return monkeypatch


def test_systemd_runtime_directory_is_used(service_user):
    service_user.setenv("RUNTIME_DIRECTORY", "/run/alysd")
    assert default_runtime_dir() == "/run/alysd"


def test_the_first_of_several_runtime_directories_is_used(service_user):
    service_user.setenv("RUNTIME_DIRECTORY", "/run/alysd:/run/alysd-extra")
    assert default_runtime_dir() == "/run/alysd"


def test_it_beats_root_and_xdg_defaults(service_user):
    service_user.setenv("RUNTIME_DIRECTORY", "/run/alysd-b")
    service_user.setenv("XDG_RUNTIME_DIR", "/run/user/998")
    assert default_runtime_dir() == "/run/alysd-b"
    service_user.setattr(rd_mod.os, "geteuid", lambda: 0)
    assert default_runtime_dir() == "/run/alysd-b"


def test_alysd_runtime_dir_still_wins(service_user):
    service_user.setenv("RUNTIME_DIRECTORY", "/run/alysd")
    service_user.setenv("ALYSD_RUNTIME_DIR", "/somewhere/else")
    assert default_runtime_dir() == "/somewhere/else"


@pytest.mark.parametrize("value", ["", ":/run/alysd"])
def test_an_empty_runtime_directory_falls_through(service_user, value):
    service_user.setenv("RUNTIME_DIRECTORY", value)
    service_user.setenv("XDG_RUNTIME_DIR", "/run/user/998")
    assert default_runtime_dir() == "/run/user/998/alysd"
