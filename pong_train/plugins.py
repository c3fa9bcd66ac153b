"""The plugin manager: hook specs, every plugin installed under the `pong_train` entry-point group, and
calls into plugins that name the plugin (distribution, version, hook) when it fails."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import inspect
import sys
from importlib import metadata
from typing import Any, Callable, Iterable, Iterator

import pluggy

from pong_train import PROJECT_NAME, hookspecs
from pong_train.errors import PluginError, ServiceError, UsageError, closest, first_line
from pong_train.job import Backend, Invocation

HOOK_PREFIX = PROJECT_NAME + "_"


@dataclasses.dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that was not loaded, and why; `pong-train backends` lists it."""

    name: str
    """Its entry-point name (or the name it was registered under)."""
    dist: str
    version: str
    problem: str

    @property
    def label(self) -> str:
        return plugin_label(self.name, self.dist, self.version)


def plugin_label(name: str, dist: str, version: str) -> str:
    """How a message names a plugin: its distribution and version, and its entry-point name."""
    return f"plugin {name}" if dist == "-" else f"plugin {dist} {version} ({name})"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, checking each plugin before it joins and remembering the ones that did not."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.broken: list[BrokenPlugin] = []
        self._distributions: dict[str, tuple[str, str]] = {}
        self._backends: dict[str, tuple[Backend, str]] | None = None
        self.option_models: dict[str, type] = {}
        """Plugin name -> the pydantic model its options were declared as (`pong_train_cli_options`)."""

    def load_installed(self) -> None:
        """Every plugin of the entry-point group, one by one: a broken one is set aside, not fatal."""
        for entry_point in metadata.entry_points(group=PROJECT_NAME):
            dist = entry_point.dist
            self._distributions[entry_point.name] = (dist.name, dist.version) if dist else ("-", "-")
            try:
                plugin = entry_point.load()
            except Exception as err:  # whatever the plugin's import raises
                self.set_aside(entry_point.name, f"cannot be imported ({type(err).__name__}: {err})")
                continue
            self.add(plugin, entry_point.name)

    def add(self, plugin: object, name: str | None = None) -> None:
        """Register `plugin` if its hooks fit the specs; otherwise set it aside as broken."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self._backends = None
        problem = self.misfit(plugin)
        if problem is None:
            try:
                self.register(plugin, name)
            except (pluggy.PluginValidationError, ValueError) as err:
                problem = " ".join(str(err).split())
        if problem is not None:
            self.set_aside(name, problem)

    def misfit(self, plugin: object) -> str | None:
        """What keeps `plugin` from fitting the hook specs: an unknown hook name, or a hook without @hookimpl."""
        known = [name for name in dir(hookspecs) if name.startswith(HOOK_PREFIX)]
        for attr in dir(plugin):
            if not attr.startswith(HOOK_PREFIX):
                continue
            function = getattr(plugin, attr)
            if not inspect.isroutine(function):
                continue
            if attr not in known:
                meant = closest(attr, known)
                hint = f"; did you mean {meant}?" if meant else f"; the hooks are {', '.join(known)}"
                return f"defines unknown hook {attr}{hint}"
            if self.parse_hookimpl_opts(plugin, attr) is None:
                return f"defines {attr} without @hookimpl, so pong-train would never call it"
        return None

    def set_aside(self, name: str, problem: str) -> None:
        self.broken.append(BrokenPlugin(name, *self.distribution(name), problem))

    def label(self, name: str) -> str:
        return plugin_label(name, *self.distribution(name))

    def distribution(self, name: str) -> tuple[str, str]:
        """(distribution, version) the plugin was installed with; ('-', '-') when registered by hand."""
        return self._distributions.get(name, ("-", "-"))

    @contextlib.contextmanager
    def blame(self, hook: str, name: str | None = None) -> Iterator[None]:
        """Turn an exception escaping a plugin's implementation of `hook` into a PluginError that names the plugin
        (`name`, else the one whose implementation the traceback passes through); bad input stays a UsageError."""
        try:
            yield
        except (UsageError, PluginError, ServiceError, KeyboardInterrupt):
            raise
        except Exception as err:
            if name is None:
                name = self.culprit(hook, err)
            said = first_line(err)
            raise PluginError(f"{self.label(name)}: hook {hook} failed: {type(err).__name__}"
                              + (f": {said}" if said != type(err).__name__ else "")) from err

    def culprit(self, hook: str, err: BaseException) -> str:
        """The plugin whose implementation of `hook` the error's traceback passes through last."""
        owners = {impl.function.__code__: impl.plugin_name for impl in self.impls(hook)}
        frames, found = err.__traceback__, "an unknown plugin"
        while frames is not None:
            found = owners.get(frames.tb_frame.f_code, found)
            frames = frames.tb_next
        return found

    def call(self, hook: str, impl: pluggy.HookImpl, **kwargs: Any) -> Any:
        """One plugin's implementation of `hook`, called through pluggy, failures naming the plugin."""
        others = [p for p in self.get_plugins() if p is not impl.plugin]
        with self.blame(hook, impl.plugin_name):
            result = self.subset_hook_caller(hook, remove_plugins=others)(**kwargs)
        # A collecting hook returns [its result]; a firstresult hook returns it bare.
        return result[0] if isinstance(result, list) and result else result

    def impls(self, hook: str) -> list[pluggy.HookImpl]:
        """The implementations of `hook`, in the order pluggy calls them."""
        return list(reversed(getattr(self.hook, hook).get_hookimpls()))

    def results(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """(plugin name, result) of each plugin implementing `hook`, called one at a time."""
        return [(impl.plugin_name, self.call(hook, impl, **kwargs)) for impl in self.impls(hook)]

    def discover(self, hook: str, misfit: Callable[[list[Any]], str | None] | None = None
                 ) -> list[tuple[str, list[Any]]]:
        """Like `results` for the hooks every command calls first: a plugin that fails there, or whose answer
        `misfit` finds fault with (what is wrong, else None), is set aside."""
        found = []
        for impl in self.impls(hook):
            try:
                answer = self.call(hook, impl) or []
                problem = (f"returned {type(answer).__name__}, not a list" if not isinstance(answer, (list, tuple))
                           else misfit(list(answer)) if misfit else None)
                if problem:
                    raise PluginError(f"{self.label(impl.plugin_name)}: hook {hook} {problem}")
                found.append((impl.plugin_name, list(answer)))
            except (UsageError, PluginError) as err:
                self.unregister(impl.plugin)
                self._backends = None  # a backend it declared is no longer offered
                self.set_aside(impl.plugin_name, str(err).split(": ", 1)[-1])
        return found

    def backends(self) -> dict[str, tuple[Backend, str]]:
        """Backend name -> (its declaration, the name of the plugin that declared it)."""
        if self._backends is not None:
            return self._backends
        found: dict[str, tuple[Backend, str]] = {}
        for plugin_name, declared in self.discover("pong_train_backends"):
            for backend in declared:
                if backend.name in found:
                    raise UsageError(f"backend '{backend.name}' is declared by two plugins: "
                                     f"{self.label(found[backend.name][1])} and {self.label(plugin_name)}")
                found[backend.name] = (backend, plugin_name)
        self._backends = found
        return found

    def launch(self, job: Any, invocation: Any) -> int | None:
        """`pong_train_launch` through pluggy, whose firstresult stops at the first backend that answers; a failure
        names the plugin that raised it."""
        launching = LAUNCHING.set(invocation)
        try:
            with self.blame("pong_train_launch"):
                return self.hook.pong_train_launch(job=job, invocation=invocation)
        finally:
            LAUNCHING.reset(launching)


LAUNCHING: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("launching", default=None)
"""The invocation of the `pong_train_launch` call under way, for a backend that trains without handing it on."""


def with_plugins(invocation: Invocation | None) -> Invocation:
    """The invocation training runs with, always with a plugin manager, so the plugins' loggers run.

    None (a backend that calls `run_training(job)`) is the invocation being launched, or outside any command a
    fresh plugin manager's; one handed over without a plugin manager gets the command's, and is told so.
    """
    if invocation is not None and invocation.plugin_manager is not None:
        return invocation
    launching = LAUNCHING.get()
    plugins = launching.plugin_manager if launching is not None and launching.plugin_manager else None
    if invocation is None:
        return launching if plugins is not None else Invocation(plugin_manager=get_plugin_manager())
    print("pong-train: note: run_training was given an invocation without a plugin manager, which would skip the "
          "plugins' loggers; it runs with the command's (pass on the invocation pong_train_launch received)",
          file=sys.stderr)
    return invocation.but(plugin_manager=plugins or get_plugin_manager())


def get_plugin_manager(extra_plugins: Iterable[object] = ()) -> PluginManager:
    """A fresh plugin manager: built-in and third-party plugins alike come from the entry-point group."""
    pm = PluginManager()
    pm.load_installed()
    for plugin in extra_plugins:
        pm.add(plugin)
    return pm
