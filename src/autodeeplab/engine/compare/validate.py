"""Everything ``compare`` checks before its first retraining, each failure one line.

- the search run (:func:`check_search`): its config.yaml exists and describes the
  genotype's space; the search finished (its last checkpoint is the end of its last
  configured epoch); genotype.json is what that checkpoint decodes to;
- the split to report on (:func:`choose_report_split`): it exists on disk and has labels;
  ``auto`` takes test when it does, else val, and says why;
- an existing ``--out`` (:func:`check_out`): made by the same search, data, schedule and
  seeds, as its ``compare_manifest.json`` records, and every result in it well formed and
  matching its digest (:func:`check_finished`).

Nothing here writes a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodeeplab.checkpoint import load_checkpoint
from autodeeplab.config import SearchConfig, TrainConfig, config_to_dict, load_config
from autodeeplab.data import DATASETS, build_dataset, parse_spec
from autodeeplab.data.base import MissingSplitError, read_label
from autodeeplab.engine.compare.plan import CompareEntry
from autodeeplab.engine.compare.results import (
    RESULT_NAME,
    ResultError,
    best_checkpoint,
    canonical_config,
    check_genotype_file,
    file_digest,
    genotype_digest,
    mismatch,
    read_json,
    read_result,
    with_seed,
)
from autodeeplab.engine.compare.summary import COMPARE_FILES
from autodeeplab.engine.search.checkpoints import (
    CHECKPOINT_KIND,
    decode_checkpoint,
    find_latest_checkpoint,
)
from autodeeplab.genotype import Genotype, genotype_provenance, load_genotype
from autodeeplab.metrics import IGNORE_INDEX

__all__ = [
    "MANIFEST_NAME",
    "REPORT_SPLITS",
    "SearchRun",
    "check_finished",
    "check_out",
    "check_search",
    "choose_report_split",
    "manifest",
]

MANIFEST_NAME = "compare_manifest.json"
REPORT_SPLITS = ("auto", "test", "val")
#: Label files decoded, at most, to tell a labelled split from an unlabelled one.
LABEL_PROBES = 32
_MANIFEST_FORMAT = "autodeeplab-compare"


@dataclass(frozen=True)
class SearchRun:
    """A finished search, checked: its genotype, config, last checkpoint and their digests."""

    folder: Path
    genotype: Genotype
    config: SearchConfig
    checkpoint: Path
    identity: dict[str, str]


def _best_candidate(folder: Path) -> Genotype | None:
    """The best genotype of ``folder/candidates.json`` (a decode by score), or None."""
    path = folder / "candidates.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        best = next(c for c in data["candidates"] if c["name"] == data["best"])
        return Genotype.from_dict(best["genotype"])
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None  # missing or malformed: the genotype cannot be checked, so it is refused


def _checkpoint_epoch(path: Path) -> int:
    """The epoch a search checkpoint was written after (weights-only load)."""
    state = load_checkpoint(path, CHECKPOINT_KIND, required=("epoch",))
    return int(state["epoch"])


def check_search(folder: Path) -> SearchRun:
    """The finished search in ``folder``, or a one-line ValueError naming the file and fix."""
    genotype_file, config_file = folder / "genotype.json", folder / "config.yaml"
    finish = f"finish it with 'autodeeplab search --resume --out {folder}' and compare then"
    if not genotype_file.is_file():
        raise FileNotFoundError(
            f"{genotype_file}: no genotype; give the --out folder of a finished search"
        )
    genotype = load_genotype(genotype_file)
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file}: missing; compare draws its random genotypes from the search's own "
            "space, so give the --out folder of 'autodeeplab search' with its config.yaml"
        )
    cfg = load_config(config_file)
    m = cfg.model
    levels, ops = len(m.strides), {op for block in genotype.cell for op, _ in block}
    if (genotype.num_layers, genotype.num_blocks) != (m.num_layers, m.num_blocks) or (
        max(genotype.path) >= levels or not ops <= set(m.primitives)
    ):
        raise ValueError(
            f"{genotype_file}: L={genotype.num_layers}, B={genotype.num_blocks}, levels up to "
            f"{max(genotype.path) + 1} do not fit the space of {config_file} (L={m.num_layers}, "
            f"B={m.num_blocks}, {levels} levels); restore the run's own genotype.json and "
            "config.yaml"
        )
    checkpoint = find_latest_checkpoint(folder)
    if checkpoint is None:
        raise FileNotFoundError(
            f"{folder / 'checkpoints'}: no search checkpoint that loads, so the genotype cannot "
            "be checked; give the --out folder of a finished 'autodeeplab search'"
        )
    provenance = genotype_provenance(genotype_file)
    if provenance.get("decode") == "score":
        # Chosen by score (spos, or search.decode=score): the best of candidates.json, which
        # alpha/beta alone cannot reproduce.
        decoded, done = _best_candidate(folder), _checkpoint_epoch(checkpoint)
    else:
        mode = provenance.get("path_decode")
        mode = mode if mode in ("relative", "literal") else None
        decoded, meta = decode_checkpoint(checkpoint, mode)
        done = int(meta["epoch"])
    epochs = cfg.search.epochs
    if "_step_" in checkpoint.name:
        raise ValueError(
            f"{checkpoint}: the search was stopped during an epoch (genotype.json is older); "
            f"{finish}"
        )
    if done < epochs:
        raise ValueError(
            f"{checkpoint}: the search has run {done} of its {epochs} epochs (stopped or "
            f"killed, genotype.json is older); {finish}"
        )
    if done > epochs:
        raise ValueError(
            f"{config_file}: configures {epochs} epochs but {checkpoint.name} is after epoch "
            f"{done} (an edited config, or an extension of the search that did not finish); "
            "restore the run's config.yaml, or finish the extension with 'autodeeplab search "
            f"--resume --out {folder} --set search.epochs=N'"
        )
    if decoded != genotype or provenance.get("epochs", done) != done:
        raise ValueError(
            f"{genotype_file}: is not the genotype its last checkpoint {checkpoint.name} decodes "
            "to (or, chosen by score, the best of candidates.json): edited, or left by an "
            f"earlier run; restore it with 'autodeeplab decode {checkpoint} --out "
            f"{genotype_file}', or rerun the search"
        )
    identity = {
        "genotype": genotype_digest(genotype),
        "config": hashlib.sha256(
            json.dumps(config_to_dict(cfg), sort_keys=True).encode("utf-8")
        ).hexdigest(),
        "checkpoint": file_digest(checkpoint),
    }
    return SearchRun(folder, genotype, cfg, checkpoint, identity)


def _split_problem(spec: str, split: str, crop: int, seed: int) -> str | None:
    """Why ``split`` of ``spec`` cannot be reported on (absent, unlabelled); None if it can."""
    name, _ = parse_spec(spec)
    if split not in DATASETS[name].splits:
        return f"dataset {name!r} has no {split} split"
    if name == "synthetic":
        return None  # generated with its labels
    try:
        dataset = build_dataset(spec, split, size=crop, seed=seed)
    except MissingSplitError as exc:
        return str(exc).split("; ")[0]
    pairs = dataset.pairs  # type: ignore[attr-defined]
    lut = dataset.label_map  # type: ignore[attr-defined]
    step = max(1, len(pairs) // LABEL_PROBES)
    for _, label_path in pairs[::step][:LABEL_PROBES]:
        mapped = lut[read_label(label_path)]
        if ((mapped >= 0) & (mapped != IGNORE_INDEX)).any():
            return None
    return (
        f"{dataset.root}: the {split} labels hold no class pixel (every one checked is "  # type: ignore[attr-defined]
        "ignore: an unlabelled split, such as public Cityscapes test)"
    )


def choose_report_split(spec: str, choice: str, crop: int, seed: int = 0) -> tuple[str, str]:
    """The split to report on and a note for compare.md on why; ValueError if none fits.

    ``choice``: ``test``, ``val`` or ``auto`` (test where it exists and has labels, else val).
    """
    if choice not in REPORT_SPLITS:
        raise ValueError(f"--report-split {choice!r}: use one of {', '.join(REPORT_SPLITS)}")
    if choice == "auto":
        why_not_test = _split_problem(spec, "test", crop, seed)
        if why_not_test is None:
            return "test", "test (--report-split auto: the dataset's test split has labels)"
        why_not_val = _split_problem(spec, "val", crop, seed)
        if why_not_val is not None:
            raise ValueError(f"{why_not_val}; compare reports val where test has no labels")
        return "val", f"val (--report-split auto: no labelled test split, {why_not_test})"
    problem = _split_problem(spec, choice, crop, seed)
    if problem is not None:
        other = "val" if choice == "test" else "test"
        raise ValueError(f"{problem}; report on another split with --report-split {other}")
    return choice, f"{choice} (--report-split {choice})"


def manifest(
    search: SearchRun,
    tcfg: TrainConfig,
    size: tuple[int, int],
    tolerance: float,
    split: str,
    random_center: str = "searched",
) -> dict[str, Any]:
    """What makes an --out's networks comparable: the search, data, schedule and seeds."""
    # The default centre is left out, so that manifests written before the option match.
    center = {} if random_center == "searched" else {"random_center": random_center}
    return {
        "format": _MANIFEST_FORMAT,
        "version": 1,
        "search": {**search.identity, "folder": str(search.folder)},
        "train_config": canonical_config(tcfg),
        "size": list(size),
        "tolerance": tolerance,
        "report_split": split,
        **center,
    }


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    found = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            found.append(f"{prefix}{k} {str(a)[:24]} -> {str(b)[:24]}")
    return found


