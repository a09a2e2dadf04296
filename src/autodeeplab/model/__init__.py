"""The discrete retrain network: cells along a decoded path, ASPP, DeepLabv3+ decoder."""

from autodeeplab.model.autodeeplab import (
    MODELS,
    TRAIN_CHECKPOINT_KIND,
    AutoDeepLab,
    autodeeplab_l,
    autodeeplab_m,
    autodeeplab_s,
    build_model,
    load_trained_model,
)
from autodeeplab.model.backbone import Backbone, Stem
from autodeeplab.model.cell import Cell
from autodeeplab.model.complexity import count_multiply_adds, count_parameters
from autodeeplab.model.heads import ASPP, Decoder

__all__ = [
    "ASPP",
    "MODELS",
    "TRAIN_CHECKPOINT_KIND",
    "AutoDeepLab",
    "Backbone",
    "Cell",
    "Decoder",
    "Stem",
    "autodeeplab_l",
    "autodeeplab_m",
    "autodeeplab_s",
    "build_model",
    "count_multiply_adds",
    "count_parameters",
    "load_trained_model",
]
