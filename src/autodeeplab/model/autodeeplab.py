"""The Auto-DeepLab retrain network and its paper presets (paper §5.2, Table 2).

``AutoDeepLab`` = :class:`~autodeeplab.model.backbone.Backbone` (stem + cells along the
path) -> :class:`~autodeeplab.model.heads.ASPP` -> DeepLabv3+
:class:`~autodeeplab.model.heads.Decoder` -> 1x1 logits (with bias) -> bilinear upsampling
to the input size. Input normalisation belongs to the data pipeline.

The paper's three models are :data:`~autodeeplab.genotype.PAPER_GENOTYPE` at
F = 20 / 32 / 48 (``auto-deeplab-s/m/l``); with 19 classes they have exactly
10,147,427 / 21,622,451 / 44,424,691 parameters (paper: 10.15M / 21.62M / 44.42M;
docs/design.md §9).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from autodeeplab.checkpoint import (
    CheckpointError,
    check_state_dict,
    load_checkpoint,
    require_keys,
)
from autodeeplab.genotype import PAPER_GENOTYPE, Genotype
from autodeeplab.model.backbone import Backbone
from autodeeplab.model.heads import ASPP, Decoder
from autodeeplab.ops import resize
from autodeeplab.trellis import ASPP_CHANNELS, DECODER_CHANNELS, LOW_LEVEL_CHANNELS

__all__ = [
    "MODELS",
    "TRAIN_CHECKPOINT_KIND",
    "AutoDeepLab",
    "autodeeplab_l",
    "autodeeplab_m",
    "autodeeplab_s",
    "build_model",
    "default_aspp_rates",
    "load_trained_model",
]

#: The ``kind`` of a checkpoint written by ``autodeeplab train``: weights + ``model_kwargs``.
TRAIN_CHECKPOINT_KIND = "train"


def default_aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """DeepLab's atrous rates for an output stride: (12, 24, 36) at 8, (6, 12, 18) at 16."""
    base = max(1, 96 // output_stride)
    return (base, 2 * base, 3 * base)


class AutoDeepLab(nn.Module):
    """The discrete Auto-DeepLab network: (N, 3, H, W) -> logits (N, num_classes, H, W).

    Args:
        genotype: the architecture, as a :class:`Genotype` or its ``to_dict()`` form.
        num_classes: number of output classes.
        filter_multiplier: F; blocks at level l have F * 2**l channels.
        aspp_rates: the three atrous rates; ``None`` picks the DeepLab convention for the
            backbone's output stride (12, 24, 36 at stride 8, where the paper net ends).
        aspp_channels: ASPP branch width (256).
        decoder_channels: decoder width (256).
        low_level_channels: width of the decoder's low-level projection (48).
        dropout: dropout after the ASPP projection.
        drop_path_keep_prob: scheduled drop-path keep probability; 1.0 (TF default) is off.
        total_training_steps: steps over which drop path ramps up (TF default 500,000).
        in_channels: image channels.
        aspp_gamma_init: initial BatchNorm gamma at the end of the ASPP projection (1 is
            the usual init). Through the L cells BatchNorm's backward signal grows layer by
            layer: at init the stem gets ~80x more gradient from the random ASPP branch than
            from the decoder's low-level branch (64x64 crops, F=8), and SGD sat at the
            all-background solution for hundreds of steps. A small gamma (0.001-0.01) damps
            that branch until it has learnt something, as zero-gamma init does for residual
            branches (Goyal et al. 2017).
    """

    def __init__(
        self,
        genotype: Genotype | dict[str, Any],
        num_classes: int,
        filter_multiplier: int = 20,
        aspp_rates: Sequence[int] | None = None,
        aspp_channels: int = ASPP_CHANNELS,
        decoder_channels: int = DECODER_CHANNELS,
        low_level_channels: int = LOW_LEVEL_CHANNELS,
        dropout: float = 0.1,
        drop_path_keep_prob: float = 1.0,
        total_training_steps: int = 500_000,
        in_channels: int = 3,
        aspp_gamma_init: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(genotype, Genotype):
            genotype = Genotype.from_dict(genotype)
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
        self.genotype = genotype
        self.num_classes = num_classes
        self.filter_multiplier = filter_multiplier
        self.backbone = Backbone(
            genotype, filter_multiplier, drop_path_keep_prob, total_training_steps, in_channels
        )
        if aspp_rates is None:
            aspp_rates = default_aspp_rates(self.backbone.output_stride)
        if len(aspp_rates) != 3:
            raise ValueError(f"aspp_rates must hold three rates, got {list(aspp_rates)}")
        self.aspp = ASPP(
            self.backbone.out_channels, aspp_channels, aspp_rates, dropout, aspp_gamma_init
        )
        self.decoder = Decoder(
            aspp_channels, self.backbone.low_level_channels, low_level_channels, decoder_channels
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        # TF DeepLab initialises the logits with a truncated normal of stddev 0.01.
        nn.init.trunc_normal_(self.classifier.weight, std=0.01, a=-0.02, b=0.02)
        nn.init.zeros_(self.classifier.bias)

        self.model_kwargs: dict[str, Any] = {
            "genotype": genotype.to_dict(),
            "num_classes": num_classes,
            "filter_multiplier": filter_multiplier,
            "aspp_rates": list(self.aspp.rates),
            "aspp_channels": aspp_channels,
            "decoder_channels": decoder_channels,
            "low_level_channels": low_level_channels,
            "dropout": dropout,
            "drop_path_keep_prob": drop_path_keep_prob,
            "total_training_steps": total_training_steps,
            "in_channels": in_channels,
            "aspp_gamma_init": aspp_gamma_init,
        }

    @property
    def output_stride(self) -> int:
        """Stride of the backbone features that feed the ASPP (8 for the paper nets)."""
        return self.backbone.output_stride

    def set_training_step(self, step: int) -> None:
        """Set the current training step, which drives the scheduled drop path."""
        self.backbone.set_training_step(step)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> logits (N, num_classes, H, W)."""
        features, low_level = self.backbone(x)
        y = self.decoder(self.aspp(features), low_level)
        return resize(self.classifier(y), x.shape[-2:], align_corners=True)


#: Paper presets: name -> constructor kwargs (besides ``num_classes``).
MODELS: dict[str, dict[str, Any]] = {
    "auto-deeplab-s": {"genotype": PAPER_GENOTYPE, "filter_multiplier": 20},
    "auto-deeplab-m": {"genotype": PAPER_GENOTYPE, "filter_multiplier": 32},
    "auto-deeplab-l": {"genotype": PAPER_GENOTYPE, "filter_multiplier": 48},
}


def build_model(
    name_or_genotype: str | Genotype,
    num_classes: int,
    filter_multiplier: int | None = None,
    **kwargs: Any,
) -> AutoDeepLab:
    """Build a preset from :data:`MODELS` by name, or the network of any genotype.

    ``filter_multiplier`` overrides the preset's F; for a genotype it defaults to 20 (the
    TF default, the paper's S). Other keyword arguments go to :class:`AutoDeepLab`.
    """
    if isinstance(name_or_genotype, Genotype):
        config: dict[str, Any] = {"genotype": name_or_genotype, "filter_multiplier": 20}
    elif isinstance(name_or_genotype, str):
        if name_or_genotype not in MODELS:
            raise ValueError(
                f"unknown model {name_or_genotype!r}; choose one of {', '.join(MODELS)} "
                "or pass a Genotype"
            )
        config = dict(MODELS[name_or_genotype])
    else:
        raise TypeError(
            f"expected a model name or a Genotype, got {type(name_or_genotype).__name__}"
        )
    if filter_multiplier is not None:
        config["filter_multiplier"] = filter_multiplier
    config.update(kwargs)
    return AutoDeepLab(num_classes=num_classes, **config)


def autodeeplab_s(num_classes: int = 19, **kwargs: Any) -> AutoDeepLab:
    """Auto-DeepLab-S: the paper genotype at F = 20 (10.15M parameters for 19 classes)."""
    return build_model("auto-deeplab-s", num_classes, **kwargs)


def autodeeplab_m(num_classes: int = 19, **kwargs: Any) -> AutoDeepLab:
    """Auto-DeepLab-M: the paper genotype at F = 32 (21.62M parameters for 19 classes)."""
    return build_model("auto-deeplab-m", num_classes, **kwargs)


def autodeeplab_l(num_classes: int = 19, **kwargs: Any) -> AutoDeepLab:
    """Auto-DeepLab-L: the paper genotype at F = 48 (44.42M parameters for 19 classes)."""
    return build_model("auto-deeplab-l", num_classes, **kwargs)


def load_trained_model(
    path: str | os.PathLike[str], device: torch.device | str = "cpu", channels_last: bool = True
) -> tuple[AutoDeepLab, dict[str, Any]]:
    """Rebuild the network of a ``train`` checkpoint from its own ``model_kwargs``.

    ``channels_last``: weights in NHWC layout, which the conv kernels prefer (about 20% faster
    inference on CPU, benchmarks/README.md); the outputs are the same to float rounding.
    """
    state = load_checkpoint(path)
    if state.get("kind") != TRAIN_CHECKPOINT_KIND:
        raise CheckpointError(
            f"{path}: this is a {state.get('kind')!r} checkpoint, not a trained network; "
            "pass checkpoints/best.pt or last.pt of an 'autodeeplab train' run (a search "
            "checkpoint is decoded with 'autodeeplab decode' and then trained)"
        )
    require_keys(state, path, ("model_kwargs", "model", "config", "class_names"))
    kwargs = state["model_kwargs"]
    model = _meta_network(path, kwargs)
    check_state_dict(path, model.state_dict(), state["model"], "model")
    names = state["class_names"]
    if not isinstance(names, list | tuple) or len(names) != model.num_classes:
        count = len(names) if isinstance(names, list | tuple) else type(names).__name__
        raise CheckpointError(
            f"{path}: the network has {model.num_classes} classes but class_names holds "
            f"{count}; use a checkpoint written by 'autodeeplab train'"
        )
    # The shapes match the checkpoint's own tensors: the real network is no bigger than them.
    model = AutoDeepLab(**kwargs)
    model.load_state_dict(state["model"])
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format).eval(), state


def _meta_network(path: str | os.PathLike[str], kwargs: Any) -> AutoDeepLab:
    """The network ``model_kwargs`` describe, on the meta device (no memory), or one line."""
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CheckpointError(
            f"{path}: model_kwargs is not a dict of constructor arguments; use a checkpoint "
            "written by 'autodeeplab train'"
        )
    num_classes = kwargs.get("num_classes")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise CheckpointError(
            f"{path}: model_kwargs.num_classes={str(num_classes)[:40]} is not a class count; "
            "use a checkpoint written by 'autodeeplab train'"
        )
    try:
        with torch.device("meta"):
            return AutoDeepLab(**kwargs)
    except Exception as exc:  # hostile kwargs: TypeError, ValueError, OverflowError, ...
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(
            f"{path}: model_kwargs do not describe a network ({type(exc).__name__}: {first}); "
            "use a checkpoint written by 'autodeeplab train'"
        ) from None
