"""The errors the command line turns into one line on stderr, and the "did you mean" hint they share."""

from __future__ import annotations

import difflib
import json
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from pydantic import ValidationError


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


def first_line(err: object) -> str:
    """The first line of an error's message that says something, or the error's type when it says nothing."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def last_line(err: object) -> str:
    """The last line that says something: where a remote error's message is the traceback that ends in it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def validation_line(err: "ValidationError", where: Callable[[tuple], str]) -> str:
    """A model's first refusal as one line, `where(loc)` in front: the place of the refused value as the user gave
    it (a flag, a config key, a job file's field; for a rule over the whole model, loc is empty and `where` may
    give nothing). The model's own rules (pydantic's value_error) say what they got; pydantic's are told it."""
    first = err.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] != "value_error":
        message += f" (got {json.dumps(first.get('input'), default=str)[:80]})"
    # A union's member shows in loc by its type ('constrained-float'): not a place the user wrote.
    place = where(tuple(part for part in first["loc"] if isinstance(part, int) or str(part).isidentifier()))
    return f"{place}: {message}" if place else message


EXIT_OK = 0
EXIT_FAILED = 1
"""Training failed, or a plugin raised."""
EXIT_USAGE = UsageError.exit_code
EXIT_LOST_RESULTS = 3
"""Training finished (checkpoints kept) but a result logger ended with results it never took."""
