"""The `pong-train` command line: the root command trains (cli/train.py); each subcommand is a module here.

`main` puts the plugins' options and subcommands beside the core's and turns every failure into one
line on stderr and an exit status: 2 for bad input, 1 for a failed run or plugin, 3 for lost results.
"""

from __future__ import annotations

import copy
import sys
import traceback
import click

from pong_train.cli.backends import backends
from pong_train.cli.bench import bench
from pong_train.cli.evaluate import evaluate
from pong_train.cli.export import export
from pong_train.cli.plot import plot
from pong_train.cli.train import cli
from pong_train.errors import EXIT_USAGE, NodeError, PluginError, ServiceError, UsageError
from pong_train.plugin_options import add_plugin_options
from pong_train.plugins import PluginManager, get_plugin_manager

CORE_COMMANDS = (backends, bench, evaluate, export, plot)
for _command in CORE_COMMANDS:
    cli.add_command(_command)


def with_plugins(plugins: PluginManager) -> click.Group:
    """A copy of the root command with the plugins' options and subcommands added (the module's stays as is)."""
    group = copy.copy(cli)
    group.params, group.commands = list(cli.params), dict(cli.commands)
    for at, param in enumerate(group.params):
        if param.name == "backend":  # the choices are the installed backends
            group.params[at] = copy.copy(param)
            group.params[at].metavar = "[" + "|".join(sorted(plugins.backends())) + "]"
    add_plugin_options(group.params, plugins)
    for plugin_name, commands in plugins.discover("pong_train_cli_commands"):
        for command in commands:
            if command.name in group.commands:
                raise PluginError(f"{plugins.label(plugin_name)} adds subcommand {command.name}, which already exists")
            group.add_command(command)
    return group


def one_line(message: str) -> str:
    """User input echoed in an error must not break it over lines: control characters are escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in message)


def error(message: str) -> None:
    click.echo(one_line(f"pong-train: {message}"), err=True)


def main(argv: list[str] | None = None, plugin_manager: PluginManager | None = None) -> int:
    """Entry point of `pong-train` and `python -m pong_train`; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        plugins = plugin_manager or get_plugin_manager()
        group = with_plugins(plugins)
        plugins.backends()
        if argv[:1] != ["backends"]:
            for broken in plugins.broken:
                error(f"warning: {broken.label} is not loaded: {broken.problem}")
        status = group.main(args=argv, prog_name="pong-train", standalone_mode=False, obj=plugins)
        return status if isinstance(status, int) else 0
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as err:
        error(f"error: {err.format_message()} (see pong-train --help)")
        return EXIT_USAGE
    except (UsageError, PluginError, NodeError, ServiceError) as err:
        if debug:
            traceback.print_exc()
        error(f"error: {err}")
        return err.exit_code
    except (KeyboardInterrupt, click.Abort):
        error("interrupted")
        return 130
    except Exception as err:  # the last line of defence: no traceback unless asked for
        if debug:
            raise
        error(f"internal error: {type(err).__name__}: {err} (rerun with --debug for details)")
        return 1

