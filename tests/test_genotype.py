"""Tests of Genotype: the paper's architecture, JSON I/O, validation and search-space sizes."""

from __future__ import annotations

import collections
import itertools
import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autodeeplab.genotype import (
    PAPER_GENOTYPE,
    Genotype,
    GenotypeError,
    count_paths,
    load_genotype,
    random_genotype,
    save_genotype,
    search_space_size,
)
from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.cell import edge_index

VALID_OPS = [op for op in PRIMITIVES if op != "none"]
TINY = {"cell": [[["skip_connect", 0], ["sep_conv_3x3", 1]]], "path": [0, 1]}


def _json(**changes) -> str:
    data = {**json.loads(json.dumps(TINY)), **changes}
    return json.dumps({k: v for k, v in data.items() if v is not _DROP})


_DROP = object()

# -- the paper's architecture (docs/design.md §5) --------------------------------------------------


def test_paper_path_and_strides() -> None:
    assert PAPER_GENOTYPE.path == (0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1)
    assert PAPER_GENOTYPE.strides == (4, 4, 4, 8, 16, 8, 16, 16, 32, 32, 16, 8)
    assert PAPER_GENOTYPE.num_layers == 12
    assert PAPER_GENOTYPE.num_blocks == 5


def test_paper_cell_matches_spec_darts_pairs() -> None:
    # docs/design.md §5.2, DARTS-style (input, op): states [H^{l-2}, H^{l-1}, b1, ...].
    spec = [
        [(0, "dil_conv_5x5"), (1, "sep_conv_3x3")],
        [(0, "sep_conv_3x3"), (1, "dil_conv_3x3")],
        [(0, "sep_conv_3x3"), (3, "sep_conv_3x3")],
        [(2, "sep_conv_5x5"), (4, "sep_conv_5x5")],
        [(5, "dil_conv_5x5"), (3, "sep_conv_5x5")],
    ]
    got = [sorted((inp, op) for op, inp in block) for block in PAPER_GENOTYPE.cell]
    assert got == [sorted(block) for block in spec]
    # The TF hnasnet left/right branch order (docs/design.md §5.2 table).
    assert PAPER_GENOTYPE.cell == (
        (("dil_conv_5x5", 0), ("sep_conv_3x3", 1)),
        (("sep_conv_3x3", 0), ("dil_conv_3x3", 1)),
        (("sep_conv_3x3", 3), ("sep_conv_3x3", 0)),
        (("sep_conv_5x5", 4), ("sep_conv_5x5", 2)),
        (("sep_conv_5x5", 3), ("dil_conv_5x5", 5)),
    )


def test_paper_cell_in_nr_flat_edge_indexing() -> None:
    nr = [[0, 7], [1, 4], [2, 4], [3, 6], [5, 4], [8, 4], [11, 5], [13, 5], [19, 7], [17, 5]]
    ours = sorted(
        [edge_index(b, inp), PRIMITIVES.index(op)]
        for b, block in enumerate(PAPER_GENOTYPE.cell)
        for op, inp in block
    )
    assert ours == sorted(nr)


def test_paper_op_counts() -> None:
    ops = [op for block in PAPER_GENOTYPE.cell for op, _ in block]
    assert {op: ops.count(op) for op in set(ops)} == {
        "sep_conv_3x3": 4,
        "sep_conv_5x5": 3,
        "dil_conv_5x5": 2,
        "dil_conv_3x3": 1,
    }


# -- JSON round trip -------------------------------------------------------------------------------


def test_json_round_trip_of_paper_genotype(tmp_path: Path) -> None:
    text = PAPER_GENOTYPE.to_json()
    assert Genotype.from_json(text) == PAPER_GENOTYPE
    data = json.loads(text)
    assert data["format"] == "autodeeplab-genotype" and data["version"] == 1
    assert data["path"] == [0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1]
    assert data["strides"] == [4, 4, 4, 8, 16, 8, 16, 16, 32, 32, 16, 8]
    assert data["cell"][0] == [["dil_conv_5x5", 0], ["sep_conv_3x3", 1]]
    assert Genotype.from_dict(PAPER_GENOTYPE.to_dict()) == PAPER_GENOTYPE

    f = tmp_path / "sub" / "genotype.json"
    save_genotype(PAPER_GENOTYPE, f)
    assert load_genotype(f) == PAPER_GENOTYPE
    assert load_genotype(str(f)) == PAPER_GENOTYPE
    assert f.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in f.parent.iterdir()) == ["genotype.json"]  # no temp file


