"""Progress for the long steps (Ray start-up, restoring, submitting, evaluating): a spinner on a terminal,
a line when each is done elsewhere (CI logs, Azure ML logs)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterable, Iterator


def show_notes(notes: Iterable[str]) -> None:
    """The job's `note:` lines (one per translated legacy key), once the job has passed every check."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


@contextlib.contextmanager
def step(message: str, quiet: bool = False) -> Iterator[None]:
    """Show `message` while the block runs (nothing with `quiet`, as under --quiet)."""
    if quiet:
        yield
        return
    started = time.monotonic()
    if sys.stderr.isatty():
        from rich.console import Console

        with Console(stderr=True).status(message):
            yield
    else:  # in a log, one line once the step is done (a failing step leaves only its error)
        yield
    print(f"{message}: done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
