"""The network a training run builds from its config: a preset's or a genotype file's cell and
path, with DeepLab's optimiser groups."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from autodeeplab.config import TrainConfig
from autodeeplab.genotype import Genotype, load_genotype
from autodeeplab.model import MODELS, AutoDeepLab, build_model

__all__ = ["build_train_model", "param_groups", "with_genotype"]


def _genotype_of(cfg: TrainConfig) -> Genotype:
    """The genotype the config names: a preset's or a genotype.json file's."""
    name, path = cfg.model.name, cfg.model.genotype
    if (name is None) == (path is None):
        raise ValueError(
            "give exactly one of --model NAME (model.name) or --genotype FILE (model.genotype); "
            f"got name={name!r}, genotype={path!r}"
        )
    if path is not None:
        return load_genotype(path)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]["genotype"]


def build_train_model(
    cfg: TrainConfig, num_classes: int, genotype: Genotype | None = None
) -> AutoDeepLab:
    """The network that ``cfg.model`` describes, for ``cfg.train.iters`` of drop path.

    ``genotype``: build this cell and path instead of the config's preset or file.
    """
    m = cfg.model
    kwargs: dict[str, Any] = {
        "filter_multiplier": m.filter_multiplier,
        "drop_path_keep_prob": m.drop_path_keep_prob,
        "total_training_steps": cfg.train.iters,
        "aspp_channels": m.aspp_channels,
        "decoder_channels": m.decoder_channels,
        "dropout": m.dropout,
        "aspp_gamma_init": m.aspp_gamma_init,
    }
    if genotype is not None:
        return build_model(genotype, num_classes, **kwargs)
    genotype = _genotype_of(cfg)  # also checks that exactly one of name / genotype is set
    return build_model(m.name if m.name is not None else genotype, num_classes, **kwargs)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv weights only (TF slim regularises weights, not BN or biases)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def with_genotype(cfg: TrainConfig, genotype_path: str | Path) -> TrainConfig:
    """``cfg`` training the network of ``genotype_path`` (and no preset)."""
    return replace(cfg, model=replace(cfg.model, name=None, genotype=str(genotype_path)))
