"""The retrain network: the parameter oracle, Multi-Adds, shapes at any input size, any
genotype, presets and the factory, self-describing kwargs, and the drop-path schedule."""

from __future__ import annotations

import json

import pytest
import torch

from autodeeplab.genotype import PAPER_GENOTYPE, Genotype
from autodeeplab.model import (
    MODELS,
    AutoDeepLab,
    autodeeplab_l,
    autodeeplab_m,
    autodeeplab_s,
    build_model,
    count_multiply_adds,
    count_parameters,
)
from autodeeplab.model.autodeeplab import default_aspp_rates
from autodeeplab.ops import PRIMITIVES

# docs/design.md §9.2: exact counts of the TF-faithful design (paper: 10.15M / 21.62M / 44.42M).
PARAMETERS = {
    "auto-deeplab-s": 10_147_427,
    "auto-deeplab-m": 21_622_451,
    "auto-deeplab-l": 44_424_691,
}
# Paper Table 2, Multi-Adds at 1025x2049, and docs/design.md §9.4's hand count of conv MACs.
PAPER_MULTIPLY_ADDS = {
    "auto-deeplab-s": 333.25e9,
    "auto-deeplab-m": 460.93e9,
    "auto-deeplab-l": 695.03e9,
}
CONV_MACS = {"auto-deeplab-s": 320.45e9, "auto-deeplab-m": 439.92e9, "auto-deeplab-l": 662.42e9}
# docs/design.md §9.2, model S: per-cell parameters of cells 0..11, and the parts.
S_CELLS = [38_240, 38_960, 38_400, 135_200, 512_000, 151_200, 536_000, 536_000, 2_038_400,
           2_102_400, 616_000, 175_200]  # fmt: skip
FACTORIES = {"auto-deeplab-s": autodeeplab_s, "auto-deeplab-m": autodeeplab_m,
             "auto-deeplab-l": autodeeplab_l}  # fmt: skip

# Small heads keep the CPU tests fast; the architecture under test is unchanged.
SMALL_HEADS = {"aspp_channels": 16, "decoder_channels": 16, "low_level_channels": 8}


def _meta_model(name: str, num_classes: int = 19) -> AutoDeepLab:
    with torch.device("meta"):
        return build_model(name, num_classes)


def _tiny(genotype: Genotype = PAPER_GENOTYPE, **kwargs) -> AutoDeepLab:
    torch.manual_seed(0)
    return AutoDeepLab(genotype, num_classes=3, filter_multiplier=2, **SMALL_HEADS, **kwargs)


# --- parameter oracle and Multi-Adds ---------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_count_matches_oracle(name: str) -> None:
    assert count_parameters(_meta_model(name)) == PARAMETERS[name]


def test_parameter_breakdown_of_s() -> None:
    model = _meta_model("auto-deeplab-s")
    assert [count_parameters(cell) for cell in model.backbone.cells] == S_CELLS
    assert count_parameters(model.backbone.stem) == 112_832
    assert count_parameters(model.aspp) == 7_424 * 200 + 330_752
    decoder = count_parameters(model.decoder) + count_parameters(model.classifier)
    assert decoder == 48 * 100 + 1_291_360 + 257 * 19


@pytest.mark.parametrize("name", list(MODELS))
def test_cell_closed_form(name: str) -> None:
    model = _meta_model(name)
    widths = [model.filter_multiplier * 2**level for level in PAPER_GENOTYPE.path]
    outs = [64, 128] + [5 * c for c in widths]
    for i, (cell, c) in enumerate(zip(model.backbone.cells, widths, strict=True)):
        c1, c2 = outs[i + 1], outs[i]
        assert count_parameters(cell) == (c1 + c2) * c + 4 * c + 73 * c**2 + 256 * c


@pytest.mark.parametrize("name", list(MODELS))
def test_multiply_adds_within_5_percent_of_paper(name: str) -> None:
    multiply_adds = count_multiply_adds(_meta_model(name), size=(1025, 2049))
    assert abs(multiply_adds / PAPER_MULTIPLY_ADDS[name] - 1) < 0.05
    # Our convention is conv MACs: it equals docs/design.md §9.4's independent hand count.
    assert multiply_adds == pytest.approx(CONV_MACS[name], abs=0.01e9)


