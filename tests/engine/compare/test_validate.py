"""What ``compare`` checks before its first retraining, and what it never takes on trust:
the split it reports on, results read back from --reuse (their digests), compare.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autodeeplab.engine.compare.compare import run_compare
from autodeeplab.engine.compare.results import ResultError
from autodeeplab.engine.compare.summary import read_comparison
from autodeeplab.engine.compare.validate import choose_report_split
from autodeeplab.genotype import Genotype, load_genotype, save_genotype
from conftest import tiny_folder

from .fakes import compare_config, copy_search, fake_training, snapshot


def _folder_config(root: Path):
    return compare_config(f"data.spec={json.dumps(f'folder:{root}')}")


def _add_test_split(root: Path, label_value: int) -> None:
    """A test split of two images whose every label pixel is ``label_value``."""
    (root / "images" / "test").mkdir()
    (root / "labels" / "test").mkdir()
    for i in range(2):
        image = np.zeros((40, 44, 3), np.uint8)
        Image.fromarray(image).save(root / "images" / "test" / f"t{i}.png")
        label = np.full((40, 44), label_value, np.uint8)
        Image.fromarray(label).save(root / "labels" / "test" / f"t{i}.png")


def test_auto_reports_val_on_a_folder_without_test_and_says_so(
    tmp_path: Path, monkeypatch, tiny_search_run: Path
) -> None:
    search = copy_search(tiny_search_run, tmp_path / "search")
    root = tiny_folder(tmp_path / "data")
    fake_training(monkeypatch)
    result = run_compare(
        search, _folder_config(root), tmp_path / "cmp", num_random=1, searched_seeds=1,
        tolerance=0.5, progress=False,
    )  # fmt: skip
    assert {r["split"] for r in result.results} == {"val"} and result.summary["split"] == "val"
    md = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert "reported on val (--report-split auto: no labelled test split" in md
    assert "split 'test' not found" in md and "| val mIoU |" in md


def test_report_split_test_is_refused_where_there_is_none(
    tmp_path: Path, tiny_search_run: Path
) -> None:
    search = copy_search(tiny_search_run, tmp_path / "search")
    root = tiny_folder(tmp_path / "data")
    before = snapshot(search, root)
    with pytest.raises(ValueError, match="split 'test' not found .*--report-split val"):
        run_compare(
            search, _folder_config(root), tmp_path / "cmp", num_random=1, searched_seeds=1,
            tolerance=0.5, report_split="test",
        )  # fmt: skip
    assert snapshot(search, root) == before and not (tmp_path / "cmp").exists()


def test_an_unlabelled_test_split_is_not_reported_on(tmp_path: Path) -> None:
    """Every test label pixel is ignore (public Cityscapes test): auto takes val, test refused."""
    root = tiny_folder(tmp_path / "data")
    _add_test_split(root, 255)
    spec = f"folder:{root}"
    split, note = choose_report_split(spec, "auto", 64)
    assert split == "val" and "the test labels hold no class pixel" in note
    with pytest.raises(ValueError, match="labels hold no class pixel.*--report-split val"):
        choose_report_split(spec, "test", 64)
    assert choose_report_split(spec, "val", 64)[0] == "val"


def test_a_labelled_test_split_is_reported_on(tmp_path: Path) -> None:
    root = tiny_folder(tmp_path / "data")
    _add_test_split(root, 1)
    assert choose_report_split(f"folder:{root}", "auto", 64)[0] == "test"
    assert choose_report_split("synthetic", "auto", 64)[0] == "test"


def _earlier(tmp_path: Path, monkeypatch, search: Path) -> Path:
    """An earlier comparison of ``search``, its retraining faked at mIoU 0.4."""
    fake_training(monkeypatch, miou=0.4)
    earlier = tmp_path / "earlier"
    run_compare(search, compare_config(), earlier, num_random=1, searched_seeds=1, tolerance=0.5,
                progress=False)  # fmt: skip
    return earlier


def _rerun(tmp_path: Path, monkeypatch, search: Path, earlier: Path):
    trained = fake_training(monkeypatch, miou=0.2)
    result = run_compare(
        search, compare_config(), tmp_path / "cmp", num_random=1, searched_seeds=1,
        tolerance=0.5, progress=False, reuse=[earlier],
    )  # fmt: skip
    return trained, {r["name"]: r for r in result.results}


def test_reuse_takes_only_results_whose_digest_holds(
    tmp_path: Path, monkeypatch, capsys, tiny_search_run: Path
) -> None:
    """An edited score, a genotype edited afterwards, a changed checkpoint: retrained."""
    search = copy_search(tiny_search_run, tmp_path / "search")
    earlier = _earlier(tmp_path, monkeypatch, search)
    runs = earlier / "runs"
    edited = json.loads((runs / "searched_seed0" / "result.json").read_text())
    edited["miou"] = 0.99
    (runs / "searched_seed0" / "result.json").write_text(json.dumps(edited))
    (runs / "random0" / "train" / "checkpoints" / "best.pt").write_bytes(b"replaced")
    handmade = load_genotype(runs / "handmade" / "genotype.json")
    save_genotype(Genotype(handmade.cell, (0, 1)), runs / "handmade" / "genotype.json")
    capsys.readouterr()
    before = snapshot(earlier)
    trained, results = _rerun(tmp_path, monkeypatch, search, earlier)
    assert trained == ["searched_seed0", "random0", "handmade"]
    assert results["paper"]["reused_from"] == str(runs / "paper")
    assert results["paper"]["miou"] == 0.4
    assert all(results[n]["miou"] == 0.2 for n in trained)  # never the edited 0.99
    err = capsys.readouterr().err
    assert f"not reusing {runs / 'searched_seed0' / 'result.json'}: its scores do not match" in err
    assert "random0/train/checkpoints/best.pt changed after the result" in err
    assert "handmade/result.json: was computed from another genotype" in err
    assert snapshot(earlier) == before  # --reuse reads, never writes


def test_reuse_passes_over_results_without_a_digest_in_one_line(
    tmp_path: Path, monkeypatch, capsys, tiny_search_run: Path
) -> None:
    search = copy_search(tiny_search_run, tmp_path / "search")
    earlier = _earlier(tmp_path, monkeypatch, search)
    for path in (earlier / "runs").glob("*/result.json"):  # as an older autodeeplab wrote them
        result = json.loads(path.read_text())
        del result["digest"], result["produced_by"]
        path.write_text(json.dumps(result))
    capsys.readouterr()
    trained, _ = _rerun(tmp_path, monkeypatch, search, earlier)
    assert trained == ["searched_seed0", "random0", "handmade", "paper"]
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "no digest" in ln]
    assert len(lines) == 1 and "4 result(s) under" in lines[0] and "not reused" in lines[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"header": "h", "summary": {}, "results": [{"name": "x"}], "size": [1, 1]}',
         "results[0]: 'kind' must be a string, got missing"),
        ('{"header": "h", "summary": {}, "results": [], "size": [1]}', "'size' must be"),
        (b"\xff\xfe", "not a text file"),
    ],
)  # fmt: skip
def test_a_malformed_compare_json_is_one_line_naming_it(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "compare.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ResultError) as exc:
        read_comparison(path)
    assert str(exc.value).startswith(str(path)) and message in str(exc.value)
    assert "\n" not in str(exc.value)
