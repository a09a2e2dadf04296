"""One network's run folder and ``result.json``: its fields, the digest of what produced it.

Each network of a comparison retrains in ``out/runs/NAME``: its genotype.json, the
training run in ``train/`` (its best checkpoint is what the scores come from) and, once
done, ``result.json``.

A result is trusted only as far as it can be checked. Each records ``produced_by``, the
sha256 of the canonical genotype JSON, of the canonical training config (seed included,
the genotype file's place left out) and of the checkpoint its scores were computed from,
and ``digest``, the sha256 over those and every score field. Reading one back checks its
fields and types (a malformed file is one line naming it) and :func:`mismatch` says why a
result does not hold what it claims: edited scores, another genotype or config, a changed
checkpoint, or no digest at all (written before results had one).

The name, kind and Multi-Adds are this comparison's labels, not what the retraining
computed (a network reused from another comparison keeps its scores under new labels):
they are checked against the plan, not digested.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from autodeeplab.checkpoint import atomic_write
from autodeeplab.config import TrainConfig, config_to_dict
from autodeeplab.engine.compare.plan import CompareEntry
from autodeeplab.engine.train.model import with_genotype
from autodeeplab.files import DuplicateKeyError, reject_duplicate_keys
from autodeeplab.genotype import Genotype, GenotypeError, load_genotype, save_genotype

__all__ = [
    "RESULT_NAME",
    "best_checkpoint",
    "check_genotype_file",
    "entry_config",
    "ResultError",
    "canonical_config",
    "check_result",
    "config_digest",
    "file_digest",
    "genotype_digest",
    "mismatch",
    "placeless",
    "with_seed",
    "read_json",
    "read_result",
    "seal",
    "write_json",
]

RESULT_NAME = "result.json"

# Every result's fields and their types (a bool is no int here; an int score is a float).
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "kind": str,
    "seed": int,
    "genotype": dict,
    "madds": int,
    "parameters": int,
    "val_miou": (int, float),
    "best_iteration": int,
    "miou": (int, float),
    "split": str,
    "seconds": (int, float),
}
# What the retraining computed: the fields the digest covers, with produced_by.
_DIGESTED = ("seed", "genotype", "parameters", "val_miou", "best_iteration", "miou", "split")
_PRODUCERS = ("genotype", "config", "checkpoint")
_KINDS = ("searched", "random", "handmade", "paper", "seed_noise")
_SPLITS = ("test", "val")


class ResultError(ValueError):
    """A result or comparison file is malformed; the message names the file and the fix."""


def best_checkpoint(folder: Path) -> Path:
    """The checkpoint a network's scores come from: its retraining's best on val."""
    return folder / "train" / "checkpoints" / "best.pt"


def check_genotype_file(entry: CompareEntry, folder: Path) -> None:
    """Refuse a network folder whose genotype.json holds another genotype than ``entry``'s."""
    path = folder / "genotype.json"
    if path.is_file() and load_genotype(path) != entry.genotype:
        raise ValueError(
            f"{path}: holds another genotype than this comparison's {entry.name} (edited, or "
            "another comparison's); compare into a new --out, remove that folder, or add "
            "--overwrite to start afresh"
        )


def entry_config(entry: CompareEntry, tcfg: TrainConfig, folder: Path) -> TrainConfig:
    """``entry``'s retraining config: its genotype, written to ``folder``, and its seed."""
    check_genotype_file(entry, folder)
    genotype_path = folder / "genotype.json"
    if not genotype_path.is_file():
        save_genotype(entry.genotype, genotype_path)
    return with_seed(entry, tcfg, genotype_path)


def with_seed(entry: CompareEntry, tcfg: TrainConfig, genotype_path: Path) -> TrainConfig:
    """``tcfg`` with ``entry``'s seed and its genotype at ``genotype_path`` (nothing written)."""
    cfg = with_genotype(tcfg, genotype_path)
    return replace(cfg, train=replace(cfg.train, seed=entry.seed))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def genotype_digest(genotype: Genotype) -> str:
    """sha256 of the canonical JSON of ``genotype`` (its cell and path)."""
    return _sha256(_canonical(genotype.to_dict()))


