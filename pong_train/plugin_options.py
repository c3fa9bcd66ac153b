"""A plugin's options declared as a pydantic model: each field is one command-line option (`Flag` says its flags),
its docstring the option's help; the core builds the click options from the model, validates the values with it and
keeps them in the job under the plugin's name (`job.options["azureml"]`)."""

from __future__ import annotations

import re
from typing import Any, Literal, get_args, get_origin

import click
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from pong_train.errors import UsageError

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
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = next((decls[0] for name, decls, _ in declarations(model) if name == field), field or "an option")
        raise UsageError(f"{flag} {first.get('input')!r}: {first['msg'].removeprefix('Value error, ')}") from None
