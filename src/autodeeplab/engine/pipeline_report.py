"""The Markdown report of a search -> retrain -> evaluate run.

The figures it links are drawn by :mod:`autodeeplab.viz.run_report` from what the pipeline
computed; this module only writes the text (as :mod:`autodeeplab.engine.search.report` does
for the search report, whose figures are :mod:`autodeeplab.viz.search_report`'s).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from autodeeplab.checkpoint import atomic_write

__all__ = ["write_report"]


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def write_report(path: str | Path, facts: dict[str, Any]) -> Path:
    """Write the Markdown report of a search -> retrain -> evaluate run from ``facts``.

    ``facts`` holds: ``genotype`` (dict), ``figures`` (path, cell), ``curves``, ``strips``,
    ``metrics`` (from ``evaluate_checkpoint``), ``chance`` (from ``chance_level``),
    ``parameters``, ``multiply_adds`` ({size: count}), ``search`` / ``train`` summaries and
    ``seconds`` (per stage and total).
    """
    out = Path(path)
    root = out.parent
    m, chance, s, t = facts["metrics"], facts["chance"], facts["search"], facts["train"]
    sec = facts["seconds"]
    genotype = facts["genotype"]
    lines = [
        "# Auto-DeepLab run report",
        "",
        f"Search, decode, retrain and evaluate on `{m['data']}` in {sec['total']:.0f} s "
        f"(search {sec['search']:.0f} s, retraining {sec['train']:.0f} s, "
        f"evaluation and report {sec['report']:.0f} s).",
        "",
        "## Result",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| val mIoU (best checkpoint, iteration {m['iteration']}) | **{_pct(m['miou'])}** |",
        f"| chance mIoU (max of the two below) | {_pct(chance['chance_miou'])} |",
        f"| - majority class everywhere (class {chance['majority_class']}) "
        f"| {_pct(chance['majority_miou'])} |",
        f"| - uniformly random class | {_pct(chance['uniform_miou'])} |",
        f"| pixel accuracy | {_pct(m['pixel_acc'])} |",
        f"| mean class accuracy | {_pct(m['mean_acc'])} |",
        "",
        f"Evaluated on {m['num_images']} `{m['split']}` images, {m['mode']} inference, "
        f"scales {m['scales']}, flip {m['flip']}. Chance levels are computed on the same "
        "labels; the uniform one is the IoU of the expected confusion matrix.",
        "",
        "## Per-class IoU (%)",
        "",
        "```",
        m["table"],
        "```",
        "",
        "## Found architecture",
        "",
        f"Search: L={s['num_layers']}, B={s['num_blocks']}, F={s['filter_multiplier']}, "
        f"{s['epochs']} epochs at crop {s['crop']}, batch {s['batch_size']}; "
        f"supernet val mIoU {_pct(s['val_miou'])}.",
        "",
        f"Path (level per layer): `{genotype['path']}`, strides `{genotype['strides']}`.",
        "",
        f"![network path]({_rel(facts['figures'][0], root)})",
        "",
        f"![cell]({_rel(facts['figures'][1], root)})",
        "",
        "```json",
        json.dumps(genotype["cell"]),
        "```",
        "",
        "## Retrained network",
        "",
        "| | |",
        "| --- | --- |",
        f"| filter multiplier F | {t['filter_multiplier']} |",
        f"| parameters | {facts['parameters']:,} ({facts['parameters'] / 1e6:.2f} M) |",
    ]
    for size, count in facts["multiply_adds"].items():
        lines.append(f"| Multi-Adds at {size} | {count / 1e9:.3f} B |")
    lines += [
        f"| iterations x batch | {t['iters']} x {t['batch_size']} (crop {t['crop']}) |",
        f"| optimiser | SGD lr {t['lr']}, momentum {t['momentum']}, poly {t['poly_power']}, "
        f"weight decay {t['weight_decay']} |",
        "",
        "## Training curves",
        "",
        f"![training curves]({_rel(facts['curves'], root)})",
        "",
        "## Predictions (image | ground truth | prediction)",
        "",
    ]
    lines += [f"![prediction {i}]({_rel(p, root)})" for i, p in enumerate(facts["strips"])]
    lines.append("")
    text = "\n".join(lines)
    atomic_write(out, lambda f: f.write(text.encode("utf-8")))
    return out
