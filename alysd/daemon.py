"""``alysd``: run the supervision tree in the foreground until SIGTERM/SIGINT.

Logs go to stderr (journald stores them under the unit). Exit status: 0 after
an orderly stop, 1 when the tree gave up (restart intensity exceeded at the
root, the fork server died) or the runtime dir is unusable, 2 usage, 78
(EX_CONFIG) when the configuration is refused.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import resources

import click

from alysd.config import load_config
from alysd.errors import ConfigError, RuntimeDirError
from alysd.process import set_title
from alysd.runtime_dir import ENV_VAR, RuntimeDir, default_runtime_dir
from alysd.state_dir import ENV_VAR as STATE_ENV_VAR
from alysd.state_dir import StateDirError, default_state_dir
from alysd.supervisor import ExitStatus, Supervisor
from alysd.versions import version_info

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def dev_config_path() -> str:
    """The development config bundled with the package."""
    return str(resources.files("alysd").joinpath("conf/dev.toml"))


def _print_version(ctx: click.Context, param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    info = version_info()
    commit = f" ({info.pop('commit')})" if info.get("commit") else ""
    info.pop("commit", None)
    click.echo(f"alysd {info.pop('alysd')}{commit}; " + ", ".join(f"{k} {v}" for k, v in info.items()))
    ctx.exit()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration file.")
@click.option("--dev", is_flag=True, help="Run the bundled development configuration.")
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=None,
              help=f"Directory for sockets (default: ${ENV_VAR}, [system] runtime_dir, "
                   "$RUNTIME_DIRECTORY under systemd, /run/alysd as root, else "
                   "$XDG_RUNTIME_DIR/alysd).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help=f"Directory for durable state such as the dead-letter queue (default: "
                   f"${STATE_ENV_VAR}, [system] state_dir, $STATE_DIRECTORY under systemd, "
                   "/var/lib/alysd as root, else $XDG_STATE_HOME/alysd).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None, help="Overrides [system] log_level.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Print versions and exit.")
def main(config_path: str | None, dev: bool, runtime_dir: str | None, state_dir: str | None,
         log_level: str | None) -> None:
    """Run the alysd supervision tree in the foreground."""
    if dev == (config_path is not None):
        raise click.UsageError("give exactly one of --config PATH or --dev")
    path = dev_config_path() if dev else config_path
    try:
        config = load_config(path)
    except ConfigError as exc:
        click.echo(f"alysd: {exc}", err=True)
        sys.exit(ExitStatus.CONFIG)
    except OSError as exc:
        click.echo(f"alysd: cannot read config {path}: {exc.strerror}", err=True)
        sys.exit(ExitStatus.CONFIG)
    logging.basicConfig(level=(log_level or config.system.log_level).upper(),
                        format=LOG_FORMAT, stream=sys.stderr)
    for warning in config.warnings:
        logging.getLogger("alysd").warning("config: %s", warning)
    rundir = RuntimeDir(runtime_dir or os.environ.get(ENV_VAR) or config.system.runtime_dir
                        or default_runtime_dir())
    state_dir = (state_dir or os.environ.get(STATE_ENV_VAR) or config.system.state_dir
                 or default_state_dir())
    set_title(f"alysd: root {rundir.path}")
    try:
        status = Supervisor(config, rundir, state_dir).run()
    except (RuntimeDirError, StateDirError) as exc:
        click.echo(f"alysd: {exc}", err=True)
        sys.exit(ExitStatus.GAVE_UP)
    sys.exit(status)


if __name__ == "__main__":
    main()
