"""Hostile inputs through the command line: one clear error naming the file, a non-zero exit,
and nothing written that looks complete.

Genotype JSON (``info``, ``train --genotype``), YAML configs (``search --config``),
checkpoints (``decode``, ``search --resume``, ``train --resume``, ``eval``) and dataset files
(``data check``, ``search --data folder:...``). Property tests of the parsers themselves are
in test_genotype.py and test_config.py.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autodeeplab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from autodeeplab.cli import main
from conftest import TINY_SEARCH_ARGV, one_error, tiny_folder


@pytest.fixture
def search_run(tiny_search_run: Path) -> Path:
    """A finished one-epoch search (its checkpoint, config and genotype are the victims)."""
    return tiny_search_run


# -- genotype JSON -----------------------------------------------------------------------------

GOOD_CELL = [["skip_connect", 0], ["sep_conv_3x3", 1]]

HOSTILE_GENOTYPES = {
    "a_list": b"[1, 2, 3]",
    "wrong_types": json.dumps({"cell": "sep_conv_3x3", "path": {"0": 1}}).encode(),
    "unknown_op": json.dumps({"cell": [[["conv_9x9", 0], GOOD_CELL[1]]], "path": [0]}).encode(),
    "negative_level": json.dumps({"cell": [GOOD_CELL], "path": [0, -1]}).encode(),
    "level_past_16": json.dumps({"cell": [GOOD_CELL], "path": list(range(17))}).encode(),
    "input_out_of_range": json.dumps({"cell": [[["skip_connect", 5]] * 2], "path": [0]}).encode(),
    "jump_two_levels": json.dumps({"cell": [GOOD_CELL], "path": [0, 2]}).encode(),
    "huge_number": b'{"cell": [[["skip_connect", 0], ["skip_connect", 1]]], "path": [0, '
    + b"9" * 5000
    + b"]}",
    "nan_level": b'{"cell": [[["skip_connect", 0], ["skip_connect", 1]]], "path": [NaN]}',
    "deeply_nested": b"[" * 100_000,
    "not_utf8": b'{"cell": "\xff\xfe", "path": [0]}',
    "empty": b"",
    "truncated": json.dumps({"cell": [GOOD_CELL], "path": [0, 1]}).encode()[:20],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HOSTILE_GENOTYPES))
def test_hostile_genotype_files(tmp_path: Path, capsys, name: str) -> None:
    f = tmp_path / f"{name}.json"
    f.write_bytes(HOSTILE_GENOTYPES[name])
    line = one_error(capsys, ["info", str(f)])
    assert f"{f}: " in line and len(line) < 400


def test_training_a_hostile_genotype_writes_nothing(tmp_path: Path, capsys) -> None:
    f = tmp_path / "g.json"
    f.write_bytes(HOSTILE_GENOTYPES["jump_two_levels"])
    out = tmp_path / "train"
    line = one_error(capsys, ["train", "--genotype", str(f), "--out", str(out), "--no-progress"])
    assert f"{f}: path layer 2 jumps from level 0 to 2" in line
    assert not out.exists()


# -- YAML configs ------------------------------------------------------------------------------

HOSTILE_CONFIGS = {
    "wrong_type": ("search:\n  epochs: ten\n", "key 'search.epochs': expected an integer"),
    "unknown_key": ("search:\n  epoch: 3\n", "unknown key 'search.epoch'"),
    "huge_number": ("data:\n  crop: " + "9" * 40 + "\n", "key 'data.crop': 9999"),
    "negative_size": ("data:\n  crop: -64\n", "key 'data.crop': -64 is out of range"),
    "zero_batch": ("search:\n  batch_size: 0\n", "key 'search.batch_size': 0 is out of range"),
    "nan_rate": ("search:\n  lr: .nan\n", "key 'search.lr': nan is out of range"),
    "python_tag": (
        "search:\n  epochs: !!python/object/apply:os.system ['touch {marker}']\n",
        "not valid YAML",
    ),
    "python_name_tag": ("search: !!python/name:os.system\n", "not valid YAML"),
    "a_list": ("- 1\n- 2\n", "section 'top level' must be a mapping"),
    "deeply_nested": ("search: " + "[" * 10_000 + "\n", "not valid YAML"),
    "binary_junk": (b"\x00\xff\xfe\x00", "not valid YAML"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_CONFIGS))
def test_hostile_config_files(tmp_path: Path, capsys, name: str) -> None:
    text, message = HOSTILE_CONFIGS[name]
    marker = tmp_path / "marker"
    f = tmp_path / f"{name}.yaml"
    if isinstance(text, bytes):
        f.write_bytes(text)
    else:
        f.write_text(text.replace("{marker}", str(marker)), encoding="utf-8")
    out = tmp_path / "run"
    line = one_error(capsys, ["search", "--config", str(f), "--out", str(out)])
    assert f"{f}: " in line and message in line and len(line) < 600  # may list the valid keys
    assert not out.exists() and not marker.exists()  # nothing written, nothing executed


# -- checkpoints -------------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a marker file: stands for arbitrary code in a pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile_checkpoints(directory: Path, good: Path, marker: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = directory / f"{name}.pt"
        files[name].write_bytes(data)

    data = good.read_bytes()
    for cut in (0, 1, 64, len(data) // 3, len(data) // 2, len(data) - 64, len(data) - 1):
        put(f"truncated_at_{cut}", data[:cut])
    put("bit_flipped", data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    put("json", b'{"format_version": 1, "kind": "search"}')
    for protocol in (2, 4):
        payload = {"format_version": 1, "kind": "search", "x": _Payload(str(marker))}
        put(f"evil_pickle_{protocol}", pickle.dumps(payload, protocol=protocol))
    torch.save({"format_version": 1, "kind": "search", "x": _Payload(str(marker))}, directory / "e")
    put("evil_torch_save", (directory / "e").read_bytes())
    torch.save([1, 2, 3], directory / "l")
    put("a_list", (directory / "l").read_bytes())
    torch.save({"format_version": 99, "kind": "search"}, directory / "v")
    put("future_format", (directory / "v").read_bytes())
    torch.save({"format_version": "1", "kind": "search"}, directory / "s")
    put("string_format", (directory / "s").read_bytes())
    save_checkpoint(directory / "train_kind.pt", {"iteration": 1, "model": {}}, "train")
    files["train_kind"] = directory / "train_kind.pt"
    return files


CHECKPOINT_MESSAGES = {
    "truncated": "not a readable autodeeplab checkpoint (truncated or corrupt",
    "bit_flipped": "not a readable autodeeplab checkpoint (truncated or corrupt",
    "json": "not a readable autodeeplab checkpoint (truncated or corrupt",
    "evil_pickle_2": "refused, unsafe",
    "evil_pickle_4": "not a readable autodeeplab checkpoint",
    "evil_torch_save": "refused, unsafe",
    "a_list": "not an autodeeplab checkpoint (no format_version)",
    "future_format": "checkpoint format 99 is not supported",
    "string_format": "checkpoint format '1' is not supported",
    "train_kind": "this is a 'train' checkpoint, expected a 'search' one",
}


@pytest.mark.slow
def test_hostile_checkpoints_are_refused_by_decode(search_run: Path, tmp_path: Path, capsys):
    marker = tmp_path / "marker"
    good = search_run / "checkpoints" / "epoch_0001.pt"
    files = _hostile_checkpoints(tmp_path, good, marker)
    assert len(files) == 16
    for name, f in files.items():
        line = one_error(capsys, ["decode", str(f), "--out", str(tmp_path / "dec" / "g.json")])
        expected = CHECKPOINT_MESSAGES["truncated" if name.startswith("trunc") else name]
        assert f"{f}: " in line and expected in line, (name, line)
        assert len(line) < 400, line
    assert not marker.exists()  # no payload ran
    assert not (tmp_path / "dec").exists()
    # The payloads are live: an unsafe load would have run them.
    torch.load(files["evil_torch_save"], weights_only=False)
    assert marker.exists()


@pytest.mark.slow
def test_resume_from_another_kind_or_config_is_refused_and_touches_nothing(
    search_run: Path, tmp_path: Path, capsys
) -> None:
    before = {p.name: p.read_bytes() for p in (search_run / "checkpoints").iterdir()}
    genotype = (search_run / "genotype.json").read_bytes()
    ckpt = search_run / "checkpoints" / "epoch_0001.pt"
    # Resuming with another num_layers than the checkpoint's (task 4: config mismatch).
    argv = ["search", "--out", str(search_run), *TINY_SEARCH_ARGV, "--set", "model.num_layers=3"]
    line = one_error(capsys, [*argv, "--resume"])
    assert f"{ckpt}: the run was made with model.num_layers=2, not 3" in line
    assert f"--config {search_run / 'config.yaml'}" in line
    assert {p.name: p.read_bytes() for p in (search_run / "checkpoints").iterdir()} == before
    assert (search_run / "genotype.json").read_bytes() == genotype
    # A train checkpoint given to search, a search checkpoint to train and to eval.
    train_ckpt = tmp_path / "last.pt"
    save_checkpoint(train_ckpt, {"iteration": 1, "model": {}}, "train")
    out = tmp_path / "s"
    line = one_error(
        capsys, ["search", "--out", str(out), *TINY_SEARCH_ARGV, "--resume", str(train_ckpt)]
    )
    assert f"{train_ckpt}: this is a 'train' checkpoint" in line and not out.exists()
    out = tmp_path / "t"
    argv = ["train", "--model", "auto-deeplab-s", "--out", str(out), "--resume", str(ckpt)]
    line = one_error(capsys, argv)
    assert f"{ckpt}: this is a 'search' checkpoint" in line and not out.exists()
    line = one_error(capsys, ["eval", str(ckpt)])
    assert f"{ckpt}: this is a 'search' checkpoint, not a trained network" in line


def test_required_keys_are_checked_on_load(tmp_path: Path) -> None:
    f = tmp_path / "epoch_0001.pt"
    save_checkpoint(f, {"epoch": 1, "model": {}}, "search")
    assert load_checkpoint(f, "search", required=("epoch", "model"))["epoch"] == 1
    with pytest.raises(CheckpointError, match="epoch_0001.pt: incomplete checkpoint, it has no "):
        load_checkpoint(f, "search", required=("model", "config", "rng"))


# -- dataset files -----------------------------------------------------------------------------


def _png_bomb(path: Path) -> None:
    """A PNG whose header claims 100000 x 100000 pixels: PIL must refuse, not allocate 10 GB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


