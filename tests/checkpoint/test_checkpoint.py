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
    assert _files(f.parent) == ["last.pt", "latest.json"]  # no temp file left behind


def test_tensors_load_on_cpu(tmp_path: Path) -> None:
    f = tmp_path / "a.pt"
    save_checkpoint(f, {"t": torch.ones(2)}, kind="train")
    assert load_checkpoint(f)["t"].device == torch.device("cpu")


def test_save_overwrites(tmp_path: Path) -> None:
    f = tmp_path / "a.pt"
    save_checkpoint(f, {"epoch": 1}, kind="search")
    save_checkpoint(f, {"epoch": 2}, kind="search")
    assert load_checkpoint(f)["epoch"] == 2
    assert _files(tmp_path) == ["a.pt", "latest.json"]


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
    with pytest.raises(CheckpointError, match=r"evil.pt: refused, unsafe: .*could run code"):
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
    # A folder is not "not found" (issue 15): the error says what stands there.
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(ValueError, match="a_dir: is a folder, not a checkpoint"):
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
    assert _files(tmp_path) == ["last.pt", "latest.json"]
    assert load_checkpoint(f)["epoch"] == 1


def test_unpicklable_state_leaves_previous_file(tmp_path: Path) -> None:
    f = tmp_path / "last.pt"
    save_checkpoint(f, {"epoch": 1}, kind="search")
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        save_checkpoint(f, {"epoch": 2, "fn": lambda: 0}, kind="search")
    assert load_checkpoint(f)["epoch"] == 1
    assert _files(tmp_path) == ["last.pt", "latest.json"]


def test_atomic_write_writes_bytes(tmp_path: Path) -> None:
    f = tmp_path / "new" / "blob.bin"
    atomic_write(f, lambda fobj: fobj.write(b"abc"))
    assert f.read_bytes() == b"abc"
    assert _files(f.parent) == ["blob.bin"]


# -- disk space, latest.json, stale temp files --------------------------------------------------


def _disk(free: int):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    return lambda path: usage(10 * 2**30, 10 * 2**30 - free, free)


def test_too_little_disk_space_is_refused_before_writing(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from autodeeplab.checkpoint import DiskSpaceError, estimate_checkpoint_bytes

    f = tmp_path / "ckpts" / "epoch_0002.pt"
    save_checkpoint(f.with_name("epoch_0001.pt"), {"epoch": 1}, kind="search")
    before = _files(f.parent)
    state = {"epoch": 2, "w": torch.zeros(2**20)}  # 4 MiB of weights
    assert 4 * 2**20 < estimate_checkpoint_bytes(state) < 4.1 * 2**20
    monkeypatch.setattr(shutil, "disk_usage", _disk(2 * 2**20))
    with pytest.raises(DiskSpaceError) as info:
        save_checkpoint(f, state, kind="search")
    message = str(info.value)
    assert message.startswith(f"{f.parent}: not enough disk space to write epoch_0002.pt")
    assert "needs about 20.2 MiB, 2.0 MiB free" in message and "--out" in message
    assert "\n" not in message
    assert isinstance(info.value, OSError) and isinstance(info.value, CheckpointError)
    assert info.value.errno == 28  # ENOSPC
    # Nothing written or touched: the previous checkpoint is still the latest.
    assert _files(f.parent) == before
    assert load_checkpoint(f.with_name("epoch_0001.pt"))["epoch"] == 1
    monkeypatch.setattr(shutil, "disk_usage", _disk(10 * 2**30))
    save_checkpoint(f, state, kind="search")
    assert load_checkpoint(f)["epoch"] == 2


def test_disk_filling_up_during_the_write_is_a_clear_error(tmp_path: Path) -> None:
    import errno

    from autodeeplab.checkpoint import DiskSpaceError

    f = tmp_path / "last.pt"
    save_checkpoint(f, {"epoch": 1}, kind="train")

    def full(fobj) -> None:
        fobj.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskSpaceError, match=r"the disk filled up while writing last.pt"):
        atomic_write(f, full)
    assert load_checkpoint(f)["epoch"] == 1
    assert _files(tmp_path) == ["last.pt", "latest.json"]


