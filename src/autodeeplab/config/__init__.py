"""Typed run configuration: frozen dataclasses, YAML presets and ``--set key=value`` overrides.

A config has sections (``model``, ``data``, ``search``); their keys equal the constructor
and loop argument names they feed. ``load_config`` reads a YAML file (PyYAML's safe loader,
nothing evaluated, with YAML 1.2 booleans), applies overrides, and rejects unknown keys and
wrong types with one error naming the file and the key. No inheritance between presets:
each is its own file.

The package: :mod:`~autodeeplab.config.search` and :mod:`~autodeeplab.config.train` hold the
sections of the two stages, :mod:`~autodeeplab.config.data` the ``data`` section they share,
:mod:`~autodeeplab.config.loading` YAML, overrides and saving, :mod:`~autodeeplab.config.checks`
the type, range and choice checks.
"""

from __future__ import annotations

from autodeeplab.config.checks import ConfigError
from autodeeplab.config.data import DataConfig, TrainDataConfig
from autodeeplab.config.loading import config_from_dict, config_to_dict, load_config, save_config
from autodeeplab.config.search import (
    CPU_SEARCH_PRESET,
    SearchConfig,
    SearchLoopConfig,
    SearchModelConfig,
    supernet_kwargs,
)
from autodeeplab.config.train import (
    CPU_TRAIN_PRESET,
    EvalConfig,
    TrainConfig,
    TrainLoopConfig,
    TrainModelConfig,
)

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
    "supernet_kwargs",
]
