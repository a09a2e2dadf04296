"""Image normalisation shared by every dataset, and the label value that marks ignored pixels.

Datasets hand out ``(image, mask)`` pairs as ``uint8`` arrays ``(H, W, 3)`` / ``(H, W)``;
augmentation works on those arrays, and :func:`normalize` turns the image into the float
tensor the network sees. :data:`MEAN` and :data:`STD` are the ImageNet statistics used by
DeepLab and most segmentation code, so checkpoints stay comparable across datasets.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["IGNORE_INDEX", "MEAN", "STD", "denormalize", "normalize"]

#: Label value of pixels that carry no class; losses and metrics skip them.
IGNORE_INDEX = 255

#: Per-channel RGB mean and standard deviation on the [0, 1] scale (ImageNet).
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize(image: np.ndarray) -> Tensor:
    """``uint8`` image ``(H, W, 3)`` -> float32 tensor ``(3, H, W)``, ``(x / 255 - MEAN) / STD``."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"normalize expects a uint8 (H, W, 3) image, got {image.dtype} {image.shape}; "
            "convert it with np.asarray(pil_image.convert('RGB'))"
        )
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(mean).div_(std)


def denormalize(image: Tensor) -> np.ndarray:
    """Inverse of :func:`normalize`: tensor ``(3, H, W)`` -> ``uint8`` array ``(H, W, 3)``."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"denormalize expects a (3, H, W) tensor, got shape {tuple(image.shape)}")
    mean = torch.tensor(MEAN, dtype=torch.float32, device=image.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=image.device).view(3, 1, 1)
    x = (image.detach().float() * std + mean).mul_(255.0).round_().clamp_(0, 255)
    return x.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
