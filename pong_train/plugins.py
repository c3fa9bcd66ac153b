"""The plugin manager: hook specs plus every plugin installed under the `pong_train` entry-point group."""

from __future__ import annotations

from typing import Any, Iterable

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


def results_by_plugin(pm: pluggy.PluginManager, hook: str) -> list[tuple[str, list[Any]]]:
    """(plugin name, its result) for each implementation of a collecting hook, to trace results to plugins."""
    return [(impl.plugin_name, impl.function() or []) for impl in getattr(pm.hook, hook).get_hookimpls()]


def backends(pm: pluggy.PluginManager) -> dict[str, tuple[Backend, str]]:
    """Backend name -> (its declaration, the name of the plugin that declared it)."""
    found: dict[str, tuple[Backend, str]] = {}
    for plugin_name, declared in results_by_plugin(pm, "pong_train_backends"):
        for backend in declared:
            if backend.name in found:
                raise UsageError(f"backend '{backend.name}' is declared by two plugins: {plugin_name} and another")
            found[backend.name] = (backend, plugin_name)
    return found


def distribution_of(pm: pluggy.PluginManager, plugin_name: str) -> tuple[str, str]:
    """(distribution name, version) a plugin was installed with, or ('-', '-') when registered by hand."""
    for loaded, dist in pm.list_plugin_distinfo():
        if pm.get_name(loaded) == plugin_name:
            return dist.project_name, dist.version
    return "-", "-"
