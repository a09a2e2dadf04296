"""The info subcommand (the export subcommand is tested in tests/test_export.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autodeeplab.cli import main
from autodeeplab.genotype import PAPER_GENOTYPE, save_genotype


@pytest.mark.slow
def test_info_matches_the_parameter_oracle(capsys) -> None:
    assert main(["info", "auto-deeplab-s", "--json", "--size", "65x65"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 10_147_427  # paper Table 2: 10.15M, 19 classes
    assert info["strides"] == [4, 4, 4, 8, 16, 8, 16, 16, 32, 32, 16, 8]
    assert info["output_stride"] == 8 and info["size"] == [65, 65]
    assert info["multiply_adds"] > 0
    assert info["cell"][0] == [["dil_conv_5x5", 0], ["sep_conv_3x3", 1]]
    assert main(["info", "auto-deeplab-m", "--size", "33x33"]) == 0
    table = capsys.readouterr().out
    assert "21,622,451" in table and "cell block 4" in table


@pytest.mark.slow
def test_info_of_a_genotype_file(tmp_path: Path, capsys) -> None:
    save_genotype(PAPER_GENOTYPE, tmp_path / "g.json")
    argv = ["info", str(tmp_path / "g.json"), "--json", "--classes", "19", "--size", "33",
            "--filter-multiplier", "20"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == 10_147_427
