"""``alysd``: run the supervision tree in the foreground until SIGTERM/SIGINT;
``alysd check-config``: validate the configuration and show where each value
came from.

The configuration is layered (``alysd.config_layers``): the file (``--config``,
``$ALYS_CONFIG_PATH``, ``./alys.toml`` or ``/etc/alysd/alys.toml``; the bundled
development config with ``--dev``), then ``ALYS_*`` environment variables,
then ``--set KEY=VALUE`` flags. A reload reads the file again and applies the
same variables and flags, as captured at start.

Logs go to stderr (journald stores them under the unit). Exit status of
``alysd``: 0 after an orderly stop, 1 when the tree gave up (restart intensity
exceeded at the root, the fork server died) or the runtime dir is unusable, 2
usage, 78 (EX_CONFIG) when the configuration is refused. ``alysd
check-config`` exits 0 when the configuration is valid, 1 when it is not.
"""

from __future__ import annotations

import logging
import os
import sys

import click
from click.core import ParameterSource

from alysd.config import Config, check_imports
from alysd.config_layers import (DEFAULT, FILE, ConfigSources, discover, load_config_layers,
                                 load_layered, parse_override, render_errors_json, render_json,
                                 render_text)
from alysd.control_access import resolve_group
from alysd.errors import ConfigError, ConfigIssue, RuntimeDirError
from alysd import log_format
from alysd.key_files import check_secret_files
from alysd.process import set_title
from alysd.runtime_dir import ENV_VAR, RuntimeDir, default_runtime_dir
from alysd.state_dir import ENV_VAR as STATE_ENV_VAR
from alysd.state_dir import StateDirError, default_state_dir
from alysd.supervisor import ExitStatus, Supervisor
from alysd.versions import version_info

CHECK_FAILED = 1


def _print_version(ctx: click.Context, param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    info = version_info()
    commit = f" ({info.pop('commit')})" if info.get("commit") else ""
    info.pop("commit", None)
    click.echo(f"alysd {info.pop('alysd')}{commit}; " + ", ".join(f"{k} {v}" for k, v in info.items()))
    ctx.exit()


def _check_overrides(ctx: click.Context, param, texts: tuple[str, ...]) -> tuple[str, ...]:
    for text in texts:
        try:
            parse_override(text)
        except ValueError as e:
            raise click.BadParameter(str(e), ctx, param) from None
    return texts


_SET_HELP = ("Set a config key, e.g. --set chain.slot_duration=2s (repeatable; wins over the "
             "file and ALYS_* variables).")


def _sources(path: str | None, dev: bool, overrides: tuple[str, ...]) -> ConfigSources:
    """The layers of this run; ConfigError when no config file is found."""
    if dev and path is not None:
        raise click.UsageError("give a config file or --dev, not both")
    return ConfigSources.capture(None if dev else discover(path, os.environ), os.environ,
                                 overrides)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration file (default: $ALYS_CONFIG_PATH, ./alys.toml, "
                   "/etc/alysd/alys.toml).")
@click.option("--dev", is_flag=True, help="Run the bundled development configuration.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              callback=_check_overrides, help=_SET_HELP)
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=None,
              help=f"Directory for sockets (default: ${ENV_VAR}, [system] runtime_dir, "
                   "$RUNTIME_DIRECTORY under systemd, /run/alysd as root, else "
                   "$XDG_RUNTIME_DIR/alysd).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help=f"Directory for durable state such as the dead-letter queue (default: "
                   f"${STATE_ENV_VAR}, [system] state_dir, $STATE_DIRECTORY under systemd, "
                   "/var/lib/alysd as root, else $XDG_STATE_HOME/alysd).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None, help="Overrides [logging] level.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Print versions and exit.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, dev: bool, overrides: tuple[str, ...],
         runtime_dir: str | None, state_dir: str | None, log_level: str | None) -> None:
    """Run the alysd supervision tree in the foreground (without a COMMAND)."""
    if ctx.invoked_subcommand is not None:
        given = [param.opts[0] for param in ctx.command.params
                 if ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{given[0]} is an option of the node itself: give the "
                                   f"options of {ctx.invoked_subcommand} after it")
        return
    try:
        sources = _sources(config_path, dev, overrides)
        layered = load_layered(sources)
        _refuse_host_issues(layered.config)
    except ConfigError as exc:
        click.echo(f"alysd: {exc}", err=True)
        sys.exit(ExitStatus.CONFIG)
    config = layered.config
    log_format.configure(log_level or config.logging.level, config.logging.format)
    log = logging.getLogger("alysd")
    log.info("config: %s, environment %s", config.source, config.environment.value)
    for path, origin in layered.origins.items():
        if origin not in (DEFAULT, FILE):
            log.info("config: %s from %s", path, origin)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    rundir = RuntimeDir(runtime_dir or os.environ.get(ENV_VAR) or config.system.runtime_dir
                        or default_runtime_dir())
    state_dir = (state_dir or os.environ.get(STATE_ENV_VAR) or config.system.state_dir
                 or default_state_dir())
    set_title(f"alysd: root {rundir.path}")
    try:
        status = Supervisor(config, rundir, state_dir,
                            reload_config=lambda: _refuse_host_issues(
                                load_config_layers(sources))).run()
    except (RuntimeDirError, StateDirError) as exc:
        click.echo(f"alysd: {exc}", err=True)
        sys.exit(ExitStatus.GAVE_UP)
    sys.exit(status)


def _host_issues(config: Config) -> list[ConfigIssue]:
    """What ``config`` names on this host that alysd cannot use: a secret file
    that is not private, a control_group that does not exist."""
    issues = check_secret_files(config)
    try:
        resolve_group(config.system.control_group)
    except ConfigError as exc:
        issues += exc.issues
    return issues


def _refuse_host_issues(config: Config) -> Config:
    """``config``, unless ``_host_issues`` finds any (ConfigError)."""
    issues = _host_issues(config)
    if issues:
        raise ConfigError(issues, config.source)
    return config


@main.command("check-config",
              short_help="Validate the configuration and show where each value came from.")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--dev", is_flag=True, help="Check the bundled development configuration.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              callback=_check_overrides, help=_SET_HELP)
@click.option("--json", "as_json", is_flag=True,
              help='Print {"source", "config", "origins", "warnings"} as JSON.')
def check_config(path: str | None, dev: bool, overrides: tuple[str, ...], as_json: bool) -> None:
    """Validate the configuration as alysd would load it (PATH, else the same
    search as alysd; then ALYS_* variables and --set flags), import every actor
    class, and print the effective configuration with the origin of each value:
    default, file, env NAME or flag --set KEY=VALUE.

    Exit status 0 when it is valid (warnings go to stderr), 1 when it is not:
    every error is printed on a line of its own, as KEY.PATH: MESSAGE.
    """
    try:
        layered = load_layered(_sources(path, dev, overrides))
        issues = check_imports(layered.config) + _host_issues(layered.config)
        source = layered.config.source
    except ConfigError as exc:
        issues, source = exc.issues, exc.source
    if issues:
        if as_json:
            click.echo(render_errors_json(source, issues))
        else:
            for issue in issues:
                click.echo(str(issue), err=True)
        sys.exit(CHECK_FAILED)
    for warning in layered.config.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(render_json(layered) if as_json else render_text(layered), nl=as_json)


if __name__ == "__main__":
    main()
