"""The pieces of a run report: training curves, prediction strips and the Markdown itself.

Figures use ``matplotlib.figure.Figure`` with the Agg canvas, never pyplot (no global
state, headless), and are written atomically like every other artifact.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from autodeeplab.checkpoint import atomic_write
from autodeeplab.data import denormalize
from autodeeplab.engine.evaluate import predict_probabilities
from autodeeplab.engine.predict import overlay, save_png
from autodeeplab.engine.runtime import read_jsonl

__all__ = ["plot_training_curves", "prediction_strips", "write_report"]


def plot_training_curves(
    log_path: str | Path, out_path: str | Path, chance_miou: float | None = None
) -> Path:
    """Training loss and validation mIoU against the iteration, from ``train_log.jsonl``."""
    records = read_jsonl(Path(log_path))
    train = [r for r in records if r.get("event") == "train"]
    evals = [r for r in records if r.get("event") == "eval"]
    fig = Figure(figsize=(10.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_miou = fig.subplots(1, 2)
    ax_loss.plot([r["iter"] for r in train], [r["loss"] for r in train], color="#1f5fa8")
    ax_loss.set(xlabel="iteration", ylabel="training loss (cross-entropy)", title="Loss")
    ax_loss.grid(alpha=0.3)
    xs = [r["iter"] for r in evals]
    ys = [100 * r["val_miou"] for r in evals]
    ax_miou.plot(xs, ys, marker="o", color="#f28e2b", label="val mIoU")
    if chance_miou is not None:
        ax_miou.axhline(100 * chance_miou, color="#7f7f7f", linestyle="--", label="chance")
    ax_miou.set(xlabel="iteration", ylabel="mIoU (%)", title="Validation mIoU", ylim=(0, 100))
    ax_miou.grid(alpha=0.3)
    ax_miou.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    atomic_write(out_path, lambda f: f.write(buffer.getvalue()))
    return Path(out_path)


@torch.no_grad()
def prediction_strips(
    model: torch.nn.Module,
    dataset: Any,
    palette: Sequence[Sequence[int]],
    out_dir: str | Path,
    count: int = 4,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """One PNG per sample: image | ground truth overlaid | prediction overlaid."""
    model.eval()
    paths = []
    for i in range(min(count, len(dataset))):
        x, target = dataset[i]
        rgb = denormalize(x)
        prob = predict_probabilities(model, x.unsqueeze(0).to(device))
        pred = prob.argmax(1)[0].cpu().numpy()
        truth = target.numpy()  # ignore pixels index palette row 255, which is black
        gap = np.full((rgb.shape[0], 4, 3), 255, dtype=np.uint8)
        strip = np.concatenate(
            [rgb, gap, overlay(rgb, truth, palette), gap, overlay(rgb, pred, palette)], axis=1
        )
        # Small synthetic images are enlarged (nearest) so the report shows them legibly.
        factor = max(1, 192 // rgb.shape[0])
        image = Image.fromarray(strip).resize(
            (strip.shape[1] * factor, strip.shape[0] * factor), Image.Resampling.NEAREST
        )
        paths.append(save_png(image, Path(out_dir) / f"val_{i:02d}.png"))
    return paths


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