IMAGE = "images/train/train1.png"
LABEL = "labels/train/train1.png"
HOSTILE_DATA = {
    # name: (file changed, how, message)
    "text_as_image": (IMAGE, lambda p: p.write_text("not an image"), "cannot read image"),
    "truncated_image": (IMAGE, lambda p: p.write_bytes(p.read_bytes()[:100]), "cannot read image"),
    "bomb_image": (IMAGE, _png_bomb, "DecompressionBombError"),
    "label_wrong_size": (
        LABEL,
        lambda p: Image.fromarray(np.zeros((10, 12), np.uint8)).save(p),
        "label is 12x10 but image",
    ),
    "label_rgb": (
        LABEL,
        lambda p: Image.fromarray(np.zeros((40, 44, 3), np.uint8)).save(p),
        "label has mode RGB",
    ),
    "label_16_bit": (
        LABEL,
        lambda p: Image.fromarray(np.full((40, 44), 1000, np.uint16)).save(p),
        "label values 1000..1000 do not fit in 0..255",
    ),
    "label_out_of_range": (
        LABEL,
        lambda p: Image.fromarray(np.full((40, 44), 7, np.uint8)).save(p),
        "label values 7 are outside the class set (allowed: 0-2, 255)",
    ),
    "label_missing": (LABEL, lambda p: p.unlink(), "missing label for image"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_DATA))
