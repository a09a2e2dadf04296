"""The Python examples of docs/api.md run, in order, as one session (a notebook would)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def python_blocks(page: Path) -> list[str]:
    """The fenced ```python blocks of a Markdown page, in order."""
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_the_api_page_has_its_examples() -> None:
    blocks = python_blocks(REPO / "docs" / "api.md")
    assert len(blocks) >= 4
    joined = "\n".join(blocks)
    for name in ("create_model", "list_models", "load_model", "search(", "train(", "torch.hub"):
        assert name in joined, name


@pytest.mark.slow
def test_the_api_page_runs_as_a_session(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for number, block in enumerate(python_blocks(REPO / "docs" / "api.md"), 1):
        code = block.replace('"path/to/autodeeplab"', repr(str(REPO)))
        exec(compile(code, f"docs/api.md block {number}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs" / "session" / "train" / "checkpoints" / "best.pt").is_file()
    assert tuple(namespace["mask"].shape) == (1, 32, 32)
    assert namespace["hub_net"].num_classes == 19
    assert os.path.isfile(tmp_path / "runs" / "session" / "search" / "genotype.json")
