"""Image normalisation shared by every dataset, the ignore label, and the augmentation recipes.

Datasets hand out ``(image, mask)`` pairs as ``uint8`` arrays ``(H, W, 3)`` / ``(H, W)``;
augmentation works on those arrays, and :func:`normalize` turns the image into the float
tensor the network sees. :data:`MEAN` and :data:`STD` are the ImageNet statistics used by
DeepLab and most segmentation code, so checkpoints stay comparable across datasets.

:func:`train_transform` is the DeepLab training recipe (docs/design.md §7.1: random scale
0.5-2.0, random left-right flip; DeepLab pads and crops to the training crop) plus a light
colour jitter; :func:`val_transform` keeps whole images, optionally resized. Both are
albumentations pipelines that move image and mask together (bilinear for the image, nearest
for the mask) and are called as ``transform(image_uint8_hwc, mask) -> (image, mask)``.

Randomness: albumentations keeps its own generator, which forked DataLoader workers would
copy, so every worker would draw the same crops. A pipeline therefore reseeds itself from
``torch.initial_seed()`` the first time it runs in a process (in a worker that is the
worker's seed, drawn from the main process's torch generator): runs are reproducible under
``torch.manual_seed`` and workers differ.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from autodeeplab.metrics import IGNORE_INDEX

__all__ = [
    "MEAN",
    "STD",
    "Pipeline",
    "Transform",
    "denormalize",
    "normalize",
    "train_transform",
    "val_transform",
]

#: ``transform(image_uint8_hwc, mask) -> (image_uint8_hwc, mask)``, the dataset hook.
Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

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


# --- augmentation pipelines ------------------------------------------------------------------


class Pipeline:
    """Paired ``(image, mask)`` albumentations pipeline; reseeds itself once per process."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        import albumentations as A  # imported here: half a second that only training pays

        self.compose = A.Compose(list(transforms))
        self._seeded_for: tuple[int, int] | None = None

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Transform ``image`` ``(H, W, 3)`` and ``mask`` ``(H, W)`` together."""
        key = (os.getpid(), torch.initial_seed())
        if key != self._seeded_for:  # first call in this process (e.g. a new worker)
            self.compose.set_random_seed(key[1])
            self._seeded_for = key
        out = self.compose(image=image, mask=mask)
        return out["image"], out["mask"]

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.compose.transforms)
        return f"Pipeline([{names}])"


def int_pair(value: object, minimum: int = 1) -> tuple[int, int] | None:
    """``(height, width)`` from an int or a pair of ints, each ``>= minimum``; else None."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    ok = (
        isinstance(pair, tuple | list)
        and len(pair) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= minimum for n in pair)
    )
    return (int(pair[0]), int(pair[1])) if ok else None


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = int_pair(value)
    if pair is None:
        raise ValueError(f"{what} must be a positive int or a (height, width) pair, got {value!r}")
    return pair


def _resize(longest_side: int | None) -> list[Any]:
    import albumentations as A

    if longest_side is None:
        return []
    if not isinstance(longest_side, int) or isinstance(longest_side, bool) or longest_side < 1:
        raise ValueError(f"longest_side must be a positive int or None, got {longest_side!r}")
    return [A.LongestMaxSize(max_size=longest_side)]  # bilinear image, nearest mask


def train_transform(
    crop: int | tuple[int, int],
    scale: tuple[float, float] = (0.5, 2.0),
    *,
    longest_side: int | None = None,
) -> Pipeline:
    """Training recipe: random scale, pad (image 0, mask ignore), random crop, flip, jitter.

    Args:
        crop: output ``H`` = ``W``, or ``(H, W)``.
        scale: range of the random rescale factor, sampled uniformly.
        longest_side: first resize so the longer side has this length (ADE20K: 513).
    """
    import albumentations as A

    height, width = _pair(crop, "crop")
    low, high = scale
    if not 0 < low <= high:
        raise ValueError(f"scale must be a (low, high) range with 0 < low <= high, got {scale!r}")
    return Pipeline(
        [
            *_resize(longest_side),
            # albumentations draws the factor as 1 + U(scale_limit).
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), p=1.0),
            A.PadIfNeeded(
                min_height=height,
                min_width=width,
                border_mode=0,  # cv2.BORDER_CONSTANT
                fill=0,
                fill_mask=IGNORE_INDEX,
            ),
            A.RandomCrop(height=height, width=width),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
        ]
    )


def val_transform(longest_side: int | None = None) -> Pipeline:
    """Evaluation recipe: the whole image, or resized so its longer side is ``longest_side``."""
    return Pipeline(_resize(longest_side))


def to_sample(
    image: np.ndarray, mask: np.ndarray, transform: Any = None, source: str | None = None
) -> tuple[Tensor, Tensor]:
    """Apply ``transform`` to the pair, check it kept them aligned, return model tensors.

    ``source`` names the sample's file in the error, when there is one.
    """
    if transform is not None:
        image, mask = transform(image, mask)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        where = f" ({source})" if source else ""
        raise ValueError(
            f"transform returned a mask of shape {mask.shape} for an image of shape "
            f"{image.shape}{where}; it must transform both alike"
        )
    return normalize(image), torch.from_numpy(mask.astype(np.int64))