def test_hostile_dataset_files_are_reported_by_data_check(tmp_path: Path, capsys, name: str):
    root = tiny_folder(tmp_path / "data", corner=True)
    rel, spoil, message = HOSTILE_DATA[name]
    spoil(root / rel)
    assert main(["data", "check", f"folder:{root}"]) == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if message in line]
    assert len(problems) == 1 and str(root / rel) in problems[0], out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", "must hold a JSON object with a 'classes' list"),
        (b"\xff\xfe", "cannot read it as JSON"),
        (b'{"classes": ["a", 3]}', "'classes' must be a list of 1 to 255 class-name strings"),
    ],
)
def test_hostile_classes_json(tmp_path: Path, capsys, content: bytes, message: str) -> None:
    root = tiny_folder(tmp_path / "data", corner=True)
    (root / "classes.json").write_bytes(content)
    line = one_error(capsys, ["data", "check", f"folder:{root}"])
    assert f"{root / 'classes.json'}: " in line and message in line


@pytest.mark.parametrize("name", ["text_as_image", "label_out_of_range"])
def test_search_on_hostile_data_stops_with_one_error_and_no_result(
    tmp_path: Path, capsys, name: str
) -> None:
    root = tiny_folder(tmp_path / "data", corner=True)
    rel, spoil, message = HOSTILE_DATA[name]
    spoil(root / rel)
    out = tmp_path / "run"
    line = one_error(
        capsys, ["search", "--data", f"folder:{root}", "--out", str(out), *TINY_SEARCH_ARGV]
    )
    assert f"{root / rel}: " in line and message in line
    assert not (out / "genotype.json").exists()
    assert not list(out.glob("checkpoints/*.pt"))