def test_estimate_is_close_to_the_written_size(tmp_path: Path) -> None:
    from autodeeplab.checkpoint import estimate_checkpoint_bytes
    from autodeeplab.space import SearchNetwork

    torch.manual_seed(0)
    net = SearchNetwork(3, num_layers=3, num_blocks=2, filter_multiplier=2, strides=(4, 8, 16))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 3, 16, 16)).mean().backward()
    opt.step()
    state = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "split": {"train_a": list(range(500)), "train_b": list(range(500, 1000))},
    }
    f = tmp_path / "a.pt"
    save_checkpoint(f, state, kind="search")
    size = f.stat().st_size
    assert 0.9 * size < estimate_checkpoint_bytes(state) < 1.5 * size


def test_latest_json_names_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    import json

    from autodeeplab.checkpoint import read_latest

    assert read_latest(tmp_path) is None
    save_checkpoint(tmp_path / "epoch_0001.pt", {"epoch": 1}, kind="search")
    save_checkpoint(tmp_path / "epoch_0002.pt", {"epoch": 2, "step": 8}, kind="search")
    record = json.loads((tmp_path / "latest.json").read_text())
    size = (tmp_path / "epoch_0002.pt").stat().st_size
    assert record == {
        "checkpoint": "epoch_0002.pt",
        "kind": "search",
        "format_version": FORMAT_VERSION,
        "bytes": size,
        "epoch": 2,
        "step": 8,
    }
    assert read_latest(tmp_path) == tmp_path / "epoch_0002.pt"
    assert read_latest(tmp_path, kind="search") == tmp_path / "epoch_0002.pt"
    assert read_latest(tmp_path, kind="train") is None
    # A record that no longer matches its file, or is junk, names nothing.
    (tmp_path / "epoch_0002.pt").write_bytes(b"short")
    assert read_latest(tmp_path) is None
    for junk in ("", "[]", '{"checkpoint": "../x.pt"}', '{"checkpoint": 3}', "\xff"):
        (tmp_path / "latest.json").write_text(junk)
        assert read_latest(tmp_path) is None


def test_temp_files_of_dead_writers_are_removed_and_never_look_like_checkpoints(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from autodeeplab.checkpoint import clean_stale_temp_files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".epoch_0003.pt.tmp{dead_pid}"
    stale.write_bytes(b"half a checkpoint")
    mine = tmp_path / f".epoch_0004.pt.tmp{__import__('os').getpid()}"
    mine.write_bytes(b"being written")
    other = tmp_path / ".config.yaml.tmp"  # another writer's fixed temp name: not ours
    other.write_text("x")
    assert not list(tmp_path.glob("epoch_*.pt")) and not list(tmp_path.glob("*.pt"))
    assert clean_stale_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])
    save_checkpoint(tmp_path / "epoch_0001.pt", {"epoch": 1}, kind="search")  # cleans too
    assert clean_stale_temp_files(tmp_path / "missing") == []


def test_a_full_disk_under_torch_save_is_reported_as_such(tmp_path: Path, monkeypatch) -> None:
    import builtins
    import errno

    import autodeeplab.checkpoint.write as ckpt_module
    from autodeeplab.checkpoint import DiskSpaceError

    f = tmp_path / "epoch_0002.pt"
    save_checkpoint(f.with_name("epoch_0001.pt"), {"epoch": 1}, kind="search")

    class FillsUp:
        """A file on a disk with 1000 bytes left."""

        def __init__(self, real) -> None:
            self.real, self.written = real, 0

        def write(self, data) -> int:
            self.written += len(data)
            if self.written > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.real.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.real.close()

        def __getattr__(self, name):
            return getattr(self.real, name)

    opener = lambda *a: FillsUp(builtins.open(*a))  # noqa: E731, SIM115 - closed by FillsUp
    monkeypatch.setattr(ckpt_module, "open", opener, raising=False)
    with pytest.raises(DiskSpaceError, match="the disk filled up while writing epoch_0002.pt"):
        save_checkpoint(f, {"epoch": 2, "w": torch.zeros(10_000)}, kind="search")
    monkeypatch.undo()
    assert _files(tmp_path) == ["epoch_0001.pt", "latest.json"]  # no torn temp file left
    assert load_checkpoint(f.with_name("epoch_0001.pt"))["epoch"] == 1
