"""Typed run configuration: frozen dataclasses, YAML presets and ``--set key=value`` overrides.

A config has sections (``model``, ``data``, ``search``); their keys equal the constructor
and loop argument names they feed. ``load_config`` reads a YAML file (PyYAML's safe loader,
nothing evaluated, with YAML 1.2 booleans), applies overrides, and rejects unknown keys and
wrong types with one error naming the file and the key. No inheritance between presets:
each is its own file.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from autodeeplab.files import require_file
from autodeeplab.ops import PRIMITIVES

__all__ = [
    "ConfigError",
    "DataConfig",
    "SearchModelConfig",
    "SearchLoopConfig",
    "SearchConfig",
    "CPU_SEARCH_PRESET",
    "TrainModelConfig",
    "TrainDataConfig",
    "TrainLoopConfig",
    "EvalConfig",
    "TrainConfig",
    "CPU_TRAIN_PRESET",
    "load_config",
    "config_to_dict",
    "config_from_dict",
    "save_config",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the file and key."""


@dataclass(frozen=True)
class SearchModelConfig:
    """The supernet: :class:`autodeeplab.search.SearchNetwork` arguments."""

    num_layers: int = 12
    num_blocks: int = 5
    filter_multiplier: int = 8
    strides: tuple[int, ...] = (4, 8, 16, 32)
    primitives: tuple[str, ...] = PRIMITIVES
    affine: bool = False
    # Activation checkpointing per cell: true, false, or auto (on where the saved activations
    # are at least half of the estimated peak, or it would not fit; autodeeplab.search.memory).
    checkpoint_cells: bool | str = "auto"
    # PC-DARTS partial channels K (beyond the paper): ops see 1/K of the channels, plus edge
    # normalisation; 1 = off. K must divide filter_multiplier.
    partial_channels: int = 1
    # BatchNorm (not affine) after the pools of the search mixed op (SPEC.md §12.11), so a
    # pool cannot win alpha by the scale of its output; false: the discrete net's plain pools.
    pool_bn: bool = True


@dataclass(frozen=True)
class DataConfig:
    """Which data, at what crop, and how it is loaded."""

    spec: str = "synthetic"
    crop: int = 64
    scale: tuple[float, float] = (0.5, 2.0)  # random rescale range (real datasets only)
    longest_side: int | None = None  # resize real images first (Cityscapes at half res: 1024)
    train_samples: int | None = None
    val_samples: int | None = None
    num_workers: int = 0


@dataclass(frozen=True)
class SearchLoopConfig:
    """The first-order bi-level search (paper §4.2, §5.1)."""

    # How w and alpha/beta are updated: a name in engine.strategies.STRATEGIES ("darts":
    # first-order bi-level DARTS, the paper's). The engine checks it against that registry,
    # which this layer cannot see, so that a strategy is added with one module and one line.
    strategy: str = "darts"
    epochs: int = 40
    batch_size: int = 2
    # alpha/beta learn from this epoch on (0-based: 20 = after 20 epochs of w alone)...
    arch_start_epoch: int = 20
    # ...and, when set, only once an epoch's mean train loss is below this: a number, or
    # "prior" for the entropy of trainA's class frequencies (the loss of predicting them
    # everywhere: a supernet above it has learnt nothing yet for alpha/beta to follow). If the
    # loss never gets there, they start anyway halfway between arch_start_epoch and the end.
    arch_start_loss: float | str | None = None
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0
    # Adam's lr for alpha/beta: a number (the paper: 3e-3), or "auto": arch_logit_budget /
    # the number of architecture steps the schedule leaves when they start, within
    # [3e-3, 3e-2]. Adam moves a logit by about lr a step, so a short search at 3e-3 cannot
    # move beta past the decode's margin (README, "The schedule").
    arch_lr: float | str = 3e-3
    arch_logit_budget: float = 3.0
    arch_weight_decay: float = 1e-3
    arch_betas: tuple[float, float] = (0.5, 0.999)
    # How the Viterbi scores the path: "relative" to a uniform choice among each node's
    # outgoing edges (SPEC.md §12.10), or "literal" (Eq. 7 as written; a prior toward
    # stride 4 that decides every short search). Recorded in genotype.json and the log.
    path_decode: str = "relative"
    # A search whose decoded path beats the runner-up by fewer nats than this ends with a
    # warning: beta has not learnt enough to choose (exp(0.5) = 1.65x as likely).
    min_path_margin: float = 0.5
    # BatchNorm in the supernet's validation: "batch" statistics, as the training and the
    # architecture steps see them (the default); "recalibrate": running statistics recomputed
    # over the first 8 trainA batches; "running": the running averages (DARTS). With batch-2,
    # non-affine BNs the running statistics do not describe what the supernet learnt: on the
    # CPU preset they gave val CE 4.2 where batch statistics gave 1.37 (README).
    val_bn: str = "batch"
    # DARTS- (Chu et al., ICLR 2021; beyond the paper): an auxiliary skip connection of this
    # weight on every mixed op, outside the softmax, decaying linearly to 0 over the
    # architecture epochs, against the collapse onto parameter-free ops. 0 = off.
    aux_skip: float = 0.0
    split_fraction: float = 0.5
    seed: int = 0
    device: str = "auto"
    tensorboard: bool = True
    keep_checkpoints: int = 2
    # Cost-aware search (beyond the paper): pull the decoded network toward a Multi-Adds
    # budget of the retrain network, e.g. "50G@1024x2048"; null searches for accuracy alone.
    target_madds: str | None = None
    cost_weight: float = 1.0  # lambda in CE + lambda * log(E[Multi-Adds] / target)^2
    cost_filter_multiplier: int = 20  # F of the retrain network the budget is for (S = 20)
    # Under torchrun: SyncBatchNorm (CUDA only), so BN sees the global batch, not the rank's.
    sync_bn: bool = False
    # Mixed precision: off (the paper's fp32, the default), auto (bf16 or fp16 on CUDA, off
    # on CPU), bf16 (also on CPU, where it is only faster with bf16 units), fp16 (CUDA only).
    amp: str = "off"
    # An inf/nan loss, gradient or alpha/beta: stop (error naming the step and the last good
    # checkpoint) or skip (drop that update, count it; stop past max_skipped of all updates).
    nonfinite: str = "stop"
    max_skipped: float = 0.1


