"""The supernet constructor's argument checks (one-line ValueErrors that name the fix)."""

from __future__ import annotations

from collections.abc import Sequence

from autodeeplab.ops import OPS

__all__ = ["check_args", "check_partial_channels"]


def check_partial_channels(partial_channels: int, filter_multiplier: int) -> None:
    """Raise unless K is a positive integer that divides F (hence every block width)."""
    if (
        not isinstance(partial_channels, int)
        or isinstance(partial_channels, bool)
        or partial_channels < 1
    ):
        raise ValueError(f"partial_channels must be a positive integer, got {partial_channels!r}")
    # Block widths are F * 2**level and level 0 always exists, so K divides every block
    # width exactly when it divides F.
    if filter_multiplier % partial_channels:
        raise ValueError(
            f"partial_channels={partial_channels} must divide the block width "
            f"filter_multiplier={filter_multiplier} (C % K == 0 for C = F * 2**level); "
            f"choose a divisor of {filter_multiplier}"
        )


def check_args(
    num_classes: int,
    num_layers: int,
    num_blocks: int,
    filter_multiplier: int,
    strides: Sequence[int],
    primitives: Sequence[str],
) -> None:
    """Raise unless the trellis sizes are positive and the strides and ops are valid."""
    for name, value in (
        ("num_classes", num_classes),
        ("num_layers", num_layers),
        ("num_blocks", num_blocks),
        ("filter_multiplier", filter_multiplier),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    strides = list(strides)
    if not strides or strides != [4 * 2**i for i in range(len(strides))]:
        raise ValueError(
            f"strides must be consecutive doublings from 4 (e.g. 4,8,16,32), got {strides}"
        )
    unknown = [p for p in primitives if p not in OPS]
    if unknown:
        raise ValueError(f"unknown ops {unknown}; known ops: {', '.join(OPS)}")
    if len(set(primitives)) != len(primitives):
        raise ValueError(f"primitives has duplicates: {list(primitives)}")
    if all(p == "none" for p in primitives):
        raise ValueError("primitives needs at least one op other than 'none'")