def placeless(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` without where its genotype file lives (the genotype is digested apart)."""
    return replace(cfg, model=replace(cfg.model, genotype=None))


def canonical_config(cfg: TrainConfig) -> dict[str, Any]:
    """The training config as plain JSON data, its genotype's place left out."""
    data: dict[str, Any] = json.loads(json.dumps(config_to_dict(placeless(cfg))))
    return data


def config_digest(cfg: TrainConfig) -> str:
    """sha256 of the canonical training config (seed included, genotype place left out)."""
    return _sha256(_canonical(canonical_config(cfg)))


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _result_digest(result: dict[str, Any]) -> str:
    covered = {k: result.get(k) for k in (*_DIGESTED, f"{result.get('split')}_miou")}
    return _sha256(_canonical({"produced_by": result.get("produced_by"), **covered}))


def seal(result: dict[str, Any], genotype: Genotype, cfg: TrainConfig, checkpoint: Path) -> None:
    """Add ``produced_by`` (genotype, config and ``checkpoint`` digests) and ``digest``."""
    result["produced_by"] = {
        "genotype": genotype_digest(genotype),
        "config": config_digest(cfg),
        "checkpoint": file_digest(checkpoint),
    }
    result["digest"] = _result_digest(result)


def mismatch(
    result: dict[str, Any], genotype: Genotype, cfg: TrainConfig, checkpoint: Path | None
) -> str | None:
    """Why ``result`` is not what ``genotype``, ``cfg`` and ``checkpoint`` produced; None if it is.

    ``checkpoint`` None: not checked (a result taken from another comparison was checked
    against its checkpoint there).
    """
    produced = result.get("produced_by")
    if "digest" not in result or not isinstance(produced, dict):
        return "has no digest (written by an older autodeeplab), so it cannot be checked"
    if not isinstance(result["digest"], str) or result["digest"] != _result_digest(result):
        return "its scores do not match its digest (edited after it was written?)"
    if produced.get("genotype") != genotype_digest(genotype):
        return "was computed from another genotype than this network's"
    if produced.get("config") != config_digest(cfg):
        return "was computed with another training config than this comparison's"
    if checkpoint is not None:
        if not checkpoint.is_file():
            return f"its checkpoint {checkpoint} is gone, so its scores cannot be checked"
        if produced.get("checkpoint") != file_digest(checkpoint):
            return f"its checkpoint {checkpoint} changed after the result was written"
    return None


def read_json(path: Path, what: str, fix: str) -> Any:
    """Parse ``path`` as UTF-8 JSON; every decode error is one line naming the file and ``fix``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultError(f"{path}: not a text file; {what} is UTF-8 JSON; {fix}") from None
    try:
        return json.loads(text, object_pairs_hook=reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ResultError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}"
        ) from None
    except (DuplicateKeyError, ValueError, RecursionError) as exc:  # huge ints, deep nesting
        raise ResultError(f"{path}: not readable as {what} ({str(exc)[:80]}); {fix}") from None


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2).encode("utf-8")
    atomic_write(path, lambda f: f.write(text))


def _type_name(tp: type | tuple[type, ...]) -> str:
    names = {"str": "a string", "int": "an integer", "dict": "an object", "float": "a number"}
    return names[(tp[-1] if isinstance(tp, tuple) else tp).__name__]


def read_result(path: Path, fix: str) -> dict[str, Any]:
    """A ``result.json`` with every field of the right type; :class:`ResultError` otherwise."""
    return check_result(read_json(path, "a result", fix), str(path), fix)


def check_result(data: Any, path: str, fix: str) -> dict[str, Any]:
    """``data`` if it is a result with every field of the right type, named ``path`` in errors."""
    if not isinstance(data, dict):
        raise ResultError(f"{path}: expected a JSON object, got {type(data).__name__}; {fix}")
    for key, tp in _FIELDS.items():
        value = data.get(key)
        if key not in data or isinstance(value, bool) or not isinstance(value, tp):
            got = "missing" if key not in data else f"{type(value).__name__} {str(value)[:40]}"
            raise ResultError(f"{path}: {key!r} must be {_type_name(tp)}, got {got}; {fix}")
    if data["kind"] not in _KINDS or data["split"] not in _SPLITS:
        raise ResultError(
            f"{path}: 'kind' {data['kind']!r} or 'split' {data['split']!r} is none of "
            f"{', '.join(_KINDS)} / {', '.join(_SPLITS)}; {fix}"
        )
    for key in ("miou", "val_miou", f"{data['split']}_miou"):
        value = data.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not (math.isnan(value) or 0.0 <= value <= 1.0):
            raise ResultError(f"{path}: {key!r} must be an mIoU in 0..1, got {value!r}; {fix}")
    try:
        Genotype.from_dict(data["genotype"], f"{path} 'genotype'")
    except GenotypeError as exc:
        raise ResultError(f"{exc}; {fix}") from None
    produced = data.get("produced_by")
    if produced is not None and (
        not isinstance(produced, dict)
        or not all(isinstance(produced.get(k), str) for k in _PRODUCERS)
    ):
        raise ResultError(f"{path}: 'produced_by' must hold {', '.join(_PRODUCERS)}; {fix}")
    return data