@dataclass(frozen=True)
class SearchConfig:
    """Everything an ``autodeeplab search`` run needs."""

    model: SearchModelConfig = field(default_factory=SearchModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchLoopConfig = field(default_factory=SearchLoopConfig)


#: The default of ``autodeeplab search``: a smaller space than the paper's (L=8, strides 4-16)
#: on the built-in data, sized for 2 CPU cores (under 10 minutes) so that the search learns
#: something there. Equal to configs/search/synthetic.yaml.
CPU_SEARCH_PRESET: dict[str, Any] = {
    "model": {"num_layers": 8, "num_blocks": 5, "filter_multiplier": 8, "strides": [4, 8, 16]},
    "data": {"spec": "synthetic", "crop": 64, "train_samples": 96, "val_samples": 32},
    "search": {
        "epochs": 10,
        "arch_start_epoch": 2,
        "arch_start_loss": "prior",
        "arch_lr": "auto",
        "batch_size": 2,
    },
}


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
    (:func:`_coerce`). A key given twice in one mapping is an error: PyYAML keeps the last
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
_BOOL_WORDS = {"on": True, "yes": True, "off": False, "no": False}


def _load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`_SafeLoader`."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 60, 40, 60


def _show(value: Any) -> str:
    """A bounded repr for error messages: a hostile value must not flood the terminal."""
    text = _REPR.repr(value)
    return text if len(text) <= 120 else f"{text[:117]}..."


# Allowed values of numeric keys, by key name in any section: (low, high), both inclusive;
# a list-valued key is checked element by element. A value outside fails when the config is
# loaded, naming the key, instead of deep inside torch, or worse, not at all (epochs=0 would
# decode an untrained supernet and write it as the result).
_RANGES: dict[str, tuple[float, float]] = {
    # sizes and counts
    "num_layers": (1, 1024),
    "num_blocks": (1, 64),
    "filter_multiplier": (1, 4096),
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
}


# Keys whose value must be one of a few (checked after the type).
_CHOICES: dict[str, tuple[Any, ...]] = {
    "checkpoint_cells": (True, False, "auto"),
    "path_decode": ("relative", "literal"),
    "val_bn": ("batch", "recalibrate", "running"),
}
# Keys that take a number or one of a few words (checked after the type and the range).
_WORDS: dict[str, tuple[str, ...]] = {"arch_lr": ("auto",), "arch_start_loss": ("prior",)}


def _check_choice(key: str, value: Any, where: str) -> None:
    """Raise ConfigError if ``value`` of ``key`` is not one of :data:`_CHOICES`."""
    choices = _CHOICES.get(key)
    if choices is None or any(type(value) is type(c) and value == c for c in choices):
        return
    shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
    raise ConfigError(f"{where}: {_show(value)} is not allowed; use one of {shown}")


def _check_words(key: str, value: Any, where: str) -> None:
    """Raise ConfigError if a string ``value`` of a number-or-word key is not one of its words."""
    words = _WORDS.get(key)
    if words is None or not isinstance(value, str) or value in words:
        return
    raise ConfigError(f"{where}: {_show(value)} is not allowed; use a number or {', '.join(words)}")


def _check_range(key: str, value: Any, where: str) -> None:
    """Raise ConfigError if the numeric ``value`` of ``key`` is outside :data:`_RANGES`."""
    if key not in _RANGES or value is None:
        return
    lo, hi = _RANGES[key]
    for v in value if isinstance(value, tuple) else (value,):
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue  # a type error was reported by _coerce already
        if not (math.isfinite(v) and lo <= v <= hi):
            span = (
                f"an integer in {lo}..{hi}" if isinstance(v, int) else f"a number in {lo:g}..{hi:g}"
            )
            raise ConfigError(f"{where}: {_show(v)} is out of range; use {span}")
    if key == "scale" and isinstance(value, tuple) and len(value) == 2 and value[0] > value[1]:
        raise ConfigError(f"{where}: {list(value)} is not a (low, high) range; swap the two")


def _coerce(value: Any, tp: Any, where: str) -> Any:
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
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {_show(value)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]  # YAML 1.1's words, as before
        raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer literal beyond any float
                raise ConfigError(f"{where}: {_show(value)} is too large for a number") from None
        raise ConfigError(f"{where}: expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {_show(value)}")
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


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
            raise ConfigError(
                f"{where}: unknown key '{dotted}'; valid keys here: {', '.join(sorted(names))}"
            )
        current = getattr(cfg, key)
        if is_dataclass(current):
            updates[key] = _merge(current, value, where, f"{dotted}.")
        else:
            value = _coerce(value, hints[key], f"{where}: key '{dotted}'")
            _check_range(key, value, f"{where}: key '{dotted}'")
            _check_choice(key, value, f"{where}: key '{dotted}'")
            _check_words(key, value, f"{where}: key '{dotted}'")
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
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # a crash right after the rename must not leave it empty
        os.replace(tmp, p)
    finally:  # a failed write (full disk, read-only folder) leaves no temp file behind
        tmp.unlink(missing_ok=True)


# --- retraining (``autodeeplab train``) -------------------------------------------------------


@dataclass(frozen=True)
class TrainModelConfig:
    """The discrete network: a preset ``name`` or a ``genotype`` file, plus its width."""

    name: str | None = None
    genotype: str | None = None
    filter_multiplier: int | None = None  # None: the preset's F (20 for a genotype file)
    drop_path_keep_prob: float = 1.0  # scheduled drop path; 1.0 (off) is the TF default
    aspp_channels: int = 256
    decoder_channels: int = 256
    dropout: float = 0.1
    # Initial gamma of the BN after the ASPP projection; 1.0 is TF's init. A small value
    # starts the deep path's contribution near zero (as zero-gamma init does for residual
    # branches), so its exploding backward signal does not drown the decoder's at the start.
    aspp_gamma_init: float = 1.0


@dataclass(frozen=True)
class TrainDataConfig:
    """Training data, its augmentation (DeepLab's random scale, crop, flip) and loading."""

    spec: str = "synthetic"
    crop: int = 769
    scale: tuple[float, float] = (0.5, 2.0)
    longest_side: int | None = None  # resize first so the longer side is this (ADE20K: 513)
    train_samples: int | None = None
    val_samples: int | None = None
    num_workers: int = 0


@dataclass(frozen=True)
class TrainLoopConfig:
    """The retrain loop (paper §5.2; DeepLab's protocol: SGD, poly lr, iteration-based)."""

    iters: int = 1_500_000
    batch_size: int = 8
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    poly_power: float = 0.9
    grad_clip: float | None = None
    eval_every: int = 5000
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto (bf16 or fp16 on CUDA, off on CPU), bf16, fp16, off
    tensorboard: bool = True
    # Under torchrun: SyncBatchNorm (CUDA only), so BN sees the global batch, not the rank's.
    sync_bn: bool = False
    # Weights and batches in channels-last (NHWC) memory format: the convolution kernels'
    # own layout on CPUs (oneDNN) and tensor-core GPUs; ~20% faster on CPU (benchmarks/).
    channels_last: bool = True
    # torch.compile the training forward pass: false, true (Inductor) or a backend's name
    # (e.g. aot_eager, cudagraphs). Off by default: on 2 CPU cores Inductor took 4.5 min to
    # compile auto-deeplab-s and its training steps were 13% slower (README, Speed); it is
    # meant for GPUs, where it is not measured yet.
    compile: bool | str = False
    # An inf/nan loss or gradient: stop (error naming the iteration and the last good
    # checkpoint) or skip (drop that update, count it; stop past max_skipped of train.iters).
    nonfinite: str = "stop"
    max_skipped: float = 0.1


@dataclass(frozen=True)
class EvalConfig:
    """Inference for validation: whole image or sliding window, with optional scales + flip."""

    mode: str = "whole"
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window: int | None = None  # sliding-window size; None: the training crop
    stride: int | None = None  # sliding-window step; None: two thirds of the window
    batch_size: int = 1  # whole images of a real dataset differ in size: batch 1 by default


@dataclass(frozen=True)
class TrainConfig:
    """Everything an ``autodeeplab train`` run needs."""

    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


#: The default of ``autodeeplab train`` and of ``run``'s retraining: DeepLab's protocol on
#: the built-in data, sized for 2 CPU cores. Equal to configs/train/synthetic.yaml.
CPU_TRAIN_PRESET: dict[str, Any] = {
    "model": {
        "filter_multiplier": 8,
        "aspp_channels": 64,
        "decoder_channels": 64,
        "aspp_gamma_init": 0.001,
    },
    "data": {
        "spec": "synthetic",
        "crop": 64,
        "scale": [0.75, 1.25],
        "train_samples": 1024,
        "val_samples": 64,
    },
    "train": {"iters": 1200, "batch_size": 16, "lr": 0.05, "eval_every": 100, "log_every": 10},
    "eval": {"batch_size": 16},
}
