"""Plugins' command-line options, their whole life in one place: a plugin declares them as a pydantic model (each
field one option, `Flag` says its flags, its docstring the help); the core adds click options made from the model
to the root command (`add_plugin_options`), refuses a backend's options given with another backend
(`check_owners`), validates the values with the model (`validated`) and keeps them in the job under the plugin's
name, by field name (`kept_options`: `job.options["azureml"]`)."""

from __future__ import annotations

import re
from typing import Any, Literal, get_args, get_origin

import click
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from pong_train.errors import PluginError, UsageError, validation_line

PLUGIN_ATTR = "pong_train_plugin"
"""Set on each click option made from a plugin's model: the name of that plugin."""

def param_prefix(owner: str) -> str:
    """What the name click gives an option of `owner`'s model starts with (`azureml__compute`): two plugins' fields
    of one name never meet, and the name stays a Python identifier, as click wants it."""
    return re.sub(r"\W", "_", owner) + "__"


class Flag:
    """How a field of a plugin's options model appears on the command line: its flags and click's own settings
    (`hidden`, `type`, `multiple`, `metavar`, ...) for it."""

    def __init__(self, *decls: str, **settings: Any) -> None:
        self.decls = list(decls)
        self.settings = settings


def is_options_model(declared: Any) -> bool:
    return isinstance(declared, type) and issubclass(declared, BaseModel)


def click_settings(field: FieldInfo, flag: Flag) -> dict[str, Any]:
    """click's settings for one field: a flag for a bool, choices for a Literal, help from the docstring."""
    settings: dict[str, Any] = {"help": field.description}
    annotation = field.annotation
    if get_origin(annotation) is not Literal:  # Optional[Literal[...]]
        annotation = next((arg for arg in get_args(annotation) if get_origin(arg) is Literal), annotation)
    if field.annotation is bool:
        settings["is_flag"] = True
    elif get_origin(annotation) is Literal:
        settings["type"] = click.Choice(get_args(annotation))
    settings.update(flag.settings)
    if field.default is not None and not settings.get("is_flag") and not settings.get("multiple"):
        settings.update(default=field.default, show_default=True)
    return settings


def declarations(model: type[BaseModel], *names: str) -> list[tuple[str, list[str], dict[str, Any]]]:
    """(field name, flags, click settings) of the model's named fields, or of every field with a Flag, in order."""
    found = []
    for name, field in model.model_fields.items():
        flag = next((meta for meta in field.metadata if isinstance(meta, Flag)), None)
        if flag is not None and (not names or name in names):
            found.append((name, flag.decls, click_settings(field, flag)))
    return found


def click_options(model: type[BaseModel], owner: str) -> list[click.Option]:
    """Fresh click options for every field of `model`, each named `<owner>__<field>`."""
    return [click.Option([*(d for d in decls if not d.isidentifier()), param_prefix(owner) + name], **settings)
            for name, decls, settings in declarations(model)]


def validated(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """The model of `values` (by field name; missing ones take their defaults). A value the model refuses is a
    UsageError naming the option's flag: one line, exit 2."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        flags = {name: decls[0] for name, decls, _ in declarations(model)}
        raise UsageError(validation_line(err, lambda loc: flags.get(str(loc[0]), str(loc[0])) if loc
                                         else "")) from None


def one_model(answer: list[Any]) -> str | None:
    """What is wrong with a `pong_train_cli_options` answer, if anything: it holds one options model or nothing."""
    if len(answer) > 1 or any(not is_options_model(item) for item in answer):
        return (f"returned {', '.join(type(item).__name__ for item in answer)}; return [YourOptions], one pydantic "
                "model whose fields carry a Flag (docs/plugins.md)")
    return None


def add_plugin_options(params: list[click.Parameter], plugins: Any) -> None:
    """Append to the root command's `params` the options made from each plugin's model, each marked with its
    plugin (`PLUGIN_ATTR`) and listed in --help under its name; a flag that clashes is the plugin's error."""
    taken = {opt for param in params for opt in param.opts}
    for plugin_name, declared in plugins.discover("pong_train_cli_options", misfit=one_model):
        if not declared:
            continue
        plugins.option_models[plugin_name] = declared[0]
        for option in click_options(declared[0], plugin_name):
            clash = taken.intersection(option.opts)
            if clash:
                raise PluginError(f"{plugins.label(plugin_name)} adds option {sorted(clash)[0]}, which pong-train "
                                  "already has")
            setattr(option, PLUGIN_ATTR, plugin_name)
            option.help = f"[{plugin_name}] {option.help or ''}".strip()
            params.append(option)
            taken.update(option.opts)


def owners(params: list[click.Parameter]) -> dict[str, str]:
    """Parameter name -> the plugin whose option it is, for the options `add_plugin_options` added."""
    return {param.name: getattr(param, PLUGIN_ATTR) for param in params if getattr(param, PLUGIN_ATTR, None)}


def check_owners(params: list[click.Parameter], plugins: Any, backend: str, given: set[str]) -> None:
    """Options of another backend make no sense here; observers' options (a plugin with no backend) go with any."""
    backend_plugins = {plugin for _, plugin in plugins.backends().values()}
    for param in params:
        plugin_name = getattr(param, PLUGIN_ATTR, None)
        if param.name in given and plugin_name in backend_plugins - {plugins.backends()[backend][1]}:
            raise UsageError(f"{param.opts[0]} belongs to {plugins.label(plugin_name)}, not to backend '{backend}'")


def by_plugin(params: list[click.Parameter], values: dict[str, Any], only: set[str] | None = None) -> dict[str, dict]:
    """The values click parsed for the plugins' options (`only` those, if given), by plugin, then by field."""
    owned = owners(params)
    grouped: dict[str, dict[str, Any]] = {plugin: {} for plugin in owned.values()}
    for name, plugin in owned.items():
        if only is None or name in only:
            value = values[name]
            grouped[plugin][name.removeprefix(param_prefix(plugin))] = list(value) if isinstance(value, tuple) else value
    return grouped


def kept_options(plugins: Any, values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the job keeps of each plugin's options: as its model validates them, defaults included, as JSON."""
    return {plugin: validated(plugins.option_models[plugin], given).model_dump(mode="json")
            for plugin, given in values.items()}
