"""No silent garbage (issue 15, class 5).

Duplicate keys in YAML and JSON are errors (the parsers kept the last value without a
word); images whose pixels 8-bit RGB would clip (16-bit, 32-bit, float) are reported by
``data check`` and refused by the loaders; a genotype decoded from alpha and beta that were
never updated is written with a warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autodeeplab.cli import main
from autodeeplab.config import SearchConfig, load_config
from autodeeplab.data.split import load_split
from conftest import TINY_SEARCH_NO_ARCH_ARGV, one_error, tiny_folder

# -- duplicate keys -------------------------------------------------------------------------------

DUPLICATE_YAML = {
    "same_section_key": ("search:\n  epochs: 3\n  lr: 0.1\n  epochs: 30\n", "'epochs' at line 4"),
    "same_section": ("search:\n  epochs: 3\nsearch:\n  lr: 0.1\n", "'search' at line 3"),
    "flow_mapping": ("model: {num_layers: 2, num_layers: 3}\n", "'num_layers' at line 1"),
    "nested_list": ("model:\n  strides: [4, 8]\n  strides: [4]\n", "'strides' at line 3"),
}


@pytest.mark.parametrize("command", ["search", "train", "run"])
@pytest.mark.parametrize("name", sorted(DUPLICATE_YAML))
def test_duplicate_keys_in_a_config_are_errors(
    tmp_path: Path, capsys, name: str, command: str
) -> None:
    text, where = DUPLICATE_YAML[name]
    f = tmp_path / "c.yaml"
    f.write_text(text)
    out = tmp_path / "out"
    flag = {"search": "--config", "train": "--config", "run": "--search-config"}[command]
    line = one_error(capsys, [command, flag, str(f), "--out", str(out)])
    assert f"{f}: not valid YAML (duplicate key {where}; keep one)" in line, line
    assert not out.exists()


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("base: &b\n  epochs: 3\n  lr: 0.5\nsearch:\n  <<: *b\n  epochs: 4\n")
    with pytest.raises(ValueError, match="unknown key 'base'"):  # parsed: the merge is fine
        load_config(f, base=SearchConfig())


GENOTYPE = {"cell": [[["skip_connect", 0], ["sep_conv_3x3", 1]]], "path": [0, 1]}
DUPLICATE_JSON = {
    "path": '{"cell": [[["skip_connect", 0], ["sep_conv_3x3", 1]]], "path": [0], "path": [0, 1]}',
    "cell": '{"cell": [], "path": [0], "cell": [[["skip_connect", 0], ["skip_connect", 1]]]}',
}


@pytest.mark.parametrize("key", sorted(DUPLICATE_JSON))
def test_duplicate_keys_in_a_genotype_are_errors(tmp_path: Path, capsys, key: str) -> None:
    f = tmp_path / "g.json"
    f.write_text(DUPLICATE_JSON[key])
    line = one_error(capsys, ["info", str(f)])
    assert f"{f}: duplicate key '{key}' in a JSON object; keep one" in line
    out = tmp_path / "t"
    line = one_error(capsys, ["train", "--genotype", str(f), "--out", str(out), "--no-progress"])
    assert f"{f}: duplicate key '{key}'" in line and not out.exists()


def test_duplicate_keys_in_classes_json_and_split_json(tmp_path: Path, capsys) -> None:
    root = tiny_folder(tmp_path / "data")
    (root / "classes.json").write_text('{"classes": ["a", "b"], "classes": ["a", "b", "c"]}')
    line = one_error(capsys, ["data", "check", f"folder:{root}"])
    assert f"{root / 'classes.json'}: cannot read it as JSON (duplicate key 'classes'" in line
    split = tmp_path / "split.json"
    split.write_text(
        '{"format": "autodeeplab-split", "version": 1, "seed": 1, "seed": 2, '
        '"num_samples": 2, "train_a": [0], "train_b": [1]}'
    )
    with pytest.raises(ValueError, match=r"split.json: duplicate key 'seed' in a JSON object"):
        load_split(split)


# -- image modes the pipeline would clip -------------------------------------------------------


def _wide(mode: str) -> Image.Image:
    """A 40x44 image of ``mode`` whose values 8-bit RGB cannot hold."""
    if mode == "I;16":
        return Image.fromarray(np.full((40, 44), 40000, np.uint16))
    if mode == "I":
        return Image.fromarray(np.full((40, 44), 70000, np.int32))
    return Image.fromarray(np.full((40, 44), 0.5, np.float32))  # F: a 0-1 float image


WIDE = {"I;16": ("png", "16-bit"), "I": ("tiff", "32-bit integer"), "F": ("tiff", "32-bit float")}


@pytest.mark.parametrize("mode", sorted(WIDE))
def test_wide_image_modes_are_reported_and_refused(tmp_path: Path, capsys, mode: str) -> None:
    suffix, kind = WIDE[mode]
    root = tiny_folder(tmp_path / "data")
    bad = root / "images" / "train" / f"train1.{suffix}"
    (root / "images" / "train" / "train1.png").unlink()
    _wide(mode).save(bad)
    assert Image.open(bad).mode == mode  # the file really holds that mode
    assert main(["data", "check", f"folder:{root}"]) == 1
    report = capsys.readouterr().out
    problems = [ln for ln in report.splitlines() if "which 8-bit RGB would clip" in ln]
    assert len(problems) == 1 and str(bad) in problems[0] and kind in problems[0], report
    out = tmp_path / "s"
    argv = ["search", "--data", f"folder:{root}", "--out", str(out), *TINY_SEARCH_NO_ARCH_ARGV]
    line = one_error(capsys, [*argv, "--set", "arch_start_epoch=0"])  # both halves are read
    assert f"{bad}: image has mode {mode}" in line and not out.exists()
    from autodeeplab.engine.infer.predict import read_image_file

    with pytest.raises(ValueError, match=f"image has mode {mode}"):
        read_image_file(bad)


# -- a genotype from untouched alpha and beta ----------------------------------------------------


@pytest.mark.slow
def test_a_search_without_architecture_steps_warns(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s"
    assert (
        main(
            ["search", "--out", str(out), *TINY_SEARCH_NO_ARCH_ARGV, "--set", "arch_start_epoch=1"]
        )
        == 0
    )
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if "alpha and beta were never updated" in ln]
    assert len(warnings) == 1 and str(out / "genotype.json") in warnings[0]
    ckpt = out / "checkpoints" / "epoch_0001.pt"
    assert main(["decode", str(ckpt)]) == 0
    assert "alpha and beta were never updated" in capsys.readouterr().err
    searched = tmp_path / "searched"
    assert (
        main(
            [
                "search",
                "--out",
                str(searched),
                *TINY_SEARCH_NO_ARCH_ARGV,
                "--set",
                "arch_start_epoch=0",
            ]
        )
        == 0
    )
    assert "never updated" not in capsys.readouterr().err
    assert main(["decode", str(searched / "checkpoints" / "epoch_0001.pt")]) == 0
    assert "never updated" not in capsys.readouterr().err
