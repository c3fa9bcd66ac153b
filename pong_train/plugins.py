"""The plugin manager: hook specs plus every plugin installed under the `pong_train` entry-point group."""

from __future__ import annotations

from typing import Iterable

import pluggy

from pong_train import PROJECT_NAME, hookspecs
from pong_train.errors import UsageError
from pong_train.job import Backend


def get_plugin_manager(extra_plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """A fresh plugin manager: built-in and third-party plugins alike come from the entry-point group."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(PROJECT_NAME)
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def backends(pm: pluggy.PluginManager) -> dict[str, tuple[Backend, object]]:
    """Backend name -> (its declaration, the plugin that declared it)."""
    found: dict[str, tuple[Backend, object]] = {}
    for impl in pm.hook.pong_train_backends.get_hookimpls():
        for backend in impl.function() or []:
            if backend.name in found:
                raise UsageError(f"backend '{backend.name}' is declared by two plugins: {impl.plugin_name} and another")
            found[backend.name] = (backend, impl.plugin)
    return found


def distribution_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str]:
    """(distribution name, version) a plugin was installed with, or ('-', '-') when registered by hand."""
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            return dist.project_name, dist.version
    return "-", "-"
