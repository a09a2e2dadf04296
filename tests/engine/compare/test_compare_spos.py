"""``compare`` takes a search whose genotype was chosen by score (spos), and checks it
against candidates.json's best, not against an alpha/beta decode it does not have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autodeeplab.cli import main
from autodeeplab.engine.compare.validate import check_search
from autodeeplab.genotype import Genotype, load_genotype, save_genotype
from conftest import TINY_SEARCH_ARGV


@pytest.mark.slow
def test_a_spos_search_passes_the_check_and_an_edited_genotype_does_not(tmp_path: Path) -> None:
    run = tmp_path / "spos"
    argv = ["search", "--out", str(run), *TINY_SEARCH_ARGV, "--set", "search.strategy=spos",
            "--set", "search.decode_candidates=3"]  # fmt: skip
    assert main(argv) == 0
    found = check_search(run)
    best = json.loads((run / "candidates.json").read_text())["best"]
    assert found.genotype == load_genotype(run / "genotype.json")
    assert best.startswith("c")
    cell = [list(block) for block in found.genotype.cell]
    (op, inp), other = cell[0]
    cell[0] = [("skip_connect" if op != "skip_connect" else "max_pool_3x3", inp), other]
    edited = Genotype(cell=tuple(tuple(b) for b in cell), path=found.genotype.path)
    text = json.loads((run / "genotype.json").read_text())
    save_genotype(edited, run / "genotype.json")
    data = json.loads((run / "genotype.json").read_text())
    data["search"] = text["search"]  # the provenance stays: only the network was edited
    (run / "genotype.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="best of candidates.json"):
        check_search(run)
