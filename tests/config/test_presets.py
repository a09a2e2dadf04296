"""Every shipped YAML preset loads into its config class without error."""

from __future__ import annotations

from pathlib import Path

import pytest

from autodeeplab.config import SearchConfig, TrainConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "search").glob("*.yaml")), ids=lambda p: p.name)
def test_search_presets_load(path: Path) -> None:
    cfg = load_config(path, base=SearchConfig())
    if path.name == "synthetic.yaml":  # the bare command's preset, sized for 10 CPU minutes
        assert cfg.model.num_layers == 4 and cfg.model.strides == (4, 8, 16)
    elif path.name == "msrc21.yaml":  # sized for a few CPU hours
        assert cfg.model.num_layers == 8 and cfg.model.strides == (4, 8, 16)
    else:
        assert cfg.model.num_layers == 12 and cfg.model.num_blocks == 5  # the paper's space
    assert cfg.model.filter_multiplier == 8
    assert cfg.data.crop >= 3 * max(cfg.model.strides)  # docs/design.md §12.12


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_train_presets_load(path: Path) -> None:
    cfg = load_config(path, base=TrainConfig())
    assert cfg.train.poly_power == 0.9 and cfg.train.momentum == 0.9


@pytest.mark.parametrize(
    ("name", "spec", "crop", "iters", "longest_side"),
    [
        ("autodeeplab-s_cityscapes-769.yaml", "cityscapes", 769, 1_500_000, None),
        ("autodeeplab-s_voc-513.yaml", "voc", 513, 1_500_000, None),
        ("autodeeplab-s_ade20k-513.yaml", "ade20k", 513, 4_000_000, 513),
    ],
)
def test_paper_retrain_recipes(name, spec, crop, iters, longest_side) -> None:
    cfg = load_config(CONFIGS / "train" / name, base=TrainConfig())
    assert cfg.model.name == "auto-deeplab-s" and cfg.train.lr == 0.05
    assert cfg.data.spec.split(":")[0] == spec and cfg.data.crop == crop
    assert cfg.train.iters == iters and cfg.data.longest_side == longest_side


def test_cityscapes_search_recipe_is_half_resolution_321_crops() -> None:
    cfg = load_config(CONFIGS / "search" / "cityscapes-321x321.yaml")
    assert (cfg.data.crop, cfg.data.longest_side, cfg.data.scale) == (321, 1024, (1.0, 1.0))
    assert (cfg.search.epochs, cfg.search.arch_start_epoch, cfg.search.batch_size) == (40, 20, 2)
