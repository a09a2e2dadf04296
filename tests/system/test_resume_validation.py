"""``--resume`` validates before it writes (issue 24, item 3).

A refused resume leaves every file of the run as it was (bytes and modification times), a
resume with another seed or other split settings is refused in one line, and the model
check compares the genotype's content, so a moved run folder resumes; the advice names
files that exist.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autodeeplab.cli import main
from autodeeplab.genotype import save_genotype
from autodeeplab.model import MODELS
from conftest import TINY_SEARCH_ARGV, one_error, tiny_train_argv


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def search_copy(tiny_search_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "search"
    shutil.copytree(tiny_search_run, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--seed", "4"], "search.seed=3, not 4"),
        (["--set", "search.split_fraction=0.6"], "search.split_fraction=0.5, not 0.6"),
        (["--set", "data.train_samples=6"], "data.train_samples=4, not 6"),
        (["--set", "model.num_layers=3"], "model.num_layers=2, not 3"),
        # refused by the loop's own checks in the past only after config.yaml was rewritten
        (["--batch-size", "4"], "fewer than the batch size 4"),
    ],
)
def test_a_refused_search_resume_changes_no_file(
    search_copy: Path, capsys, extra: list[str], said: str
) -> None:
    before = snapshot(search_copy)
    line = one_error(
        capsys, ["search", "--out", str(search_copy), *TINY_SEARCH_ARGV, *extra, "--resume"]
    )
    assert said in line
    assert snapshot(search_copy) == before
    if extra[0] != "--seed":
        return
    # The advice names the run's own config.yaml, and it resumes (config.yaml unchanged).
    assert f"--config {search_copy / 'config.yaml'}" in line
    argv = ["search", "--config", str(search_copy / "config.yaml"), "--out", str(search_copy)]
    assert main([*argv, "--resume", "--no-progress"]) == 0


@pytest.mark.slow
def test_a_resume_keeps_split_json_and_its_seed(search_copy: Path, capsys) -> None:
    # A given split drawn with seed 7: the run keeps its label, a resume does not relabel it.
    split = json.loads((search_copy / "split.json").read_text())
    split["seed"] = 7
    (search_copy / "split.json").write_text(json.dumps(split))
    before = (search_copy / "split.json").read_bytes()
    assert main(["search", "--out", str(search_copy), *TINY_SEARCH_ARGV, "--resume"]) == 0
    assert (search_copy / "split.json").read_bytes() == before
    # An edited split.json is rewritten from the checkpoint's halves, not trusted.
    split["train_a"], split["train_b"] = split["train_b"], split["train_a"]
    (search_copy / "split.json").write_text(json.dumps(split))
    assert main(["search", "--out", str(search_copy), *TINY_SEARCH_ARGV, "--resume"]) == 0
    restored = json.loads((search_copy / "split.json").read_text())
    assert restored["train_b"] == split["train_a"]
    capsys.readouterr()


TRAIN = tiny_train_argv(iters=1, samples=(2, 1), eval_every=1)


def _genotype_argv() -> list[str]:
    """TRAIN with --genotype FILE instead of --model (the caller writes the file)."""
    argv = list(TRAIN)
    i = argv.index("--model")
    del argv[i : i + 2]
    return argv


@pytest.mark.slow
def test_a_moved_train_run_resumes_by_genotype_content(tmp_path: Path, capsys) -> None:
    genotype = tmp_path / "g1" / "genotype.json"
    save_genotype(MODELS["auto-deeplab-s"]["genotype"], genotype)
    out = tmp_path / "t1"
    assert main(["train", "--genotype", str(genotype), "--out", str(out), *_genotype_argv()]) == 0
    # Both the genotype's folder and the run folder move.
    (tmp_path / "g1").rename(tmp_path / "g2")
    moved = tmp_path / "t2"
    out.rename(moved)
    before = snapshot(moved)
    # The run's own config names the old file: refused, naming the run's copy, which exists.
    line = one_error(capsys, ["train", "--config", str(moved / "config.yaml"), "--out",
                              str(moved), "--resume"])  # fmt: skip
    assert f"resume with --genotype {moved / 'genotype.json'}" in line
    assert (moved / "genotype.json").is_file() and snapshot(moved) == before
    # The same genotype at another path resumes; another genotype or seed is refused.
    new = tmp_path / "g2" / "genotype.json"
    argv = ["train", "--out", str(moved), *_genotype_argv(), "--resume"]
    line = one_error(capsys, [*argv, "--genotype", str(new), "--seed", "5"])
    assert "train.seed=1, not 5" in line and f"--config {moved / 'config.yaml'}" in line
    line = one_error(capsys, ["train", "--out", str(moved), *TRAIN, "--resume"])
    assert "model.name=None, not 'auto-deeplab-s'" in line
    assert snapshot(moved) == before
    assert main([*argv, "--genotype", str(new)]) == 0
    assert main([*argv, "--genotype", str(moved / "genotype.json")]) == 0
    capsys.readouterr()


@pytest.mark.slow
def test_a_moved_pipeline_folder_resumes(tmp_path: Path, capsys) -> None:
    import yaml

    from conftest import TINY_RUN_SEARCH_YAML, TINY_RUN_TRAIN_YAML

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TINY_RUN_SEARCH_YAML))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({**TINY_RUN_TRAIN_YAML, "train": {
        **TINY_RUN_TRAIN_YAML["train"], "iters": 1}}))  # fmt: skip
    argv = ["run", "--search-config", str(tmp_path / "s.yaml"), "--train-config",
            str(tmp_path / "t.yaml"), "--no-progress"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    (tmp_path / "a").rename(tmp_path / "b")
    # The train stage's genotype path changed with the folder: its content did not.
    assert main([*argv, "--out", str(tmp_path / "b"), "--resume"]) == 0
    capsys.readouterr()
