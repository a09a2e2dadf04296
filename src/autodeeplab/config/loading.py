"""Loading and saving configs: YAML presets (a safe loader with YAML 1.2 booleans) and
``--set key=value`` overrides merged into the frozen dataclasses, and back to plain dicts.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from dataclasses import fields, is_dataclass, replace
from typing import Any, TypeVar

import yaml

from autodeeplab.config.checks import (
    ConfigError,
    check_choice,
    check_range,
    check_words,
    coerce,
)
from autodeeplab.config.search import SearchConfig
from autodeeplab.files import require_file, write_text_atomic

__all__ = ["config_from_dict", "config_to_dict", "load_config", "save_config"]

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-ready dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false (any case) are bools.

    YAML 1.1 also reads on/off/yes/no as booleans, so ``amp: off`` or ``--set amp=off``
    reached a string option as False. Boolean options still accept those words
    (:func:`coerce`). A key given twice in one mapping is an error: PyYAML keeps the last
    without a word, so a preset edited by hand could silently lose the value meant.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping of ``node``; a ConstructorError for a key it names twice."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' merges may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {str(key)[:60]!r} at line {key_node.start_mark.line + 1}; "
                    "keep one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


_SafeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`_SafeLoader`."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


def _merge(cfg: T, data: Any, where: str, prefix: str = "") -> T:
    """Return ``cfg`` updated from the nested mapping ``data``."""
    if not isinstance(data, dict):
        section = prefix.rstrip(".") or "top level"
        raise ConfigError(f"{where}: section '{section}' must be a mapping")
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in fields(cfg)}
    updates = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            # The closest names when there are any; the whole list only for a short section
            # (the search loop has over 40 keys: listing them all hides the one meant).
            close = difflib.get_close_matches(str(key), sorted(names), n=3, cutoff=0.6)
            shown = close if close or len(names) > 12 else sorted(names)
            what = "did you mean" if close else "valid keys here:"
            hint = f"{what} {', '.join(f'{prefix}{n}' for n in shown)}" if shown else ""
            raise ConfigError(
                f"{where}: unknown key '{dotted}'; "
                + (hint or "see docs/configuration.md for the keys of each section")
            )
        current = getattr(cfg, key)
        if is_dataclass(current):
            updates[key] = _merge(current, value, where, f"{dotted}.")
        else:
            value = coerce(value, hints[key], f"{where}: key '{dotted}'")
            check_range(key, value, f"{where}: key '{dotted}'")
            check_choice(key, value, f"{where}: key '{dotted}'")
            check_words(key, value, f"{where}: key '{dotted}'")
            updates[key] = value
    return replace(cfg, **updates)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set search.epochs=10")
    key, raw = text.split("=", 1)
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except (yaml.YAMLError, RecursionError):
        value = raw
    return key.strip().split("."), value


def _resolve_key(cfg: Any, parts: list[str], text: str) -> list[str]:
    """Full dotted path of an override; a bare leaf name is accepted when unambiguous."""
    if len(parts) > 1:
        return parts
    matches = [
        [f.name, parts[0]]
        for f in fields(cfg)
        if is_dataclass(getattr(cfg, f.name))
        and parts[0] in {g.name for g in fields(getattr(cfg, f.name))}
    ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        options = ", ".join(".".join(m) for m in matches)
        raise ConfigError(f"--set {text!r}: ambiguous key, use one of {options}")
    return parts


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: T | None = None,
) -> T:
    """Defaults (``base``, a SearchConfig by default) <- YAML file <- ``overrides``."""
    cfg: Any = base if base is not None else SearchConfig()
    if path is not None:
        p = require_file(path, "config file", "pass a YAML file from configs/")
        try:
            data = _load_yaml(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ConfigError(f"{p}: not valid YAML ({first})") from None
        if data is not None:
            cfg = _merge(cfg, data, str(p))
    for text in overrides:
        parts, value = _parse_override(text)
        parts = _resolve_key(cfg, parts, text)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        shown = text if text.isprintable() else repr(text)  # keep the error on one line
        cfg = _merge(cfg, nested, f"--set {shown}")
    return cfg


def config_from_dict(data: dict[str, Any], base: T, where: str = "config") -> T:
    """Rebuild a config from :func:`config_to_dict` output (e.g. stored in a checkpoint)."""
    return _merge(base, data, where)


def save_config(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically."""
    # Unchanged (a resume): the file and its mtime are kept.
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
