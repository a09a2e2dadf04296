"""Tests of the typed config: paper defaults, YAML loading, overrides, errors, round trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from autodeeplab.config import (
    ConfigError,
    DataConfig,
    SearchConfig,
    SearchLoopConfig,
    SearchModelConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from autodeeplab.ops import PRIMITIVES


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_are_the_papers_search_settings() -> None:
    cfg = SearchConfig()
    s = cfg.search
    # Paper §4.2, §5.1 (docs/design.md §3).
    assert (s.epochs, s.batch_size, s.arch_start_epoch) == (40, 2, 20)
    assert (s.lr, s.lr_min, s.momentum, s.weight_decay) == (0.025, 0.001, 0.9, 3e-4)
    assert (s.arch_lr, s.arch_weight_decay) == (3e-3, 1e-3)
    assert s.split_fraction == 0.5
    m = cfg.model
    assert (m.num_layers, m.num_blocks, m.filter_multiplier) == (12, 5, 8)
    assert m.strides == (4, 8, 16, 32)
    assert m.primitives == PRIMITIVES
    assert m.affine is False  # docs/design.md §12.4
    # The paper's search by default: partial channels off; checkpointing changes no result.
    assert m.partial_channels == 1 and m.checkpoint_cells == "auto"
    assert load_config() == cfg


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "model:\n  num_layers: 6\n  strides: [4, 8, 16]\nsearch:\n  epochs: 10\n  lr: 1\n",
    )
    cfg = load_config(p)
    assert cfg.model.num_layers == 6
    assert cfg.model.strides == (4, 8, 16)
    assert cfg.search.epochs == 10
    assert cfg.search.lr == 1.0 and isinstance(cfg.search.lr, float)  # ints pass as floats
    assert cfg.search.batch_size == 2  # untouched keys keep their defaults
    assert cfg.data == DataConfig()

    cfg = load_config(p, ["search.epochs=3"])
    assert cfg.search.epochs == 3 and cfg.model.num_layers == 6
    assert load_config(p, ["epochs=3"]).search.epochs == 3  # bare leaf name
    assert load_config(p, ["model.strides=[4,8]"]).model.strides == (4, 8)
    assert load_config(None, ["search.grad_clip=null"]).search.grad_clip is None
    assert load_config(None, ["grad_clip="]).search.grad_clip is None
    assert load_config(None, ["data.train_samples=null"]).data.train_samples is None
    assert load_config(None, ["data.train_samples=7"]).data.train_samples == 7
    assert load_config(None, ["arch_betas=[0.9, 0.99]"]).search.arch_betas == (0.9, 0.99)
    assert load_config(None, ["tensorboard=false"]).search.tensorboard is False
    assert load_config(None, ["data.spec=cityscapes:/data"]).data.spec == "cityscapes:/data"
    # Later overrides win; overrides beat the file.
    assert load_config(p, ["epochs=3", "search.epochs=4"]).search.epochs == 4


def test_empty_yaml_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == SearchConfig()
    assert load_config(_write(tmp_path, "# only a comment\n")) == SearchConfig()


def test_null_in_yaml_for_optional_keys(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "search:\n  grad_clip: null\ndata:\n  val_samples: ~\n"))
    assert cfg.search.grad_clip is None and cfg.data.val_samples is None
    with pytest.raises(ConfigError, match="key 'search.epochs': expected an integer, got None"):
        load_config(_write(tmp_path, "search:\n  epochs: null\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("search:\n  epochz: 3\n", "unknown key 'search.epochz'; did you mean search.epochs"),
        ("modle:\n  num_layers: 3\n", "unknown key 'modle'; did you mean model"),
        ("xyz: 3\n", "unknown key 'xyz'; valid keys here: data, model, search"),
        ("search:\n  qqqq: 3\n", "unknown key 'search.qqqq'; see docs/configuration.md"),
        ("search:\n  epochs: three\n", "key 'search.epochs': expected an integer, got 'three'"),
        ("search:\n  epochs: true\n", "key 'search.epochs': expected an integer, got True"),
        ("search:\n  epochs: 2.5\n", "key 'search.epochs': expected an integer, got 2.5"),
        ("search:\n  lr: fast\n", "key 'search.lr': expected a number, got 'fast'"),
        ("search:\n  lr: true\n", "key 'search.lr': expected a number, got True"),
        ("search:\n  tensorboard: 1\n", "key 'search.tensorboard': expected true or false"),
        ("data:\n  spec: 3\n", "key 'data.spec': expected a string, got 3"),
        ("model:\n  strides: 4\n", "key 'model.strides': expected a list, got 4"),
        ("model:\n  strides: [4, x]\n", r"key 'model.strides'\[1\]: expected an integer"),
        ("search:\n  arch_betas: [0.9]\n", "key 'search.arch_betas': expected 2 values, got 1"),
        ("search:\n  grad_clip: abc\n", "key 'search.grad_clip': expected a number, got 'abc'"),
        ("search: 3\n", "section 'search.*' must be a mapping"),
        ("- 1\n- 2\n", "section 'top level' must be a mapping"),
        ("search: [unclosed\n", "not valid YAML"),
        ("search:\n\tepochs: 3\n", "not valid YAML"),
    ],
)
def test_file_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    p = _write(tmp_path, text, "bad_config.yaml")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(p)
    assert str(info.value).startswith(f"{p}: ")
    assert issubclass(ConfigError, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "binary.yaml"
    p.write_bytes(b"search:\n  epochs: \xff\xfe\n")
    with pytest.raises(ConfigError, match="binary.yaml: not valid YAML"):
        load_config(p)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.epochs", "--set 'search.epochs': expected key=value"),
        ("epochs 3", "expected key=value"),
        ("search.epochz=3", "--set search.epochz=3: unknown key 'search.epochz'"),
        ("nosuchkey=3", "unknown key 'nosuchkey'"),
        (
            "search.epochs=three",
            "--set search.epochs=three: key 'search.epochs': expected an integer",
        ),
        ("search.epochs=true", "key 'search.epochs': expected an integer, got True"),
        ("search.epochs=2.5", "key 'search.epochs': expected an integer, got 2.5"),
        ("search.epochs=[1", "key 'search.epochs': expected an integer, got '\\[1'"),
        ("model.strides=4", "key 'model.strides': expected a list"),
        ("search=3", "section 'search.*' must be a mapping"),
        (
            "model.checkpoint_cells=maybe",
            "key 'model.checkpoint_cells': 'maybe' is not allowed; use one of true, false, auto",
        ),
    ],
)
def test_override_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@dataclass(frozen=True)
class _A:
    seed: int = 0


@dataclass(frozen=True)
class _B:
    seed: int = 1


@dataclass(frozen=True)
class Both:
    """A config whose two sections share a key name."""

    a: _A = field(default_factory=_A)
    b: _B = field(default_factory=_B)


def test_ambiguous_bare_override_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="ambiguous key, use one of a.seed, b.seed"):
        load_config(None, ["seed=3"], base=Both())
    cfg = load_config(None, ["b.seed=3"], base=Both())
    assert (cfg.a.seed, cfg.b.seed) == (0, 3)


def test_config_to_dict_is_plain_and_round_trips() -> None:
    cfg = load_config(None, ["model.strides=[4,8]", "grad_clip=null", "epochs=7"])
    d = config_to_dict(cfg)
    assert d["model"]["strides"] == [4, 8]
    assert d["model"]["primitives"] == list(PRIMITIVES)
    assert d["search"]["arch_betas"] == [0.5, 0.999]
    assert d["search"]["grad_clip"] is None and d["search"]["epochs"] == 7
    assert set(d) == {"model", "data", "search"}
    assert yaml.safe_load(yaml.safe_dump(d)) == d  # plain YAML types only
    assert config_from_dict(d, SearchConfig()) == cfg
    assert config_from_dict({}, SearchConfig()) == SearchConfig()
    with pytest.raises(ConfigError, match="ckpt: unknown key 'search.bogus'"):
        config_from_dict({"search": {"bogus": 1}}, SearchConfig(), where="ckpt")


def test_section_configs_round_trip_on_their_own() -> None:
    for section in (SearchModelConfig(num_layers=3), DataConfig(crop=33), SearchLoopConfig(lr=1.5)):
        assert config_from_dict(config_to_dict(section), type(section)()) == section


def test_save_config_writes_yaml_that_loads_back_equal(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.strides=[4,8,16]", "data.train_samples=5", "grad_clip=null"])
    out = tmp_path / "config.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert yaml.safe_load(out.read_text(encoding="utf-8")) == config_to_dict(cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left
    save_config(SearchConfig(), out)  # overwrites
    assert load_config(out) == SearchConfig()


def test_shipped_cpu_preset_equals_the_builtin_default() -> None:
    from autodeeplab.config import CPU_SEARCH_PRESET, config_from_dict

    root = Path(__file__).resolve().parents[2]
    shipped = load_config(root / "configs" / "search" / "synthetic.yaml")
    assert shipped == config_from_dict(CPU_SEARCH_PRESET, SearchConfig())
    # A smaller space than the paper's, whose crop leaves the coarsest level 3x3.
    assert (shipped.model.num_layers, shipped.model.num_blocks) == (4, 5)
    assert shipped.data.crop >= 3 * max(shipped.model.strides)


def test_paper_preset_has_the_paper_settings() -> None:
    root = Path(__file__).resolve().parents[2]
    paper = load_config(root / "configs" / "search" / "paper.yaml")
    assert paper.search == SearchConfig().search  # the defaults are the paper's
    assert (paper.data.crop, paper.search.epochs, paper.search.arch_start_epoch) == (321, 40, 20)
    assert paper.model == SearchConfig().model


# -- value ranges and hostile input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.crop=-5", "key 'data.crop': -5 is out of range; use an integer in 8..16384"),
        ("data.crop=0", "key 'data.crop': 0 is out of range"),
        ("data.crop=100000000000000000000", "key 'data.crop': 100000000000000000000 is out"),
        ("search.epochs=0", "key 'search.epochs': 0 is out of range"),
        ("search.batch_size=-2", "key 'search.batch_size': -2 is out of range"),
        ("data.train_samples=0", "key 'data.train_samples': 0 is out of range"),
        ("model.num_layers=0", "key 'model.num_layers': 0 is out of range"),
        ("model.num_layers=100000", "key 'model.num_layers': 100000 is out of range"),
        ("search.seed=-1", "key 'search.seed': -1 is out of range"),
        ("search.lr=.nan", "key 'search.lr': nan is out of range"),
        ("search.lr=-.inf", "key 'search.lr': -inf is out of range"),
        ("search.lr=1.0e+400", "key 'search.lr': inf is out of range"),
        ("search.lr=-0.1", "key 'search.lr': -0.1 is out of range; use a number in 0..1000"),
        ("search.lr=1" + "0" * 400, "key 'search.lr': 1000.*0000 is too large for a number"),
        ("search.grad_clip=0", "key 'search.grad_clip': 0.0 is out of range"),
        ("search.split_fraction=1.5", "key 'search.split_fraction': 1.5 is out of range"),
        ("search.skip_dropout=1.0", "key 'search.skip_dropout': 1.0 is out of range"),
        ("search.arch_betas=[0.5, 1.0]", r"key 'search.arch_betas': 1.0 is out of range"),
        ("data.scale=[2.0, 0.5]", r"key 'data.scale': \[2.0, 0.5\] is not a \(low, high\) range"),
        ("data.scale=[0.0, 0.5]", "key 'data.scale': 0.0 is out of range"),
    ],
)
def test_out_of_range_values_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert str(info.value).startswith(f"--set {override[:40]}")
    assert "\n" not in str(info.value)


def test_train_config_ranges_apply_too() -> None:
    from autodeeplab.config import TrainConfig

    with pytest.raises(ConfigError, match="key 'train.iters': 0 is out of range"):
        load_config(None, ["train.iters=0"], base=TrainConfig())
    with pytest.raises(ConfigError, match="key 'eval.scales'.*-1.0 is out of range"):
        load_config(None, ["eval.scales=[1.0, -1.0]"], base=TrainConfig())
    with pytest.raises(ConfigError, match="key 'model.dropout': 1.5 is out of range"):
        load_config(None, ["model.dropout=1.5"], base=TrainConfig())


def test_exponent_numbers_without_a_dot_are_numbers() -> None:
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; a float key takes it as the number it means.
    assert load_config(None, ["search.lr=1e-3"]).search.lr == 0.001
    assert load_config(None, ["search.arch_lr=5E-4"]).search.arch_lr == 0.0005
    with pytest.raises(ConfigError, match="expected an integer, got '1e3'"):
        load_config(None, ["search.epochs=1e3"])


def test_off_is_a_word_for_string_options_and_false_for_boolean_ones(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads off/on/yes/no as booleans, which broke --set train.amp=off.
    cfg = load_config(None, ["train.amp=off", "train.compile=on", "train.tensorboard=no"],
                      base=TrainConfig())  # fmt: skip
    assert (cfg.train.amp, cfg.train.compile, cfg.train.tensorboard) == ("off", True, False)
    text = "search:\n  amp: off\n  tensorboard: Off\nmodel:\n  checkpoint_cells: off\n"
    cfg = load_config(_write(tmp_path, text))
    assert (cfg.search.amp, cfg.search.tensorboard, cfg.model.checkpoint_cells) == (
        "off",
        False,
        False,
    )
    assert load_config(None, ["search.amp=bf16", "search.tensorboard=TRUE"]).search.tensorboard
    with pytest.raises(ConfigError, match="expected true or false, got 'maybe'"):
        load_config(None, ["search.tensorboard=maybe"])


def test_error_messages_are_bounded_for_huge_values(tmp_path: Path) -> None:
    p = _write(tmp_path, "data:\n  crop: '" + "x" * 100_000 + "'\n")
    with pytest.raises(ConfigError, match="expected an integer") as info:
        load_config(p)
    assert len(str(info.value)) < 300


@pytest.mark.slow
def test_deeply_nested_yaml_is_a_config_error(tmp_path: Path) -> None:
    p = _write(tmp_path, "search: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="bad_nesting.yaml|search"):
        load_config(_write(tmp_path, p.read_text(), "bad_nesting.yaml"))
    with pytest.raises(ConfigError):
        load_config(None, ["search.epochs=" + "[" * 5000])


def test_yaml_tags_are_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (
        f"search:\n  epochs: !!python/object/apply:os.system ['touch {marker}']\n",
        f"!!python/object/apply:os.system ['touch {marker}']\n",
        "search: !!python/name:os.system\n",
        "search: !!binary aGVsbG8=\n",
    ):
        with pytest.raises(ConfigError):
            load_config(_write(tmp_path, text, "tagged.yaml"))
        with pytest.raises(ConfigError):
            load_config(None, [f"search.epochs={text.splitlines()[-1].split(': ', 1)[-1]}"])
    assert not marker.exists()
    # The loader is PyYAML's SafeLoader (config._SafeLoader only narrows its booleans to
    # YAML 1.2's), and nothing in the package parses YAML any other way.
    from autodeeplab.config import loading as config_module

    assert issubclass(config_module._SafeLoader, yaml.SafeLoader)
    root = Path(__file__).resolve().parents[2] / "src" / "autodeeplab"
    for source in root.rglob("*.py"):
        text = source.read_text(encoding="utf-8").replace(
            "yaml.load(text, Loader=_SafeLoader)", "the safe loader"
        )
        for unsafe in (
            "yaml.load(",
            "yaml.unsafe_load",
            "yaml.full_load",
            "Loader=",
            "UnsafeLoader",
        ):
            assert unsafe not in text, f"{source}: {unsafe}"


# -- property-based: any input either loads or raises ConfigError -----------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from autodeeplab.config import TrainConfig  # noqa: E402

_KEYS = sorted(
    {f for section in config_to_dict(SearchConfig()).values() for f in section}
    | {f for section in config_to_dict(TrainConfig()).values() for f in section}
    | {"model", "data", "search", "train", "eval", "bogus", ""}
)

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 2, 8, 16, 64, -1, 10**400])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["1e-3", "synthetic", "cpu", "auto", "sep_conv_3x3", "nan"])
)
_values = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS), children, max_size=4)
    ),
    max_leaves=20,
)


def _config_mapping():
    """Mappings shaped like a config: known sections and keys, any values."""
    section = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=5)
    return st.dictionaries(
        st.sampled_from(["model", "data", "search", "train", "eval", "bogus"]),
        section | _values,
        max_size=4,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(_config_mapping(), _values), train=st.booleans())
@pytest.mark.slow
def test_random_mappings_load_or_raise_config_error(data, train: bool) -> None:
    base = TrainConfig() if train else SearchConfig()
    try:
        cfg = config_from_dict(data, base, where="random")
    except ConfigError as exc:
        assert str(exc).startswith("random: ") and "\n" not in str(exc)
        return
    assert config_from_dict(config_to_dict(cfg), base) == cfg  # a loaded config round-trips


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_config_mapping())
@pytest.mark.slow
def test_random_yaml_files_load_or_raise_config_error(tmp_path_factory, data) -> None:
    p = tmp_path_factory.mktemp("yaml") / "random.yaml"
    p.write_text(yaml.safe_dump(data, allow_unicode=False), encoding="utf-8")
    try:
        cfg = load_config(p)
    except ConfigError as exc:
        assert str(exc).startswith(f"{p}: ")
        return
    assert isinstance(cfg, SearchConfig)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from([*_KEYS, "search.epochs", "model.strides", "data.scale", "x.y.z"]),
    raw=st.text(max_size=20) | st.sampled_from(["[", "{a: 1}", "!!python/none", "1e9999", "-0"]),
)
def test_random_overrides_load_or_raise_config_error(key: str, raw: str) -> None:
    try:
        load_config(None, [f"{key}={raw}"])
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_one_data_section_serves_search_and_training() -> None:
    search, train = SearchConfig().data, TrainConfig().data
    assert type(search) is type(train) is DataConfig
    assert (search.crop, train.crop) == (64, 769)  # the one field whose default differs
    assert {**config_to_dict(search), "crop": 769} == config_to_dict(train)
