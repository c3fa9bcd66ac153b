"""MkDocs hooks: the home page is README.md, and `<!-- table module:NAME -->` becomes a table made from the code."""

from __future__ import annotations

import importlib
import json
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from pong_train.plugin_options import Flag

MARKER = re.compile(r"^<!-- table ([\w.]+):(\w+) -->$", re.M)
CODE_IN_TABLE_ROW = re.compile(r"(?m)^\|.*$")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri == "index.md":
        readme = Path(config["config_file_path"]).parent / "README.md"
        markdown = readme.read_text().replace("](docs/", "](")  # the README's links, from docs/ itself
    markdown = MARKER.sub(lambda found: table(getattr(importlib.import_module(found[1]), found[2])), markdown)
    return CODE_IN_TABLE_ROW.sub(lambda row: re.sub(r"`[^`]*`", unescape_pipes, row[0]), markdown)


def unescape_pipes(code: Any) -> str:
    """GitHub needs `a\\|b` for a pipe in a table's code span; Python-Markdown shows the backslash, and needs none."""
    return code[0].replace("\\|", "|")


def table(obj: Any) -> str:
    """A pydantic model's fields (or a plugin's options), or a dict's keys, as a Markdown table."""
    if isinstance(obj, dict):
        rows = [f"| `{key}` | `{json.dumps(value)}` |" for key, value in obj.items()]
        return "\n".join(["| key | value |", "|---|---|", *rows])
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise TypeError(f"cannot make a table of {obj!r}: neither a pydantic model nor a dict")
    fields = obj.model_fields
    flags = {name: next((m for m in field.metadata if isinstance(m, Flag)), None) for name, field in fields.items()}
    if any(flags.values()):
        rows = [option_row(field, flag) for field, flag in zip(fields.values(), flags.values())
                if flag is not None and not flag.settings.get("hidden")]
        return "\n".join(["| option | default | meaning |", "|---|---|---|", *rows])
    rows = [f"| `{name}` | `{type_name(field.annotation)}` | {default(field)} | {text(field.description, name)} |"
            for name, field in fields.items()]
    return "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *rows])


def option_row(field: Any, flag: Flag) -> str:
    shown = "" if field.annotation is bool or field.default in (None, {}, []) else f"`{field.default}`"
    meaning = text(field.description or flag.settings.get("help"), flag.decls[0])
    return f"| `{', '.join(flag.decls)}` | {shown} | {meaning} |"


def default(field: Any) -> str:
    """As `--config` JSON writes it."""
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    return f"`{json.dumps(value, default=str)}`"


def type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\b(typing|pathlib)\.", "", str(annotation))


def text(doc: str | None, name: str) -> str:
    """One table cell; a setting without a docstring fails the build."""
    if not doc:
        raise ValueError(f"{name} has no docstring to document it")
    return " ".join(doc.split()).replace("|", "\\|")
