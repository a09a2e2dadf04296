"""One process per run folder (issue 24, item 4).

search, train and run hold an exclusive flock on ``OUT/.autodeeplab.lock`` while they run;
a second process on the folder is refused in one line naming the holder's PID, and the
lock of a killed process is taken over (the kernel drops an flock with its process).
compare takes it shared: compare processes may share an --out, the other commands not.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from autodeeplab.cli import main
from autodeeplab.cli.outdir import LOCK_NAME, lock_out_dir
from conftest import TINY_SEARCH_ARGV, one_error

# A process that takes the folder's lock as the CLI does, says so, then waits.
_HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from autodeeplab.cli.outdir import lock_out_dir\n"
    "with lock_out_dir(Path(sys.argv[1]), 'search', shared=sys.argv[2] == 'shared'):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(600)\n"
)


def _hold(folder: Path, mode: str = "exclusive") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and p.name != LOCK_NAME
    }


def test_a_second_holder_is_refused_naming_the_pid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = _hold(out)
    try:
        assert (out / LOCK_NAME).read_text().split() == [str(holder.pid)]
        refused = pytest.raises(ValueError, match=rf"PID {holder.pid} is using this folder")
        with refused, lock_out_dir(out, "train"):
            pass
        with (
            pytest.raises(ValueError, match=f"PID {holder.pid}"),
            lock_out_dir(out, "compare", shared=True),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL leaves the file, not the lock: the next process takes it over.
    assert (out / LOCK_NAME).is_file()
    with lock_out_dir(out, "train"):
        assert (out / LOCK_NAME).read_text().split() == [str(os.getpid())]
    assert not (out / LOCK_NAME).exists()  # removed by its holder at the end


def test_shared_holders_exclude_an_exclusive_one_not_each_other(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    holder = _hold(out, "shared")
    try:
        with lock_out_dir(out, "compare", shared=True):
            # Both sharers are named: this process and the other one.
            refused = pytest.raises(ValueError, match=rf"PIDs .*{holder.pid}")
            with refused, lock_out_dir(out, "search"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with lock_out_dir(out, "search"):
        pass


def test_a_refused_lock_leaves_no_folder_behind(tmp_path: Path) -> None:
    holder = _hold(tmp_path / "a")
    try:
        with pytest.raises(ValueError), lock_out_dir(tmp_path / "a", "run"):
            pass
    finally:
        holder.kill()
        holder.wait()
    # A folder the lock made is removed with the lock when nothing else was written.
    with lock_out_dir(tmp_path / "new" / "deeper", "train"):
        assert (tmp_path / "new" / "deeper").is_dir()
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_second_command_on_a_held_run_folder_is_refused(
    tiny_search_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    shutil.copytree(tiny_search_run, out)
    before = _snapshot(out)
    holder = _hold(out)
    try:
        for argv in (
            ["search", "--out", str(out), *TINY_SEARCH_ARGV, "--resume"],
            ["search", "--out", str(out), *TINY_SEARCH_ARGV, "--overwrite"],
        ):
            line = one_error(capsys, argv)
            assert f"--out {out}: PID {holder.pid} is using this folder" in line
        assert _snapshot(out) == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a killed run: its lock is stale at once
        holder.wait()
    assert main(["search", "--out", str(out), *TINY_SEARCH_ARGV, "--resume"]) == 0
    assert not (out / LOCK_NAME).exists()
    capsys.readouterr()
