"""The search report: figures and Markdown from search_log.jsonl (fake and real runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autodeeplab.cli import main
from autodeeplab.config import load_config, save_config
from autodeeplab.engine.search.loop import run_search
from autodeeplab.engine.search.report import read_search_log, render_search_report
from autodeeplab.genotype import Genotype, load_genotype
from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.cell import num_edges
from autodeeplab.space.decode import decode
from autodeeplab.space.network import beta_probabilities

#: Figures and the smallest size (width, height) each must have to be legible.
FIGURES = {
    "alpha.png": (500, 300),
    "beta.png": (400, 300),
    "path.png": (500, 250),
    "curves.png": (800, 300),
    "final_path.png": (1000, 400),
    "final_cell.png": (1000, 500),
}


def _fake_records(epochs: int, num_layers: int = 4, num_blocks: int = 2, warmup: int = 1):
    """Epoch records as run_search writes them: alpha/beta drift after the warm-up."""
    rng = np.random.default_rng(0)
    alpha = np.zeros((num_edges(num_blocks), len(PRIMITIVES)))
    beta = np.zeros((num_layers, 4, 3))
    records = []
    for epoch in range(1, epochs + 1):
        if epoch > warmup:
            alpha += rng.normal(0, 1.0, alpha.shape)
            beta += rng.normal(0, 1.0, beta.shape)
        alpha_w = torch.softmax(torch.tensor(alpha), -1)
        beta_w = beta_probabilities(torch.tensor(beta), 4)
        genotype = decode(alpha_w, beta_w, PRIMITIVES, num_blocks)
        records.append(
            {
                "epoch": epoch,
                "step": 4 * epoch,
                "train_loss": 1.5 / epoch,
                "arch_loss": None if epoch <= warmup else 1.6 / epoch,
                "val_loss": 1.7 / epoch,
                "val_miou": 0.2 * epoch,
                "val_pixel_acc": 0.5 + 0.1 * epoch,
                "lr": 0.025 / epoch,
                "arch_updates": epoch > warmup,
                "seconds": 1.0,
                "alpha": alpha_w.tolist(),
                "beta": beta_w.tolist(),
                "genotype": genotype.to_dict(),
            }
        )
    return records


def _write_log(run: Path, records: list[dict], epochs_configured: int | None = None) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    (run / "search_log.jsonl").write_text(text, encoding="utf-8")
    if epochs_configured is not None:
        cfg = load_config(
            None,
            [
                "model.num_layers=4",
                "model.num_blocks=2",
                "model.filter_multiplier=2",
                f"search.epochs={epochs_configured}",
            ],
        )
        save_config(cfg, run / "config.yaml")
    return run / "search_log.jsonl"


def _check_report(run: Path, genotype: Genotype) -> str:
    """The report exists, shows every figure, and states ``genotype``; returns its text."""
    report = run / "report_search.md"
    text = report.read_text(encoding="utf-8")
    html = (run / "report_search.html").read_text(encoding="utf-8")
    for name, (min_w, min_h) in FIGURES.items():
        png = run / "report_search" / name
        width, height = Image.open(png).size
        assert width >= min_w and height >= min_h, (name, width, height)
        assert width <= 4000 and height <= 3000, (name, width, height)
        assert f"](report_search/{name})" in text
        assert f'src="report_search/{name}"' in html
    assert genotype.to_json().strip() in text
    assert f"Path (level per layer): `{list(genotype.path)}`" in text
    return text


def test_report_from_a_fake_log(tmp_path: Path) -> None:
    records = _fake_records(3)
    _write_log(tmp_path, records, epochs_configured=3)
    assert render_search_report(tmp_path) == tmp_path / "report_search.md"

    final = Genotype.from_dict(records[-1]["genotype"])
    text = _check_report(tmp_path, final)
    assert "## Final genotype (epoch 3)" in text
    space = "(L=4, B=2, F=2, strides=4-8-16-32, crop=64, data=synthetic)"
    assert f"{space}: 3 epoch(s) logged of 3 configured." in text
    # One table row per block, numbered from 1 as in the cell figure.
    op, inp = final.cell[0][0]
    assert f"| 1 | {op}({['H^{l-2}', 'H^{l-1}'][inp]}) |" in text
    # The epoch table: warm-up epoch without arch loss, the mIoU in %, the path as strides.
    assert "| 1 | 1.5000 | - | 1.7000 | 20.00 | 0.02500 |" in text
    assert (
        f"| 3 | 0.5000 | 0.5333 | 0.5667 | 60.00 | 0.00833 | {' '.join(map(str, final.strides))}"
        in text
    )


def test_report_counts_architecture_changes(tmp_path: Path) -> None:
    first = Genotype(
        cell=(
            (("sep_conv_3x3", 0), ("skip_connect", 1)),
            (("max_pool_3x3", 2), ("dil_conv_3x3", 0)),
        ),
        path=(0, 1, 1, 0),
    )
    # The same architecture: only the order of block 2's branches differs.
    same = Genotype(cell=(first.cell[0], first.cell[1][::-1]), path=first.path)
    # One block and one layer differ.
    changed = Genotype(
        cell=(first.cell[0], (("avg_pool_3x3", 2), ("dil_conv_3x3", 0))), path=(0, 1, 1, 1)
    )
    base = _fake_records(1)[0]
    records = [
        dict(base, epoch=e, genotype=g.to_dict()) for e, g in enumerate((first, same, changed), 1)
    ]
    _write_log(tmp_path, records)
    text = render_search_report(tmp_path).read_text(encoding="utf-8")
    assert "The path changed at 1 of 2 epoch transitions, last at epoch 3 (still changing)." in text
    assert "The cell changed at 1 of 2 epoch transitions, last at epoch 3 (still changing)." in text
    assert "| 4 8 8 4 | 0 | 0 |" in text and "| 4 8 8 8 | 1 | 1 |" in text


@pytest.mark.slow
def test_report_from_a_real_tiny_search(tmp_path: Path, search_config) -> None:
    result = run_search(search_config(), tmp_path, progress=False)
    render_search_report(tmp_path)
    text = _check_report(tmp_path, load_genotype(tmp_path / "genotype.json"))
    assert result.genotype == load_genotype(tmp_path / "genotype.json")
    assert "## Final genotype (epoch 2)" in text and "2 epoch(s) logged of 2 configured" in text
    # What the search learnt: the diagnostics the log records, and their figure.
    records, _ = read_search_log(tmp_path / "search_log.jsonl")
    assert "## What did the search learn?" in text
    assert f"margin {records[-1]['path_margin']:.3f} nats" in text
    assert Image.open(tmp_path / "report_search" / "dynamics.png").size[0] >= 1000
    assert ("**Warning:**" in text) == (records[-1]["path_margin"] < 0.5)


def test_report_says_when_the_margin_is_too_small(tmp_path: Path) -> None:
    records = _fake_records(3)
    for r in records:
        r.update(path_margin=0.01, param_free_share=0.5, path_decode="relative", arch_lr=0.03)
        r.update(alpha_entropy_mean=2.0, beta_entropy_mean=1.0, genotype_changed=True)
    records[-1]["warning"] = "the decoded path beats its runner-up by only 0.010 nats"
    _write_log(tmp_path, records)
    text = render_search_report(tmp_path).read_text(encoding="utf-8")
    assert "**Warning:** the decoded path beats its runner-up by only 0.010 nats." in text
    assert "at lr 0.03; path decode `relative`, margin 0.010 nats" in text
    assert "50% of the cell's branches parameter-free" in text
    assert (tmp_path / "report_search" / "dynamics.png").stat().st_size > 10_000


def test_one_epoch_and_torn_last_line(tmp_path: Path) -> None:
    log = _write_log(tmp_path, _fake_records(1))
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"epoch": 2, "alpha": [[0.1, 0.2')  # killed mid-write
    records, skipped = read_search_log(log)
    assert [r["epoch"] for r in records] == [1] and skipped == 1
    text = render_search_report(tmp_path).read_text(encoding="utf-8")
    assert "1 epoch(s) logged. 1 unreadable line(s) of search_log.jsonl skipped" in text
    assert "## Final genotype (epoch 1)" in text  # no config.yaml: nothing says otherwise
    assert "Only epoch 1 is logged so far." in text
    _check_report(tmp_path, Genotype.from_dict(records[0]["genotype"]))


@pytest.mark.slow
def test_unfinished_search_and_resumed_epochs_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _fake_records(3)
    rewritten = dict(records[1], val_miou=0.99)  # a resumed run logged epoch 2 again
    _write_log(tmp_path, [*records[:2], rewritten, records[2]], epochs_configured=5)
    loaded, skipped = read_search_log(tmp_path / "search_log.jsonl")
    assert [r["epoch"] for r in loaded] == [1, 2, 3] and skipped == 0
    assert loaded[1]["val_miou"] == 0.99

    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report_search.md")
    text = (tmp_path / "report_search.md").read_text(encoding="utf-8")
    assert "## Latest genotype (epoch 3 of 5; the search has not finished)" in text
    assert "| 2 | 0.7500 | 0.8000 | 0.8500 | 99.00 |" in text


def test_missing_or_empty_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match=r"search_log\.jsonl: search log not found; run "):
        render_search_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "autodeeplab search --out" in err[0]

    (tmp_path / "search_log.jsonl").write_text('{"epoch": 1, "alph', encoding="utf-8")
    with pytest.raises(ValueError, match="holds no complete epoch record yet"):
        render_search_report(tmp_path)


def test_margin_warning_gives_the_fix_that_applies() -> None:
    from autodeeplab.engine.search.epoch import margin_warning

    assert margin_warning(0.6, 0.5) is None
    low = margin_warning(0.01, 0.5, arch_lr=0.01)
    assert low is not None and "raise search.arch_lr" in low
    # At auto's cap, raising the lr is no longer the advice: a longer search or larger batches.
    capped = margin_warning(0.01, 0.5, arch_lr=0.03)
    assert capped is not None and "raise search.arch_lr" not in capped
    assert "--epochs" in capped and "--batch-size" in capped and "already 0.03" in capped


@pytest.mark.parametrize("lr", [0.003, 0.01, 0.029])
def test_margin_warning_never_advises_the_setting_the_run_already_uses(lr) -> None:
    from autodeeplab.engine.search.epoch import margin_warning

    auto = margin_warning(0.017, 0.5, arch_lr=lr, setting="auto", budget=3.0)
    assert auto is not None and "use search.arch_lr=auto" not in auto
    assert "raise search.arch_lr " not in auto
    assert "raise search.arch_logit_budget (now 3)" in auto
    fixed = margin_warning(0.017, 0.5, arch_lr=lr, setting=lr, budget=3.0)
    assert fixed is not None and "raise search.arch_lr (or use search.arch_lr=auto)" in fixed
    assert "arch_logit_budget" not in fixed


def test_margin_warning_under_decode_score_does_not_blame_the_chosen_genotype() -> None:
    """With search.decode=score the path of genotype.json is not beta's: the warning says that
    a small margin concerns only the argmax/Viterbi candidate, and advises nothing."""
    from autodeeplab.engine.search.epoch import margin_warning

    assert margin_warning(0.6, 0.5, decode="score") is None
    text = margin_warning(0.3, 0.5, arch_lr=0.01, setting="auto", budget=3.0, decode="score")
    assert text is not None and text.startswith("beta's argmax/Viterbi path beats its runner-up")
    assert "search.decode=score" in text and "raise" not in text and "--epochs" not in text


def test_report_of_a_score_decoded_search_shows_genotype_json(tmp_path: Path) -> None:
    """Under search.decode=score the final genotype is genotype.json's (what a retraining
    builds), not the last epoch's argmax/Viterbi one, and the report says how it was chosen;
    a run that has not finished keeps the log's genotype (its genotype.json may be stale)."""
    from autodeeplab.genotype import save_genotype

    records = _fake_records(3)
    argmax = Genotype.from_dict(records[-1]["genotype"])
    chosen = Genotype.from_dict(records[0]["genotype"])  # the warm-up's: all-uniform alpha
    assert chosen != argmax
    summary = {"decode": "score", "candidates": 20, "val_loss": 1.25, "argmax_val_loss": 1.5,
               "argmax_rank": 3}  # fmt: skip
    _write_log(tmp_path, records, epochs_configured=3)
    save_genotype(chosen, tmp_path / "genotype.json", search=summary)
    render_search_report(tmp_path)
    text = _check_report(tmp_path, chosen)
    assert argmax.to_json().strip() not in text
    assert (
        "Chosen by score (`search.decode=score`): the lowest val cross-entropy (1.250) of 20"
        in text
    )
    assert "scored 1.500 and ranked 3" in text
    # Not finished (4 epochs configured, 3 logged): the log's genotype, no score note.
    _write_log(tmp_path, records, epochs_configured=4)
    render_search_report(tmp_path)
    text = _check_report(tmp_path, argmax)
    assert "Chosen by score" not in text
    # An argmax decode's genotype.json changes nothing.
    _write_log(tmp_path, records, epochs_configured=3)
    save_genotype(chosen, tmp_path / "genotype.json", search={"path_decode": "relative"})
    render_search_report(tmp_path)
    assert "Chosen by score" not in _check_report(tmp_path, argmax)
