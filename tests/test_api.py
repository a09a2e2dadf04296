"""The top-level Python API: create_model, list_models, load_model, torch.hub, and the stages
(search, train) called from Python with the CLI's config objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import autodeeplab
from autodeeplab.config import SearchConfig, TrainConfig, config_from_dict
from autodeeplab.model import count_parameters
from conftest import TINY_RUN_SEARCH_YAML as TINY_RUN_SEARCH
from conftest import TINY_RUN_TRAIN_YAML as TINY_RUN_TRAIN

REPO = Path(__file__).resolve().parents[1]


def test_list_models_names_the_paper_presets_and_filters() -> None:
    assert autodeeplab.list_models() == ["auto-deeplab-l", "auto-deeplab-m", "auto-deeplab-s"]
    assert autodeeplab.list_models("*-s") == ["auto-deeplab-s"]
    assert autodeeplab.list_models("auto_deeplab_m") == ["auto-deeplab-m"]


@pytest.mark.parametrize(
    ("name", "params"),
    [("auto-deeplab-s", 10.15e6), ("auto_deeplab_m", 21.62e6), ("Auto-DeepLab-L", 44.42e6)],
)
def test_create_model_by_name_has_the_paper_parameter_count(name: str, params: float) -> None:
    with torch.device("meta"):
        model = autodeeplab.create_model(name, num_classes=19)
    assert abs(count_parameters(model) - params) / params < 0.005


def test_create_model_from_a_genotype_file_object_or_dict(tmp_path: Path) -> None:
    genotype = autodeeplab.PAPER_GENOTYPE
    path = tmp_path / "genotype.json"
    autodeeplab.save_genotype(genotype, path)
    kwargs = {"num_classes": 3, "filter_multiplier": 2, "aspp_channels": 8, "decoder_channels": 8}
    for source in (path, str(path), genotype, genotype.to_dict()):
        model = autodeeplab.create_model(source, **kwargs)
        assert model.genotype == genotype and model.num_classes == 3
        assert model.filter_multiplier == 2


def test_create_model_refuses_an_unknown_name_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet50': give one of auto-deeplab-l"):
        autodeeplab.create_model("resnet50")
    with pytest.raises(TypeError, match="not int"):
        autodeeplab.create_model(3)  # type: ignore[arg-type]


def test_load_model_gives_the_trained_network_in_eval_mode(tiny_checkpoint: Path) -> None:
    model = autodeeplab.load_model(tiny_checkpoint)
    assert not model.training
    state = torch.load(tiny_checkpoint, weights_only=True)
    assert model.class_names == list(state["class_names"])
    assert model.genotype.to_dict() == state["genotype"] or model.genotype is not None
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, len(model.class_names), 32, 32)


def test_torch_hub_loads_the_entries_from_a_local_clone() -> None:
    model = torch.hub.load(
        str(REPO), "auto_deeplab_s", source="local", num_classes=5, filter_multiplier=2,
        aspp_channels=8, decoder_channels=8,
    )  # fmt: skip
    assert isinstance(model, autodeeplab.model.AutoDeepLab)
    assert model.num_classes == 5 and model.filter_multiplier == 2
    genotype = autodeeplab.PAPER_GENOTYPE.to_dict()
    any_genotype = torch.hub.load(
        str(REPO), "auto_deeplab", genotype, source="local", num_classes=2, filter_multiplier=2
    )
    assert any_genotype.genotype == autodeeplab.PAPER_GENOTYPE


def test_torch_hub_loads_a_trained_checkpoint(tiny_checkpoint: Path) -> None:
    model = torch.hub.load(
        str(REPO), "auto_deeplab_s", source="local", checkpoint=str(tiny_checkpoint)
    )
    assert not model.training and model.class_names


@pytest.mark.slow
def test_search_then_train_from_python_with_the_cli_configs(tmp_path: Path) -> None:
    search_cfg = config_from_dict(TINY_RUN_SEARCH, SearchConfig())
    found = autodeeplab.search(search_cfg, out=tmp_path / "search", overrides=["search.seed=3"])
    assert found.out_dir == tmp_path / "search" and found.epochs == 1
    saved = json.loads((tmp_path / "search" / "genotype.json").read_text())
    assert autodeeplab.Genotype.from_dict(saved) == found.genotype
    train_cfg = config_from_dict(TINY_RUN_TRAIN, TrainConfig())
    trained = autodeeplab.train(
        train_cfg, out=tmp_path / "train", genotype=tmp_path / "search" / "genotype.json"
    )
    assert trained.best_checkpoint.is_file() and 0 <= trained.best_miou <= 1
    model = autodeeplab.load_model(trained.best_checkpoint)
    assert model.genotype.same_network(found.genotype)
    # The CLI's run-folder rule: a folder holding a run is refused unless resumed or replaced.
    with pytest.raises(ValueError, match="already holds a run"):
        autodeeplab.train(
            train_cfg, out=tmp_path / "train", genotype=found.out_dir / "genotype.json"
        )


@pytest.mark.parametrize("score", [True, False])
def test_compare_scores_with_its_control_as_the_cli_does(
    tmp_path: Path, monkeypatch, score: bool
) -> None:
    """api.compare: with score (the default) a trained and an untrained scorer reach
    run_compare, as the CLI passes them; without, neither."""
    import autodeeplab.engine.compare.compare as compare

    seen: dict = {}

    def fake_run_compare(search_run, cfg, out, **kwargs):
        seen.update(kwargs)
        return compare.CompareResult(Path(out), [], {})

    monkeypatch.setattr(compare, "run_compare", fake_run_compare)
    autodeeplab.compare(tmp_path / "search", out=tmp_path / "cmp", score=score, recal_batches=2)
    if score:
        assert seen["scorer"].keywords == {"recal_batches": 2, "seed": 0}
        assert seen["control_scorer"].keywords == {"recal_batches": 2, "seed": 0, "untrained": True}
    else:
        assert "scorer" not in seen and "control_scorer" not in seen
