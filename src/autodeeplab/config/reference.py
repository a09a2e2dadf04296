"""The configuration reference page, generated from the config dataclasses themselves.

Every key of every section, with its type, default, allowed range or choices and the comment
that explains it in the dataclass's source, so the page cannot drift from the code:
``python -m autodeeplab.config.reference > docs/configuration.md`` writes it, and a test
fails when the committed page differs.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import sys
import tokenize
from typing import Any

from autodeeplab.config.checks import CHOICES, RANGES, WORDS
from autodeeplab.config.search import SearchConfig
from autodeeplab.config.train import TrainConfig

__all__ = ["config_reference", "field_comments"]

_HEADER = """\
# Configuration

Generated from the config dataclasses by `python -m autodeeplab.config.reference >
docs/configuration.md`; a test fails when this page and the code disagree. Do not edit it
by hand: edit the comment beside the field in `src/autodeeplab/config/`.

A config has sections; a YAML preset (under `configs/`) sets any of their keys, and
`--set section.key=value` (or a bare `key=value` when only one section has it) overrides
one on the command line. `autodeeplab run` takes both stages' keys with the stage first:
`--set search.epochs=2`, `--set train.iters=50`, `--set search.model.num_layers=4`.
Unknown keys, wrong types and values out of range are refused when the config is loaded,
with one line naming the file and the key.
"""


def field_comments(cls: type) -> dict[str, str]:
    """Each field's explaining comment: the ``#`` lines just above it and the one after it.

    Read with :mod:`tokenize` from the source of the class and of the dataclasses it extends
    (a field inherited from ``SupernetSpec`` keeps that class's comment), so a ``#`` inside a
    string is never taken for a comment.
    """
    comments: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            comments.update({k: v for k, v in _own_comments(base).items() if v})
    return comments


def _own_comments(cls: type) -> dict[str, str]:
    source = inspect.getsource(cls)
    comments: dict[str, str] = {}
    pending: list[str] = []
    line_field: dict[int, str] = {}
    for line_no, line in enumerate(source.splitlines(), start=1):
        match = re.match(r"^    (\w+)\s*:", line)
        if match:
            line_field[line_no] = match.group(1)
    trailing: dict[int, str] = {}
    own_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        text = tok.string.lstrip("#").strip()
        row = tok.start[0]
        if tok.line[: tok.start[1]].strip():
            trailing[row] = text
        else:
            own_line[row] = text
    for row in sorted(set(line_field) | set(own_line)):
        if row in own_line:
            pending.append(own_line[row])
            continue
        name = line_field[row]
        parts = [*pending]
        if row in trailing:
            parts.append(trailing[row])
        comments[name] = " ".join(parts)
        pending = []
    return comments


def _type_name(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return str(text).replace("typing.", "")


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _allowed(name: str) -> str:
    parts = []
    if name in RANGES:
        low, high = RANGES[name]
        parts.append(f"{low:g} to {high:g}")
    if name in CHOICES:
        parts.append(" or ".join(_show(c) for c in CHOICES[name]))
    if name in WORDS:
        parts.append("or " + " / ".join(WORDS[name]))
    return "; ".join(parts)


def _cell(text: str) -> str:
    return _plain(text).replace("|", "\\|").replace("\n", " ")


def _plain(text: str) -> str:
    """Sphinx roles (``:class:`~a.B` ``) as Markdown code (`` `a.B` ``)."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)


def _section(stage: str, name: str, section: Any) -> list[str]:
    cls = type(section)
    doc = _plain((inspect.getdoc(cls) or "").splitlines()[0])
    comments = field_comments(cls)
    lines = [f"### `{name}`", "", doc, "", "| key | type | default | allowed | what it does |"]
    lines.append("|---|---|---|---|---|")
    for field in dataclasses.fields(cls):
        default = getattr(section, field.name, _default(field))
        lines.append(
            f"| `{name}.{field.name}` | `{_cell(_type_name(field.type))}` | "
            f"`{_cell(_show(default))}` | {_cell(_allowed(field.name))} | "
            f"{_cell(comments.get(field.name, ''))} |"
        )
    return [*lines, ""]


def config_reference() -> str:
    """The whole configuration page (Markdown), from the dataclasses' defaults and comments."""
    out = [_HEADER]
    for stage, config, command in (
        ("search", SearchConfig(), "`autodeeplab search` (and `run`'s search stage)"),
        ("train", TrainConfig(), "`autodeeplab train`, `eval`, `compare` (and `run`'s training)"),
    ):
        out += [f"## The {stage} config", "", f"Read by {command}.", ""]
        for field in dataclasses.fields(config):
            out += _section(stage, field.name, getattr(config, field.name))
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(config_reference())
