"""Tests of checkpoints: round trip, safe loading, clear errors and atomic writes."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from autodeeplab.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
)


def _state() -> dict:
    torch.manual_seed(0)
    return {
        "model": {"w": torch.randn(3, 4), "b": torch.arange(5), "flag": torch.tensor(True)},
        "optimizer": {"state": {0: {"momentum": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]},
        "epoch": 7,
        "config": {"search": {"epochs": 40, "grad_clip": None, "betas": [0.5, 0.999]}},
        "genotype": '{"cell": []}',
    }


def _assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b and type(a) is type(b)


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "runs" / "ckpt" / "last.pt"  # parents are created
    state = _state()
    save_checkpoint(f, state, kind="search")
    loaded = load_checkpoint(f, kind="search")
    assert loaded["format_version"] == FORMAT_VERSION == 1
    assert loaded["kind"] == "search"
    _assert_same({k: v for k, v in loaded.items() if k not in ("format_version", "kind")}, state)
    _assert_same(load_checkpoint(str(f)), loaded)  # str path, no kind check
    assert _files(f.parent) == ["last.pt"]  # no temp file left behind


def test_tensors_load_on_cpu(tmp_path: Path) -> None:
    f = tmp_path / "a.pt"
    save_checkpoint(f, {"t": torch.ones(2)}, kind="train")
    assert load_checkpoint(f)["t"].device == torch.device("cpu")


def test_save_overwrites(tmp_path: Path) -> None:
    f = tmp_path / "a.pt"
    save_checkpoint(f, {"epoch": 1}, kind="search")
    save_checkpoint(f, {"epoch": 2}, kind="search")
    assert load_checkpoint(f)["epoch"] == 2
    assert _files(tmp_path) == ["a.pt"]


def test_kind_mismatch(tmp_path: Path) -> None:
    f = tmp_path / "search_last.pt"
    save_checkpoint(f, {}, kind="search")
    with pytest.raises(
        CheckpointError, match="search_last.pt: this is a 'search' checkpoint, expected a 'train'"
    ):
        load_checkpoint(f, kind="train")


def test_version_mismatch(tmp_path: Path) -> None:
    f = tmp_path / "future.pt"
    torch.save({"format_version": 99, "kind": "search"}, f)
    with pytest.raises(CheckpointError, match="future.pt: checkpoint format 99 is not supported"):
        load_checkpoint(f)


def test_not_a_checkpoint_dict(tmp_path: Path) -> None:
    f = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(1)}, f)
    with pytest.raises(CheckpointError, match="plain.pt: not an autodeeplab checkpoint"):
        load_checkpoint(f)
    torch.save([1, 2], f)
    with pytest.raises(CheckpointError, match="plain.pt: not an autodeeplab checkpoint"):
        load_checkpoint(f)


def test_truncated_file(tmp_path: Path) -> None:
    f = tmp_path / "trunc.pt"
    save_checkpoint(f, _state(), kind="search")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt: not a readable autodeeplab checkpoint"):
        load_checkpoint(f)


@pytest.mark.parametrize("data", [b"", b"\x00garbage" * 50, b"PK\x03\x04broken zip"])
def test_garbage_bytes(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "garbage.pt"
    f.write_bytes(data)
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable autodeeplab checkpoint"):
        load_checkpoint(f)


class _Payload:
    """Stands for arbitrary code in a pickle: unpickling it would create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(marker: str) -> None:
    Path(marker).write_text("unpickled", encoding="utf-8")


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickled_custom_class_is_refused(tmp_path: Path, writer: str) -> None:
    f = tmp_path / "evil.pt"
    marker = tmp_path / "marker"
    payload = {"format_version": FORMAT_VERSION, "kind": "search", "x": _Payload(str(marker))}
    if writer == "torch":
        torch.save(payload, f)
    else:
        f.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match=r"evil.pt: .*unsafe.*Weights only load failed"):
        load_checkpoint(f)
    assert not marker.exists()  # nothing was executed
    # The payload is live: an unsafe load would have run it.
    if writer == "torch":
        torch.load(f, weights_only=False)
    else:
        pickle.loads(f.read_bytes())
    assert marker.read_text(encoding="utf-8") == "unpickled"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nothere.pt")
    with pytest.raises(FileNotFoundError, match="a_dir"):
        (tmp_path / "a_dir").mkdir()
        load_checkpoint(tmp_path / "a_dir")


def test_failing_writer_leaves_previous_file_and_no_temp(tmp_path: Path) -> None:
    f = tmp_path / "last.pt"
    save_checkpoint(f, {"epoch": 1}, kind="search")
    before = f.read_bytes()

    def broken(fobj) -> None:
        fobj.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(f, broken)
    assert f.read_bytes() == before
    assert _files(tmp_path) == ["last.pt"]
    assert load_checkpoint(f)["epoch"] == 1


def test_unpicklable_state_leaves_previous_file(tmp_path: Path) -> None:
    f = tmp_path / "last.pt"
    save_checkpoint(f, {"epoch": 1}, kind="search")
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        save_checkpoint(f, {"epoch": 2, "fn": lambda: 0}, kind="search")
    assert load_checkpoint(f)["epoch"] == 1
    assert _files(tmp_path) == ["last.pt"]


def test_atomic_write_writes_bytes(tmp_path: Path) -> None:
    f = tmp_path / "new" / "blob.bin"
    atomic_write(f, lambda fobj: fobj.write(b"abc"))
    assert f.read_bytes() == b"abc"
    assert _files(f.parent) == ["blob.bin"]