def test_minimal_dict_without_format_version_and_strides_is_accepted() -> None:
    g = Genotype.from_dict(TINY)
    assert g.cell == ((("skip_connect", 0), ("sep_conv_3x3", 1)),)
    assert g.path == (0, 1) and g.strides == (4, 8)


def test_genotype_is_hashable_and_built_from_lists() -> None:
    g = Genotype(cell=[[["skip_connect", 0], ["sep_conv_3x3", 1]]], path=[0, 1])
    assert g == Genotype.from_dict(TINY)
    assert hash(g) == hash(Genotype.from_dict(TINY))


# -- rejection -------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_genotype(missing)


def test_invalid_json_file_names_the_path(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{"cell": [', encoding="utf-8")
    with pytest.raises(GenotypeError, match=r"bad\.json: not valid JSON"):
        load_genotype(f)
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GenotypeError, match=r"bad\.json: not a text file"):
        load_genotype(f)


def test_errors_are_value_errors() -> None:
    assert issubclass(GenotypeError, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('"cell"', "expected a JSON object, got str"),
        (_json(format="darts-genotype"), "'format' is 'darts-genotype'"),
        (_json(version=2), "version 2 is not supported"),
        (_json(version="1"), "version '1' is not supported"),
        (_json(cell=_DROP), "missing key 'cell'"),
        (_json(path=_DROP), "missing key 'path'"),
        (_json(cell={"a": 1}), "'cell' must be a list of blocks"),
        (_json(cell=[]), "'cell' has no blocks"),
        (_json(cell=["sep_conv_3x3"]), "cell block 0 must be a list"),
        (_json(cell=[{"op": "x"}]), "cell block 0 must be a list"),
        (_json(cell=[[["skip_connect", 0]]]), "block 0 has 1 branches, expected 2"),
        (
            _json(cell=[[["skip_connect", 0], ["skip_connect", 1], ["skip_connect", 1]]]),
            "block 0 has 3 branches, expected 2",
        ),
        (_json(cell=[[["skip_connect", 0], ["skip_connect"]]]), "branch 1 must be \\[op, input\\]"),
        (_json(cell=[[["skip_connect", 0], "skip_connect"]]), "branch 1 must be \\[op, input\\]"),
        (_json(cell=[[["conv_7x7", 0], ["skip_connect", 1]]]), "unknown op 'conv_7x7'"),
        (_json(cell=[[[3, 0], ["skip_connect", 1]]]), "unknown op 3"),
        (_json(cell=[[["none", 0], ["skip_connect", 1]]]), "op 'none' \\(zero\\)"),
        (_json(cell=[[["skip_connect", 2], ["skip_connect", 1]]]), "input 2 must be .* in 0..1"),
        (_json(cell=[[["skip_connect", -1], ["skip_connect", 1]]]), "input -1 must be"),
        (_json(cell=[[["skip_connect", True], ["skip_connect", 1]]]), "input True must be"),
        (_json(cell=[[["skip_connect", 1.0], ["skip_connect", 1]]]), "input 1.0 must be"),
        (_json(cell=[[["skip_connect", "1"], ["skip_connect", 1]]]), "input '1' must be"),
        (_json(cell=[[["skip_connect", None], ["skip_connect", 1]]]), "input None must be"),
        (
            _json(
                cell=[[["skip_connect", 0], ["skip_connect", 1]]] * 2
                + [[["skip_connect", 4], ["skip_connect", 0]]]
            ),
            "block 2 branch 0: input 4 must be an integer in 0..3",
        ),
        (
            _json(cell=[[["skip_connect", 10**30], ["skip_connect", 1]]]),
            "input 1000000000000000000000000000000 must be",
        ),
        (_json(path=[]), "'path' has no layers"),
        (_json(path="0,1"), "'path' must be a list of levels"),
        (_json(path=[0, -1]), "layer 2: level -1 must be an integer >= 0"),
        (_json(path=[0, 2]), "layer 2 jumps from level 0 to 2"),
        (_json(path=[2]), "layer 1 jumps from level 0 to 2"),
        (_json(path=[1, 1, 3]), "layer 3 jumps from level 1 to 3"),
        (_json(path=[0, 1.0]), "level 1.0 must be an integer"),
        (_json(path=[0, True]), "level True must be an integer"),
        (_json(path=[0, "1"]), "level '1' must be an integer"),
        (_json(path=[0, 10**30]), "level 1000000000000000000000000000000 must be"),
        (_json(path=[0] * 1025), "1025 layers, at most 1024"),
        (_json(strides=[4, 16]), "'strides' \\[4, 16\\] disagree with 'path' \\[0, 1\\]"),
        ('{"cell": [[["skip_connect", 0], ["skip_connect", 1]]], "path": [1e400]}', "level inf"),
    ],
)
def test_rejects_malformed_genotypes_with_a_message(text: str, message: str) -> None:
    with pytest.raises(GenotypeError, match=message) as info:
        Genotype.from_json(text, where="g.json")
    assert str(info.value).startswith("g.json: ")


def test_constructor_validates_too() -> None:
    with pytest.raises(GenotypeError, match="genotype: .*unknown op 'bogus'"):
        Genotype(cell=((("bogus", 0), ("skip_connect", 1)),), path=(0,))
    with pytest.raises(GenotypeError, match="jumps from level 0 to 2"):
        Genotype(cell=PAPER_GENOTYPE.cell, path=(2,))


def test_huge_integer_literal_is_a_genotype_error() -> None:
    text = '{"cell": [[["skip_connect", ' + "9" * 5000 + '], ["skip_connect", 1]]], "path": [0]}'
    with pytest.raises(GenotypeError):
        Genotype.from_json(text)


def test_deeply_nested_json_is_a_genotype_error() -> None:
    with pytest.raises(GenotypeError):
        Genotype.from_json("[" * 100_000)


def test_bool_version_is_rejected() -> None:
    with pytest.raises(GenotypeError, match="version"):
        Genotype.from_json(_json(version=True))


# -- property-based --------------------------------------------------------------------------------


@st.composite
def genotypes(draw) -> Genotype:
    num_blocks = draw(st.integers(1, 6))
    cell = tuple(
        tuple((draw(st.sampled_from(VALID_OPS)), draw(st.integers(0, i + 1))) for _ in range(2))
        for i in range(num_blocks)
    )
    num_layers = draw(st.integers(1, 20))
    levels = draw(st.integers(1, 6))
    path, prev = [], 0
    for _ in range(num_layers):
        choices = [lv for lv in (prev - 1, prev, prev + 1) if 0 <= lv < levels]
        prev = draw(st.sampled_from(choices))
        path.append(prev)
    return Genotype(cell=cell, path=tuple(path))


@settings(max_examples=150, deadline=None)
@given(genotypes())
def test_random_valid_genotypes_round_trip_exactly(g: Genotype) -> None:
    again = Genotype.from_json(g.to_json())
    assert again == g
    assert again.cell == g.cell and again.path == g.path
    assert again.to_json() == g.to_json()
    assert again.strides == tuple(4 * 2**lv for lv in g.path)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True)
    | st.sampled_from([*PRIMITIVES, "conv", "autodeeplab-genotype", "", "format"])
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["cell", "path", "format", "version", "strides", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@st.composite
def near_valid(draw) -> dict:
    """Mostly-valid genotype dicts with one field swapped for garbage."""
    data = {
        "cell": [
            [["skip_connect", 0], ["sep_conv_3x3", 1]],
            [["max_pool_3x3", 2], ["avg_pool_3x3", 0]],
        ],
        "path": [0, 1, 2],
        "format": "autodeeplab-genotype",
        "version": 1,
        "strides": [4, 8, 16],
    }
    key = draw(st.sampled_from(sorted(data)))
    if draw(st.booleans()):
        data[key] = draw(json_values)
    else:
        del data[key]
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, near_valid()))
def test_random_json_values_parse_or_raise_genotype_error(value) -> None:
    text = json.dumps(value)
    try:
        g = Genotype.from_json(text)
    except GenotypeError:
        return
    assert isinstance(g, Genotype)
    assert Genotype.from_json(g.to_json()) == g


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.-e truefalsnl', max_size=60))
def test_random_json_text_parses_or_raises_genotype_error(text: str) -> None:
    try:
        g = Genotype.from_json(text)
    except GenotypeError:
        return
    assert isinstance(g, Genotype)


