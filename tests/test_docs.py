"""The documentation stands on its own: README is an index, every link resolves, nothing
points outside the repository, and the configuration page is what the code generates."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from autodeeplab.config import SearchConfig, TrainConfig
from autodeeplab.config.reference import config_reference, field_comments

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_configuration_page_is_what_the_dataclasses_generate() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_reference(), (
        "docs/configuration.md is stale: python -m autodeeplab.config.reference > "
        "docs/configuration.md"
    )


@pytest.mark.parametrize("config", [SearchConfig(), TrainConfig()], ids=["search", "train"])
def test_every_config_key_has_a_comment_that_explains_it(config) -> None:
    for section in dataclasses.fields(config):
        cls = type(getattr(config, section.name))
        comments = field_comments(cls)
        for field in dataclasses.fields(cls):
            assert comments.get(field.name), f"{cls.__name__}.{field.name} has no comment"


def test_readme_is_an_index_of_at_most_200_lines() -> None:
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    for target in _LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.relative_to(REPO)}: {target} does not exist"
        assert REPO in path.parents, f"{page.relative_to(REPO)}: {target} leaves the repository"


def test_no_file_of_the_repository_points_outside_it() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = "../" + "shared"  # written in two parts so this file does not name it
    found = []
    for name in files:
        path = REPO / name
        text_file = path.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh"}
        if text_file and outside in path.read_text(encoding="utf-8", errors="replace"):
            found.append(name)
    assert found == []
