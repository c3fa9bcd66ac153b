"""pong-train: IMPALA on Atari Pong with Ray RLlib, behind pluggable backends."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("pong-train")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

PROJECT_NAME = "pong_train"
"""The one name used for the hook prefix, the pluggy markers and the entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "__version__", "hookimpl", "hookspec"]