def check_out(out: Path, want: dict[str, Any], overwrite: bool, inputs: list[Path]) -> bool:
    """Refuse an existing ``out`` made by another comparison; True when ``overwrite`` must
    empty it (of a comparison's files only).

    ``inputs``: the search folder and the --reuse folders, which ``out`` may not be.
    """
    fix = "compare into a new --out, or add --overwrite to start afresh"
    if os.path.lexists(out) and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder; give a folder")
    for path in inputs:  # --overwrite empties only a comparison's files: a parent is safe
        if out.resolve() == path.resolve():
            raise ValueError(f"--out {out}: is the input {path}; give another --out folder")
    path = out / MANIFEST_NAME
    mine = [n for n in ("runs", *COMPARE_FILES, MANIFEST_NAME) if os.path.lexists(out / n)]
    if overwrite:
        return bool(mine)
    if not path.is_file():
        # Results or a comparison's files without a manifest: an older autodeeplab's. Folders
        # of networks still retraining (their locks) are a process starting beside this one.
        done = [n for n in COMPARE_FILES if os.path.lexists(out / n)]
        done += [f"runs/{p.parent.name}/{p.name}" for p in out.glob(f"runs/*/{RESULT_NAME}")]
        if done:
            shown = ", ".join(done[:3]) + (", ..." if len(done) > 3 else "")
            raise ValueError(
                f"--out {out}: holds {shown} but no {MANIFEST_NAME} (an older autodeeplab's "
                f"comparison), so its results cannot be checked; {fix}"
            )
        return False
    old = read_json(path, "a compare manifest", fix)
    if not isinstance(old, dict) or old.get("format") != _MANIFEST_FORMAT:
        raise ResultError(f"{path}: not a compare manifest; {fix}")
    same = {k: v for k, v in want.items() if k not in ("search", "train_config")}
    differs = _differences({k: old.get(k) for k in same}, same)
    old_train = old.get("train_config") if isinstance(old.get("train_config"), dict) else {}
    differs += _differences(old_train, want["train_config"])
    old_search = old.get("search") if isinstance(old.get("search"), dict) else {}
    ids = {k: v for k, v in want["search"].items() if k != "folder"}
    if any(old_search.get(k) != v for k, v in ids.items()):
        differs.insert(0, f"the search (was {old_search.get('folder')})")
    if differs:
        shown = "; ".join(differs[:3]) + ("; ..." if len(differs) > 3 else "")
        raise ValueError(f"{path}: this --out was made with other settings ({shown}); {fix}")
    return False


def check_finished(out: Path, entries: list[CompareEntry], tcfg: TrainConfig) -> None:
    """Refuse a finished network of ``out`` whose result is malformed or fails its digest."""
    for entry in entries:
        folder = out / "runs" / entry.name
        check_genotype_file(entry, folder)
        path = folder / RESULT_NAME
        if not path.is_file():
            continue
        fix = f"remove {folder} to retrain that network, or add --overwrite to start afresh"
        result = read_result(path, fix)
        labels = {k: result[k] for k in ("name", "kind", "seed")}
        if labels != {"name": entry.name, "kind": entry.kind, "seed": entry.seed}:
            raise ResultError(f"{path}: is {labels}, not this comparison's {entry.name}; {fix}")
        cfg = with_seed(entry, tcfg, folder / "genotype.json")
        ckpt = None if result.get("reused_from") else best_checkpoint(folder)
        why = mismatch(result, entry.genotype, cfg, ckpt)
        if why is not None:
            raise ResultError(f"{path}: {why}; {fix}")
