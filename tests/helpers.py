"""Helpers the core's tests import (`from helpers import ...`): the repository, plugin options models, and the tools
any plugin's tests use to drive pong-train (pong_train.testing.tools)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pong_train.testing.tools import (assert_one_line_error, run_cli, run_dirs,  # noqa: F401 (imported from here)
                                      wait_for_a_saved_checkpoint)

REPO = Path(__file__).resolve().parents[1]


def options_model(flag: str, default: Any, help: str | None = None, **settings: Any) -> type:
    """A plugin's options model of one option, `flag`, as a plugin declares it (a bool default makes a flag)."""
    from typing import Annotated

    from pydantic import Field, create_model

    from pong_train.plugin_options import Flag

    field = flag.lstrip("-").replace("-", "_")
    return create_model("Options", **{field: (Annotated[type(default), Flag(flag, **settings)],
                                              Field(default, description=help))})