python_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63, float("nan"), float("inf"), -0.0, 1.0])
    | st.floats()
    | st.binary(max_size=4)
    | st.sampled_from([*PRIMITIVES, "conv", "autodeeplab-genotype", "\udcff", "\x00"])
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.frozensets(st.integers(0, 3), max_size=3)
        | st.dictionaries(
            st.sampled_from(["cell", "path", "format", "version", "strides", 0, None]),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(python_junk, near_valid()))
def test_random_python_values_from_dict_raise_only_genotype_error(value) -> None:
    """Not only what JSON can hold: from_dict is public and callers pass any object."""
    try:
        g = Genotype.from_dict(value, where="obj")
    except GenotypeError as exc:
        message = str(exc)
        assert message.startswith("obj: ") and "\n" not in message and len(message) < 400
        return
    assert Genotype.from_json(g.to_json()) == g


def test_hostile_values_give_short_messages() -> None:
    deep: object = 0
    for _ in range(5000):  # deeper than repr could recurse
        deep = [deep]
    huge = {"cell": [[["skip_connect", 0], ["skip_connect", 1]]], "path": [0]}
    for data in (
        {**huge, "format": "x" * 10**6},
        {**huge, "strides": [[[[1]]]] * 10**5},
        {**huge, "cell": [[deep, ["skip_connect", 1]]]},
        {**huge, "cell": [[["x" * 10**6, 0], ["skip_connect", 1]]]},
        {**huge, "path": [0, 10**4000]},
    ):
        with pytest.raises(GenotypeError) as info:
            Genotype.from_dict(data, where="g.json")
        assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe\xfd",  # not UTF-8
        b'{"cell": [[["skip_connect", 0], ["skip_connect", 1]]], "path": [NaN]}',
        b'{"cell": [[["skip_connect", 0], ["skip_connect", 1]]], "path": [Infinity]}',
        b'{"cell": [[["skip_connect", 0], ["skip_connect", 1]]], "path": [0], "version": NaN}',
        b"[" * 50_000 + b"]" * 50_000,
        b'{"cell": ' + b"[" * 900 + b"]" * 900 + b', "path": [0]}',
        b"\x00" * 100,
        b'{"cell": [[["sk\xc3\xafp", 0], ["skip_connect", 1]]], "path": [0]}',
    ],
)
def test_hostile_genotype_files_raise_genotype_error(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "hostile.json"
    f.write_bytes(content)
    with pytest.raises(GenotypeError) as info:
        load_genotype(f)
    assert str(info.value).startswith(f"{f}: ") and len(str(info.value)) < 400


# -- search-space size (docs/design.md §8) ---------------------------------------------------------


def _brute_force_walks(num_layers: int, num_levels: int) -> int:
    """All level sequences from the stem (level 0) that move by at most one per layer."""
    count = 0
    for path in itertools.product(range(num_levels), repeat=num_layers):
        prev, ok = 0, True
        for level in path:
            ok = ok and abs(level - prev) <= 1
            prev = level
        count += ok
    return count


def _brute_force_cells(num_blocks: int, num_ops: int) -> int:
    """All cells: per block an ordered pair of (input, op) branches, repeats allowed."""
    per_block = []
    for i in range(num_blocks):
        branches = list(itertools.product(range(i + 2), range(num_ops)))
        per_block.append(list(itertools.product(branches, repeat=2)))
    return sum(1 for _ in itertools.product(*per_block))


def test_paper_numbers() -> None:
    size = search_space_size()
    assert size.network_paths == 75_025
    assert size.network_paths_paper == 28_657
    assert round(size.network_paths_paper, -3) == 29_000  # the paper's 2.9e4
    assert size.cells == 556_627_761_561_600
    assert f"{size.cells:.1e}" == "5.6e+14"
    assert size.joint == 28_657 * 556_627_761_561_600
    assert size.joint_literal == 75_025 * 556_627_761_561_600
    assert size.joint == pytest.approx(1.595e19, rel=1e-3)
    assert size.joint_literal == pytest.approx(4.176e19, rel=1e-3)
    assert size == search_space_size(12, 5, 8, 4)


def test_per_layer_path_counts_are_odd_fibonacci_numbers() -> None:
    expected = [2, 5, 13, 34, 89, 233, 610, 1597, 4181, 10946, 28657, 75025]
    got = [search_space_size(num_layers=n).network_paths for n in range(1, 13)]
    assert got == expected
    fib = [0, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    assert got == [fib[2 * n + 1] for n in range(1, 13)]
    # The paper's count uses L-1 transitions.
    assert [search_space_size(num_layers=n).network_paths_paper for n in range(2, 13)] == (
        expected[:-1]
    )
    assert search_space_size(num_layers=1).network_paths_paper == 1


@pytest.mark.parametrize("num_levels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("num_layers", [1, 2, 3, 4, 5, 6])
def test_path_count_equals_brute_force_enumeration(num_layers: int, num_levels: int) -> None:
    size = search_space_size(num_layers=num_layers, num_levels=num_levels)
    assert size.network_paths == _brute_force_walks(num_layers, num_levels)
    assert size.network_paths_paper == _brute_force_walks(num_layers - 1, num_levels)


@pytest.mark.parametrize(("num_blocks", "num_ops"), [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)])
def test_cell_count_equals_brute_force_enumeration(num_blocks: int, num_ops: int) -> None:
    size = search_space_size(num_blocks=num_blocks, num_ops=num_ops)
    assert size.cells == _brute_force_cells(num_blocks, num_ops)


def test_cell_count_formula_and_other_conventions_differ() -> None:
    # N_cell(B) = (B+1)!^2 * |O|^(2B).
    for b in range(1, 7):
        for o in (1, 2, 7, 8):
            assert search_space_size(num_blocks=b, num_ops=o).cells == (
                math.factorial(b + 1) ** 2 * o ** (2 * b)
            )
    cells = search_space_size().cells
    # Unordered input pairs (with repeats), ordered ops: 6.09e13, not the paper's 5.6e14.
    unordered = math.prod(math.comb(n + 1, 2) * 64 for n in range(2, 7))
    assert unordered == pytest.approx(6.088e13, rel=1e-3)
    assert unordered != cells
    seven_ops = search_space_size(num_ops=7).cells
    assert seven_ops == pytest.approx(1.464e14, rel=1e-3)
    assert seven_ops != cells


@pytest.mark.parametrize(
    "kwargs", [{"num_layers": 0}, {"num_blocks": 0}, {"num_layers": True}, {"num_blocks": 2.0}]
)
def test_search_space_size_rejects_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError, match="must be a positive integer"):
        search_space_size(**kwargs)
    with pytest.raises(ValueError, match="positive"):
        search_space_size(num_ops=0)


# -- random genotypes (the baseline of `compare`) --------------------------------------------------


def test_count_paths_matches_the_search_space_size() -> None:
    assert count_paths(12, 4)[0][0] == search_space_size().network_paths == 75025
    assert count_paths(1, 4)[0][0] == 2  # stride 4 or 8 after the stem


def test_random_genotype_is_uniform_over_paths_and_never_none() -> None:
    rng = random.Random(0)
    valid = [
        p
        for p in itertools.product(range(3), repeat=3)
        if all(abs(b - a) <= 1 for a, b in zip((0, *p), p, strict=False))
    ]
    draws = [random_genotype(rng, 3, num_blocks=3, num_levels=3) for _ in range(4000)]
    seen = collections.Counter(g.path for g in draws)
    assert set(seen) == set(valid)  # every valid path, nothing else
    expected = len(draws) / len(valid)
    assert all(abs(n - expected) < 0.25 * expected for n in seen.values())  # ~uniform
    for g in draws[:200]:
        for block, branches in enumerate(g.cell):
            inputs = [i for _, i in branches]
            assert len(set(inputs)) == 2 and all(0 <= i < block + 2 for i in inputs)
            assert all(op != "none" for op, _ in branches)


def test_genotype_json_carries_how_it_was_searched(tmp_path) -> None:
    path = tmp_path / "g.json"
    save_genotype(PAPER_GENOTYPE, path, search={"path_decode": "relative", "path_margin": 1.25})
    assert json.loads(path.read_text())["search"]["path_decode"] == "relative"
    assert load_genotype(path) == PAPER_GENOTYPE
