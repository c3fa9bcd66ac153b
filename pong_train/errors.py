"""The errors the command line turns into one line on stderr, and the "did you mean" hint they share."""

from __future__ import annotations

import difflib
from typing import Iterable


class UsageError(Exception):
    """Bad input from the user: printed as one line on stderr, exit code 2, no traceback."""

    exit_code = 2


class PluginError(Exception):
    """A plugin failed (its code raised, or it does not fit the hook specs): one line naming the plugin's
    distribution, version and hook; exit code 1; the traceback only with --debug."""

    exit_code = 1


class NodeError(Exception):
    """A machine of the run could not take its part (a cluster node that cannot join or stay): one line on stderr,
    exit code 1, the traceback only with --debug."""

    exit_code = 1


class ServiceError(Exception):
    """A service the job depends on refused or failed (a cloud workspace, its sign-in, the network to it): one line
    saying what happened, as the service put it, and what to do; exit code 1. The plugin that raises it is not to
    blame, so its name stays out of the line; the traceback only with --debug."""

    exit_code = 1


def closest(word: str, candidates: Iterable[str], cutoff: float = 0.5) -> str | None:
    """The candidate `word` was most likely meant to be, or None."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return match[0] if match else None


EXIT_OK = 0
EXIT_FAILED = 1
"""Training failed, or a plugin raised."""
EXIT_USAGE = UsageError.exit_code
EXIT_LOST_RESULTS = 3
"""Training finished (checkpoints kept) but a result logger ended with results it never took."""
