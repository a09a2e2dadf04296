"""``autodeeplab compare``: bad input is refused in one line, before anything is written."""

from __future__ import annotations

import pytest

from autodeeplab.cli import main
from autodeeplab.genotype import PAPER_GENOTYPE, save_genotype


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "no genotype; give the --out folder of a finished search"),
        (["--set", "train.iters=0"], "key 'train.iters': 0 is out of range"),
        (["--data", "nosuch"], "unknown dataset 'nosuch'"),
        (["--random", "-1"], "--random must be >= 0"),
        (["--tolerance", "0"], "give a fraction, e.g. 0.1"),
        (["--set", "train.amp=fp16"], "train.amp=fp16 needs CUDA"),
        (["--reuse", "nosuch"], "nosuch: no runs/ folder; --reuse takes the --out folder"),
        (["--recal-batches", "0"], "--recal-batches 0: give 1 or more batches"),
    ],
)
def test_compare_refuses_bad_input_before_any_write(tmp_path, capsys, extra, message) -> None:
    search = tmp_path / "search"
    search.mkdir()
    if extra:  # a finished search, so that the flag is what is wrong
        save_genotype(PAPER_GENOTYPE, search / "genotype.json")
    out = tmp_path / "cmp"
    assert main(["compare", str(search), "--out", str(out), *extra]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0], errors
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "seed_noise", "scored"),
    [([], False, True), (["--seed-noise", "--no-score"], True, False)],
)
def test_compare_passes_its_ranking_switches(
    tmp_path, monkeypatch, extra, seed_noise, scored
) -> None:
    """20 random genotypes by default; --seed-noise and --no-score reach run_compare."""
    import autodeeplab.engine.compare.compare as compare

    search = tmp_path / "search"
    search.mkdir()
    save_genotype(PAPER_GENOTYPE, search / "genotype.json")
    seen = {}

    def fake_run_compare(search_run, cfg, out, **kwargs):
        seen.update(kwargs)
        out.mkdir()
        (out / "compare.md").write_text("table\n", encoding="utf-8")
        return compare.CompareResult(out, [], {})

    monkeypatch.setattr(compare, "run_compare", fake_run_compare)
    out = tmp_path / "cmp"
    assert main(["compare", str(search), "--out", str(out), *extra]) == 0
    assert seen["num_random"] == 20 and seen["seed_noise"] is seed_noise
    assert (seen["scorer"] is not None) is scored
