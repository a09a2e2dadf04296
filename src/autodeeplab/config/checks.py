"""Checks of config values: types (with YAML 1.1's boolean words), ranges and choices.

Each error is one :class:`ConfigError` line that names the file or override and the key.
"""

from __future__ import annotations

import math
import re
import reprlib
import types
import typing
from typing import Any

__all__ = [
    "BOOL_WORDS",
    "CHOICES",
    "ConfigError",
    "RANGES",
    "WORDS",
    "check_choice",
    "check_range",
    "check_words",
    "coerce",
    "show",
]


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the file and key."""


# YAML 1.1's boolean words, which boolean keys still accept (the loader reads them as strings).
BOOL_WORDS = {"on": True, "yes": True, "off": False, "no": False}

_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 60, 40, 60


def show(value: Any) -> str:
    """A bounded repr for error messages: a hostile value must not flood the terminal."""
    text = _REPR.repr(value)
    return text if len(text) <= 120 else f"{text[:117]}..."


# Allowed values of numeric keys, by key name in any section: (low, high), both inclusive;
# a list-valued key is checked element by element. A value outside fails when the config is
# loaded, naming the key, instead of deep inside torch, or worse, not at all (epochs=0 would
# decode an untrained supernet and write it as the result).
RANGES: dict[str, tuple[float, float]] = {
    # sizes and counts
    "num_layers": (1, 1024),
    "num_blocks": (1, 64),
    "filter_multiplier": (1, 4096),
    "stem_channels": (1, 4096),
    "partial_channels": (1, 4096),
    "cost_filter_multiplier": (1, 4096),
    "aspp_channels": (1, 65536),
    "decoder_channels": (1, 65536),
    "crop": (8, 16384),  # the stem and four strides need 8 pixels at least
    "longest_side": (8, 65536),
    "window": (8, 65536),
    "stride": (1, 65536),
    "train_samples": (1, 10**9),
    "val_samples": (1, 10**9),
    "num_workers": (0, 1024),
    "batch_size": (1, 65536),
    "epochs": (1, 10**6),
    "arch_start_epoch": (0, 10**6),
    "arch_start_loss": (0.0, 1e3),
    "arch_logit_budget": (1e-3, 1e3),
    "min_path_margin": (0.0, 1e3),
    "aux_skip": (0.0, 10.0),
    "skip_dropout": (0.0, 0.99),
    "iters": (1, 10**10),
    "eval_every": (1, 10**10),
    "log_every": (1, 10**10),
    "keep_checkpoints": (1, 10**6),
    "seed": (0, 2**63 - 1),  # torch.manual_seed takes a 64-bit integer
    # rates and coefficients (finite: YAML's .nan and .inf are floats too)
    "lr": (0.0, 1e3),
    "lr_min": (0.0, 1e3),
    "arch_lr": (0.0, 1e3),
    "momentum": (0.0, 1.0),
    "weight_decay": (0.0, 1e3),
    "arch_weight_decay": (0.0, 1e3),
    "arch_betas": (0.0, 0.999999),
    "grad_clip": (1e-12, 1e12),
    "split_fraction": (0.01, 0.99),
    "cost_weight": (0.0, 1e6),
    "scale": (0.01, 100.0),
    "scales": (0.01, 100.0),
    "poly_power": (0.0, 100.0),
    "dropout": (0.0, 0.99),
    "drop_path_keep_prob": (0.01, 1.0),
    "aspp_gamma_init": (1e-12, 1e6),
    "max_skipped": (0.0, 1.0),
    "decode_candidates": (1, 10**5),
    "decode_generations": (0, 10**4),
    "score_recal_batches": (1, 10**6),
    "score_val_batches": (1, 10**9),
}


# Keys whose value must be one of a few (checked after the type).
CHOICES: dict[str, tuple[Any, ...]] = {
    "checkpoint_cells": (True, False, "auto"),
    "path_decode": ("relative", "literal"),
    "arch_lr_schedule": ("constant", "cosine"),
    "val_bn": ("batch", "recalibrate", "running"),
    "decode": ("argmax", "score"),
}
# Keys that take a number or one of a few words (checked after the type and the range).
WORDS: dict[str, tuple[str, ...]] = {"arch_lr": ("auto",), "arch_start_loss": ("prior",)}


def check_choice(key: str, value: Any, where: str) -> None:
    """Raise ConfigError if ``value`` of ``key`` is not one of :data:`CHOICES`."""
    choices = CHOICES.get(key)
    if choices is None or any(type(value) is type(c) and value == c for c in choices):
        return
    shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
    raise ConfigError(f"{where}: {show(value)} is not allowed; use one of {shown}")


def check_words(key: str, value: Any, where: str) -> None:
    """Raise ConfigError if a string ``value`` of a number-or-word key is not one of its words."""
    words = WORDS.get(key)
    if words is None or not isinstance(value, str) or value in words:
        return
    raise ConfigError(f"{where}: {show(value)} is not allowed; use a number or {', '.join(words)}")


def check_range(key: str, value: Any, where: str) -> None:
    """Raise ConfigError if the numeric ``value`` of ``key`` is outside :data:`RANGES`."""
    if key not in RANGES or value is None:
        return
    lo, hi = RANGES[key]
    for v in value if isinstance(value, tuple) else (value,):
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue  # a type error was reported by coerce already
        if not (math.isfinite(v) and lo <= v <= hi):
            span = (
                f"an integer in {lo}..{hi}" if isinstance(v, int) else f"a number in {lo:g}..{hi:g}"
            )
            raise ConfigError(f"{where}: {show(v)} is out of range; use {span}")
    if key == "scale" and isinstance(value, tuple) and len(value) == 2 and value[0] > value[1]:
        raise ConfigError(f"{where}: {list(value)} is not a (low, high) range; swap the two")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints pass as floats, lists as tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {show(value)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in BOOL_WORDS:
            return BOOL_WORDS[value.lower()]  # YAML 1.1's words, as before
        raise ConfigError(f"{where}: expected true or false, got {show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {show(value)}")
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer literal beyond any float
                raise ConfigError(f"{where}: {show(value)} is too large for a number") from None
        raise ConfigError(f"{where}: expected a number, got {show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {show(value)}")
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover
