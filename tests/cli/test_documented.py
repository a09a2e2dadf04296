"""Every command, flag and config key that README.md and the docs pages document is accepted
by the CLI (the experiment journal, a dated record, and the generated configuration page
are left out).

Parse-only: each subcommand's ``--help`` runs, every flag a README mention of a command
names is among that command's options, every concrete command line in a README code block
parses, and every ``--set KEY=VALUE`` README shows resolves to a config key. Nothing runs.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from autodeeplab.cli import build_parser, main
from autodeeplab.config import SearchConfig, TrainConfig, load_config
from autodeeplab.engine.pipeline import split_overrides

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = [README] + sorted(
    p for p in (REPO / "docs").glob("*.md") if p.name not in ("configuration.md", "design.md")
)
TEXT = "\n\n".join(p.read_text(encoding="utf-8") for p in PAGES)
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# An option as argparse's help lists it: "  --out OUT", "  -h, --help", "  --flip".
_HELP_OPTION = re.compile(r"^ {2}(?:-\w, )?(--[\w-]+)", re.MULTILINE)
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name (its one subparsers action)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


COMMANDS = _subparsers(build_parser())
#: ``data check`` and the other two-word commands, as they are typed.
ALL_COMMANDS = [
    (name, *((action,) if action else ()))
    for name, p in COMMANDS.items()
    for action in (list(_subparsers(p)) or [None])
]


def _code_lines() -> list[str]:
    """The lines of README's code blocks, ``\\`` continuations joined, comments dropped."""
    lines = []
    for block in _FENCE.findall(TEXT):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _inline_code() -> list[str]:
    """README's inline code spans (outside code blocks), whitespace folded, ``\\|`` -> ``|``."""
    prose = _FENCE.sub("", TEXT)
    return [" ".join(s.replace("\\|", "|").split()) for s in re.findall(r"`([^`]+)`", prose)]


def _mentions() -> list[tuple[tuple[str, ...], str]]:
    """(command words, what follows them) for every ``autodeeplab COMMAND ...`` in README."""
    found = []
    names = "|".join(sorted(COMMANDS, key=len, reverse=True))
    for text in [*_code_lines(), *_inline_code()]:
        for m in re.finditer(rf"\bautodeeplab ({names})\b", text):
            words, rest = (m.group(1),), text[m.end() :]
            sub = _subparsers(COMMANDS[m.group(1)])
            first = rest.split()[0] if rest.split() else ""
            if first in sub:
                words, rest = (*words, first), rest.split(first, 1)[1]
            found.append((words, rest))
    return found


def _parser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = COMMANDS[words[0]]
    return _subparsers(parser)[words[1]] if len(words) > 1 else parser


def _help(words: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*words, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


MENTIONS = _mentions()
FLAGS = sorted({(words, flag) for words, rest in MENTIONS for flag in _FLAG.findall(rest)})
CONCRETE = [
    line.split("autodeeplab ", 1)[1]
    for line in _code_lines()
    if re.search(r"(^|-m |--no-python )autodeeplab [a-z]", line)
]


def test_readme_documents_every_command_and_its_flags() -> None:
    """The parse below is not vacuous: README names every command, with flags."""
    assert {words for words, _ in MENTIONS} >= set(ALL_COMMANDS)
    assert len(FLAGS) >= 40 and len(CONCRETE) >= 8


@pytest.mark.parametrize("words", ALL_COMMANDS, ids=" ".join)
def test_every_subcommand_has_help(words: tuple[str, ...], capsys) -> None:
    text = _help(words, capsys)
    assert text.startswith(f"usage: autodeeplab {' '.join(words)} ")
    assert "--help" in _HELP_OPTION.findall(text)


@pytest.mark.parametrize(
    ("words", "flag"), FLAGS, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x
)
def test_every_flag_readme_mentions_is_an_option_of_its_command(
    words: tuple[str, ...], flag: str, capsys
) -> None:
    assert flag in _HELP_OPTION.findall(_help(words, capsys)), f"autodeeplab {' '.join(words)}"


def _check_overrides(command: str, overrides: list[str]) -> None:
    """Resolve ``--set`` values as ``command`` would, without reading any file."""
    if command == "run":
        routed = split_overrides(overrides)
        load_config(None, routed["search"], base=SearchConfig())
        load_config(None, routed["train"], base=TrainConfig())
    elif command == "search":
        load_config(None, overrides, base=SearchConfig())
    elif command in ("train", "compare"):
        load_config(None, overrides, base=TrainConfig())


@pytest.mark.parametrize("line", CONCRETE, ids=lambda line: line[:50])
def test_every_command_line_in_readme_parses(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line))
    _check_overrides(args.command, getattr(args, "set", None) or [])


def _documented_overrides() -> list[str]:
    """Every ``--set KEY=VALUE`` README shows, one per value of ``a|b`` alternatives."""
    text = " ".join(" ".join(c.split()) for c in [*_code_lines(), *_inline_code()])
    text += " " + " ".join(TEXT.split())  # code comments and prose mention keys too
    found = set()
    for item in re.findall(r'--set\s+"?([^\s"`]+)', text):
        key, _, value = item.rstrip(",").partition("=")
        if (
            not value
            or not re.fullmatch(r"[a-z_.]+", key)
            or {"key", "section"} & {*key.split(".")}
        ):
            continue  # a placeholder: key=value, section.key=value, search.KEY=V
        found.update(f"{key}={v}" for v in value.split("|"))
    return sorted(found)


@pytest.mark.parametrize("override", _documented_overrides())
def test_every_config_key_readme_sets_resolves(override: str) -> None:
    errors = []
    for command in ("search", "train", "run"):
        try:
            _check_overrides(command, [override])
            return
        except ValueError as exc:
            errors.append(f"{command}: {exc}")
    pytest.fail("; ".join(errors))
