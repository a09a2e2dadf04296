"""torch.hub entry points, e.g. ``torch.hub.load(CLONE, "auto_deeplab_s", source="local")``.

Each entry builds an untrained network of the paper (no weights are published for it, and
none are downloaded); ``checkpoint=`` loads one of your own ``train`` checkpoints instead.
The clone need not be installed: its ``src/`` is put on the path here.
"""

from __future__ import annotations

import os
import sys
from typing import Any

dependencies = ["torch", "numpy", "yaml", "PIL"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from autodeeplab import create_model, load_model  # noqa: E402


def _entry(name: str, num_classes: int, checkpoint: str | None, kwargs: dict[str, Any]) -> Any:
    if checkpoint is not None:
        return load_model(checkpoint)
    return create_model(name, num_classes=num_classes, **kwargs)


def auto_deeplab_s(num_classes: int = 19, checkpoint: str | None = None, **kwargs: Any) -> Any:
    """Auto-DeepLab-S (F=20, 10.15M parameters at 19 classes), or a trained checkpoint."""
    return _entry("auto-deeplab-s", num_classes, checkpoint, kwargs)


def auto_deeplab_m(num_classes: int = 19, checkpoint: str | None = None, **kwargs: Any) -> Any:
    """Auto-DeepLab-M (F=32, 21.62M parameters at 19 classes), or a trained checkpoint."""
    return _entry("auto-deeplab-m", num_classes, checkpoint, kwargs)


def auto_deeplab_l(num_classes: int = 19, checkpoint: str | None = None, **kwargs: Any) -> Any:
    """Auto-DeepLab-L (F=48, 44.42M parameters at 19 classes), or a trained checkpoint."""
    return _entry("auto-deeplab-l", num_classes, checkpoint, kwargs)


def auto_deeplab(genotype: Any, num_classes: int = 19, **kwargs: Any) -> Any:
    """The network of any genotype (a search's genotype.json, a Genotype or its dict)."""
    return create_model(genotype, num_classes=num_classes, **kwargs)