def test_multiply_adds_leave_a_real_model_untouched() -> None:
    model = _tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_multiply_adds(model, size=(65, 65)) > 0
    assert model.training
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu"
        torch.testing.assert_close(v, before[k])


# --- shapes, sizes, any genotype -------------------------------------------------------


@pytest.mark.parametrize("size", [(321, 321), (513, 513), (769, 769)])
def test_output_matches_paper_crop_sizes(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model("auto-deeplab-s", 19, filter_multiplier=4).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, *size))
    assert y.shape == (1, 19, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("size", [(97, 161), (100, 150), (33, 47)])
def test_odd_sizes_train_and_backward(size: tuple[int, int]) -> None:
    model = _tiny().train()
    x = torch.randn(2, 3, *size)
    y = model(x)
    assert y.shape == (2, 3, *size)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_batch_of_one_in_training() -> None:
    # The ASPP image-pooling branch sees one value per channel here.
    model = build_model("auto-deeplab-s", 19, filter_multiplier=2).train()
    y = model(torch.randn(1, 3, 65, 97))
    assert y.shape == (1, 19, 65, 97)
    y.mean().backward()


def _cell_io_sizes(model: AutoDeepLab, size: tuple[int, int]) -> list[tuple[int, int]]:
    sizes = []
    hooks = [
        cell.register_forward_pre_hook(lambda m, args: sizes.append(tuple(args[0].shape[-2:])))
        for cell in model.backbone.cells
    ]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, *size))
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("side", [321, 513])
def test_cell_input_sizes_match_tf_for_32k_plus_1(side: int) -> None:
    # TF: a 'SAME' stride-2 op gives ceil(d / 2); a level-down step upsamples `net` to
    # (d - 1) * 2 + 1 before the cell. A reduction cell gets its input at the pre-stride size.
    expected_inputs, d, prev = [], -(-side // 4), 0
    for level in PAPER_GENOTYPE.path:
        if level < prev:
            d = (d - 1) * 2 + 1
        expected_inputs.append((d, d))
        if level > prev:
            d = -(-d // 2)
        prev = level
    assert _cell_io_sizes(_tiny(), (side, side)) == expected_inputs


@pytest.mark.parametrize(
    "path", [(0, 1, 2, 3, 2, 1, 0), (1, 2, 1), (0, 0), (0,), (1,), (0, 1, 1, 0, 0, 1)]
)
def test_any_path(path: tuple[int, ...]) -> None:
    model = _tiny(Genotype(PAPER_GENOTYPE.cell, path)).train()
    y = model(torch.randn(2, 3, 67, 45))
    assert y.shape == (2, 3, 67, 45)
    y.mean().backward()
    assert model.output_stride == 4 * 2 ** path[-1]


@pytest.mark.parametrize(
    ("path", "index", "channels"),
    [
        (PAPER_GENOTYPE.path, 2, 5 * 2),  # the paper's Cell_2
        ((0, 1, 2, 3, 2, 1, 0), 6, 5 * 2),  # first level-0 cell past the first two
        ((0, 0, 1, 2), 1, 5 * 2),  # else the last level-0 cell
        ((1, 2, 1), -1, 128),  # else the stem's stride-4 output
    ],
)
def test_low_level_end_point(path: tuple[int, ...], index: int, channels: int) -> None:
    model = _tiny(Genotype(PAPER_GENOTYPE.cell, path))
    assert model.backbone.low_level_index == index
    assert model.backbone.low_level_channels == channels
    assert count_parameters(model.decoder.project_low_level[0]) == channels * 8


@pytest.mark.parametrize("op", [p for p in PRIMITIVES if p != "none"])
def test_every_op_builds_a_network(op: str) -> None:
    genotype = Genotype(cell=(((op, 0), (op, 1)), ((op, 2), (op, 1))), path=(0, 1, 2, 1, 0))
    model = _tiny(genotype).train()
    y = model(torch.randn(2, 3, 41, 37))
    assert y.shape == (2, 3, 41, 37)
    y.mean().backward()


# --- presets, factory and self-describing kwargs ----------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_presets(name: str) -> None:
    with torch.device("meta"):
        model = FACTORIES[name]()
    assert model.genotype == PAPER_GENOTYPE
    assert model.filter_multiplier == MODELS[name]["filter_multiplier"]
    assert model.num_classes == 19
    assert model.output_stride == 8
    assert model.aspp.rates == (12, 24, 36)
    assert model.backbone.low_level_index == 2
    assert count_parameters(model) == PARAMETERS[name]


def test_build_model_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="unknown model 'auto-deeplab-xl'") as info:
        build_model("auto-deeplab-xl", 19)
    for name in MODELS:
        assert name in str(info.value)
    with pytest.raises(TypeError, match="Genotype"):
        build_model(42, 19)  # type: ignore[arg-type]


def test_build_model_from_genotype_and_overrides() -> None:
    with torch.device("meta"):
        model = build_model(PAPER_GENOTYPE, 19)
        m = build_model("auto-deeplab-s", 21, filter_multiplier=32, aspp_rates=(6, 12, 18))
    assert model.filter_multiplier == 20
    assert count_parameters(model) == PARAMETERS["auto-deeplab-s"]
    assert (m.filter_multiplier, m.num_classes, m.aspp.rates) == (32, 21, (6, 12, 18))
    assert count_parameters(m) == PARAMETERS["auto-deeplab-m"] + 257 * 2


def test_genotype_json_round_trip_builds_the_same_network() -> None:
    genotype = Genotype.from_json(PAPER_GENOTYPE.to_json())
    with torch.device("meta"):
        model = build_model(genotype, 19, filter_multiplier=20)
    assert count_parameters(model) == PARAMETERS["auto-deeplab-s"]


def test_model_kwargs_rebuild_the_model(tmp_path) -> None:
    model = _tiny(drop_path_keep_prob=0.9, total_training_steps=100)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model.model_kwargs))
    rebuilt = AutoDeepLab(**json.loads(path.read_text()))
    rebuilt.load_state_dict(model.state_dict())  # strict: same modules, same shapes
    assert rebuilt.model_kwargs == model.model_kwargs
    assert rebuilt.genotype == model.genotype
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


def test_default_aspp_rates_follow_output_stride() -> None:
    assert default_aspp_rates(8) == (12, 24, 36)
    assert default_aspp_rates(16) == (6, 12, 18)
    assert _tiny(Genotype(PAPER_GENOTYPE.cell, (0, 1, 2))).aspp.rates == (6, 12, 18)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        AutoDeepLab(PAPER_GENOTYPE, num_classes=0)
    with pytest.raises(ValueError, match="aspp_rates"):
        AutoDeepLab(PAPER_GENOTYPE, 19, aspp_rates=(6, 12))
    with pytest.raises(ValueError, match="drop_path_keep_prob"):
        AutoDeepLab(PAPER_GENOTYPE, 19, drop_path_keep_prob=1.5)


# --- scheduled drop path in the network -------------------------------------------------


def test_drop_path_schedule_per_cell() -> None:
    model = _tiny(drop_path_keep_prob=0.6, total_training_steps=1000)
    assert model.backbone.keep_probs() == [1.0] * 12
    model.set_training_step(500)
    # kp_l = 1 - ((i + 1) / 12) * 0.4, kp_t = 1 - 0.5 * (1 - kp_l).
    expected = [1 - 0.5 * (i + 1) / 12 * 0.4 for i in range(12)]
    assert model.backbone.keep_probs() == pytest.approx(expected)
    model.set_training_step(10_000)
    assert model.backbone.keep_probs()[-1] == pytest.approx(0.6)
    assert float(model.backbone.drop_path_progress) == 1.0


def test_drop_path_in_the_network() -> None:
    x = torch.randn(4, 3, 33, 33)
    off = _tiny(dropout=0.0).train()
    torch.testing.assert_close(off(x), off(x))  # keep prob 1.0: deterministic

    on = _tiny(dropout=0.0, drop_path_keep_prob=0.5, total_training_steps=10)
    on.load_state_dict(off.state_dict())
    on.train()
    torch.testing.assert_close(on(x), off(x))  # step 0: kp_t = 1
    on.set_training_step(10)
    assert not torch.allclose(on(x), off(x))
    on.load_state_dict(off.state_dict())  # undo the running-stat updates
    with torch.no_grad():
        torch.testing.assert_close(on.eval()(x), off.eval()(x))
