"""The report of a search run: how alpha, beta and the decoded architecture evolve.

:func:`render_search_report` reads ``RUN_DIR/search_log.jsonl`` (one record per epoch,
written by :func:`~autodeeplab.engine.search.loop.run_search`) and writes
``RUN_DIR/report_search.md`` and ``report_search.html`` with these figures in
``RUN_DIR/report_search/``:

- ``alpha.png``: softmax(alpha) of every edge (paper Eq. 2), ops x epochs, laid out as the
  cell: one row per block, one column per input (H^{l-2}, H^{l-1}, earlier blocks);
- ``beta.png``: the outgoing transition probabilities of every trellis node (Eq. 7),
  directions x epochs, laid out as the trellis (levels x layers);
- ``path.png``: the decoded path of every epoch (layers x epochs, coloured by stride) and
  how many path layers and cell blocks changed against the previous epoch;
- ``curves.png``: losses and validation mIoU;
- ``final_path.png``, ``final_cell.png``: the final genotype (:mod:`autodeeplab.viz`): the
  last epoch's argmax/Viterbi decode, or genotype.json's where the search decoded by score.

- ``dynamics.png``: what the search learnt (entropies, logit movement, path margin).

This module writes the text; :mod:`autodeeplab.viz.search_report` draws the figures (the
run report is split the same way: :mod:`autodeeplab.engine.pipeline_report` and
:mod:`autodeeplab.viz.run_report`). The name ``report_search`` keeps clear of the
``report.md`` that ``autodeeplab run`` writes for the whole pipeline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from autodeeplab.checkpoint import atomic_write
from autodeeplab.engine.html import markdown_page
from autodeeplab.engine.search.strategies.base import Decoded
from autodeeplab.genotype import Genotype, genotype_provenance, load_genotype, save_genotype
from autodeeplab.ops import PRIMITIVES
from autodeeplab.trellis import num_edges
from autodeeplab.viz import render_genotype
from autodeeplab.viz.search_report import (
    as_float,
    path_changes,
    plot_alpha,
    plot_beta,
    plot_curves,
    plot_path,
    plot_search_dynamics,
)

__all__ = ["REPORT_NAME", "read_search_log", "render_search_report", "write_search_results"]

REPORT_NAME = "report_search"
LOG_NAME = "search_log.jsonl"


def read_search_log(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Epoch records of ``search_log.jsonl``, sorted by epoch, and the count of skipped lines.

    A torn line (a run killed while writing) is skipped; a repeated epoch keeps its last
    record, as a resumed run would have rewritten it.
    """
    log = Path(path)
    if not log.is_file():
        raise FileNotFoundError(
            f"{log}: search log not found; run 'autodeeplab search --out {log.parent}' first"
        )
    by_epoch: dict[int, dict[str, Any]] = {}
    skipped = 0
    strategy = None  # set by a strategy whose records hold no alpha/beta (spos)
    for number, raw in enumerate(log.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # torn, not UTF-8, huge integers: not ours
            skipped += 1
            continue
        if isinstance(record, dict) and "alpha" not in record and "strategy" in record:
            strategy = record["strategy"]
        if not isinstance(record, dict) or not all(
            k in record for k in ("epoch", "alpha", "beta", "genotype")
        ):
            skipped += 1
            continue
        by_epoch[_check_record(record, log, number)] = record
    if not by_epoch and strategy is not None:
        raise ValueError(
            f"{log}: a search.strategy={strategy} run learns no alpha or beta to report; its "
            "result is genotype.json and the scored candidates.json beside it"
        )
    if not by_epoch:
        raise ValueError(
            f"{log}: holds no complete epoch record yet; wait for the first epoch to finish"
        )
    records = [by_epoch[e] for e in sorted(by_epoch)]
    shapes = {(np.shape(r["alpha"]), np.shape(r["beta"])) for r in records}
    if len(shapes) != 1:
        raise ValueError(
            f"{log}: alpha/beta shapes differ between epochs {sorted(shapes)}; the log mixes "
            "two runs, search into a fresh --out folder"
        )
    return records, skipped


# Numbers the report formats or plots; each may also be null (e.g. arch_loss in the warm-up).
_NUMERIC_KEYS = (
    "train_loss", "arch_loss", "val_loss", "val_miou", "lr", "path_margin", "param_free_share",
    "arch_lr", "alpha_shift_max", "beta_shift_max",
)  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_record(record: dict[str, Any], log: Path, number: int) -> int:
    """The epoch of a complete log record; ValueError naming the log and line if a value
    the report reads is not a number (a damaged log, not a torn line)."""
    fix = "the log is damaged: restore it, or rerun the search into a fresh --out"
    epoch = record["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ValueError(
            f"{log}: line {number}: 'epoch' is {str(epoch)[:40]!r}, not a count; {fix}"
        )
    for key in _NUMERIC_KEYS:
        value = record.get(key)
        if value is not None and not _is_number(value):
            raise ValueError(
                f"{log}: line {number} (epoch {epoch}): {key!r} is {str(value)[:40]!r}, not a "
                f"number; {fix}"
            )
    for key in ("alpha", "beta"):
        try:
            np.asarray(record[key], dtype=np.float64)
        except (ValueError, TypeError):
            raise ValueError(
                f"{log}: line {number} (epoch {epoch}): {key!r} is not an array of numbers; {fix}"
            ) from None
    return epoch


def _fmt(x: Any, digits: int = 4) -> str:
    v = as_float(x)
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def _settled(changes: tuple[list[int | None], list[int | None]], epochs: list[int]) -> str:
    """One sentence per level: the last epoch whose decoded path / cell changed."""
    if len(epochs) == 1:
        return f"Only epoch {epochs[0]} is logged so far."
    sentences = []
    for what, counts in zip(("path", "cell"), changes, strict=True):
        changed = [e for e, c in zip(epochs, counts, strict=True) if c]
        if not changed:
            sentences.append(f"The {what} has not changed since epoch {epochs[0]}.")
        else:
            held = epochs[-1] - changed[-1]
            since = f"stable for the last {held} epoch(s)" if held else "still changing"
            sentences.append(
                f"The {what} changed at {len(changed)} of {len(epochs) - 1} epoch transitions, "
                f"last at epoch {changed[-1]} ({since})."
            )
    return " ".join(sentences)


def _chosen_by_score(run: Path) -> tuple[Genotype, dict[str, Any]] | None:
    """genotype.json and its decode summary where the search decoded by score, else None.

    Under ``search.decode=score`` the last epoch's argmax/Viterbi genotype (the log's) is
    only the first candidate: the report's final genotype must be the one genotype.json
    holds, the network a retraining builds.
    """
    path = run / "genotype.json"
    try:
        search = genotype_provenance(path)
        return (load_genotype(path), search) if search.get("decode") == "score" else None
    except (OSError, ValueError):  # absent or unreadable: the log's genotype stands
        return None


def _score_note(search: dict[str, Any]) -> str:
    """One paragraph: how the score chose the final genotype over argmax/Viterbi."""
    text = (
        f"Chosen by score (`search.decode=score`): the lowest val cross-entropy "
        f"({_fmt(search.get('val_loss'), 3)}) of {search.get('candidates')} candidates scored "
        "on the supernet as single paths."
    )
    if search.get("argmax_rank") is not None:
        text += (
            f" The last epoch's argmax/Viterbi genotype, the first candidate, scored "
            f"{_fmt(search.get('argmax_val_loss'), 3)} and ranked {search['argmax_rank']}; "
            "the sections below (margin, parameter-free share, the path per epoch) describe "
            "that argmax/Viterbi decode of alpha and beta."
        )
    return text


def _learnt(
    records: list[dict[str, Any]], img: dict[str, str], dynamics: bool
) -> list[tuple[str, Any]]:
    """The "What did the search learn?" section: the warning, the figures' summary."""
    if not dynamics:
        return []
    last = records[-1]
    parts: list[tuple[str, Any]] = [("h2", "What did the search learn?")]
    if last.get("warning"):
        parts.append(("p", f"**Warning:** {last['warning']}."))
    started = next((r["epoch"] for r in records if r.get("arch_updates")), None)
    lr = last.get("arch_lr")
    since = "never" if started is None else f"from epoch {started}"
    facts = [
        f"alpha/beta updates ran {since}" + (f" at lr {lr:.4g}" if lr else ""),
        f"path decode `{last.get('path_decode', 'literal')}`, margin "
        f"{_fmt(last.get('path_margin'), 3)} nats over the runner-up",
        f"{100 * as_float(last.get('param_free_share')):.0f}% of the cell's branches "
        "parameter-free",
    ]
    if last.get("alpha_shift_max") is not None:
        facts.append(
            f"alpha moved by at most {last['alpha_shift_max']:.3f} and beta by "
            f"{last.get('beta_shift_max', 0.0):.3f} logits"
        )
    if last.get("arch_start_forced"):
        facts.append("the updates started at the deadline, the train loss above its threshold")
    parts.append(("p", "; ".join(facts) + "."))
    parts.append(("img", ("search dynamics", img["dynamics"])))
    return parts


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as a plain dict ({} when absent or unreadable)."""
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
        return {}  # the report then goes without the settings it would show
    return data if isinstance(data, dict) else {}


def render_search_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report_search.md`` (+ ``.html`` and figures); return the Markdown path."""
    run = Path(run_dir)
    log = run / LOG_NAME
    records, skipped = read_search_log(log)
    epochs = [int(r["epoch"]) for r in records]
    alpha = np.asarray([r["alpha"] for r in records], dtype=np.float64)  # (E, edges, ops)
    beta = np.asarray([r["beta"] for r in records], dtype=np.float64)  # (E, L, levels, 3)
    genotypes = [Genotype.from_dict(r["genotype"], f"{log} epoch {r['epoch']}") for r in records]
    final = genotypes[-1]  # argmax/Viterbi; replaced below where the score chose another
    if alpha.ndim != 3 or alpha.shape[1] != num_edges(final.num_blocks):
        raise ValueError(
            f"{log}: alpha has shape {alpha.shape[1:]}, expected "
            f"({num_edges(final.num_blocks)}, ops) for B={final.num_blocks}"
        )
    if beta.ndim != 4 or beta.shape[1] != final.num_layers or beta.shape[3] != 3:
        raise ValueError(
            f"{log}: beta has shape {beta.shape[1:]}, expected ({final.num_layers}, levels, 3)"
        )
    cfg = _run_config(run)
    model_cfg, loop_cfg, data_cfg = (cfg.get(k) or {} for k in ("model", "search", "data"))
    total = loop_cfg.get("epochs")
    finished = total is None or epochs[-1] >= total
    # genotype.json is written at the end: a run still going may hold a stale one.
    scored = _chosen_by_score(run) if finished else None
    if scored is not None:
        final = scored[0]
    ops = list(model_cfg.get("primitives") or PRIMITIVES)
    if len(ops) != alpha.shape[2]:
        ops = [f"op {k}" for k in range(alpha.shape[2])]

    fig_dir = run / REPORT_NAME
    changes = path_changes(genotypes)
    figures = {
        "alpha": plot_alpha(alpha, epochs, ops, final, fig_dir / "alpha.png"),
        "beta": plot_beta(beta, epochs, final, fig_dir / "beta.png"),
        "path": plot_path(genotypes, epochs, beta.shape[2], changes, fig_dir / "path.png"),
        "curves": plot_curves(records, epochs, fig_dir / "curves.png"),
    }
    threshold = loop_cfg.get("min_path_margin")
    threshold = float(threshold) if isinstance(threshold, int | float) else None
    dynamics = "path_margin" in records[-1]  # logs from before the diagnostics lack them
    if dynamics:
        figures["dynamics"] = plot_search_dynamics(records, threshold, fig_dir / "dynamics.png")
    figures["final_path"], figures["final_cell"] = render_genotype(
        final, fig_dir, beta=beta[-1], prefix="final_"
    )
    img = {k: p.relative_to(run).as_posix() for k, p in figures.items()}

    space = ", ".join(
        f"{k}={v}"
        for k, v in (
            ("L", final.num_layers),
            ("B", final.num_blocks),
            ("F", model_cfg.get("filter_multiplier")),
            ("strides", "-".join(str(s) for s in model_cfg.get("strides") or ()) or None),
            ("crop", data_cfg.get("crop")),
            ("data", data_cfg.get("spec")),
        )
        if v is not None
    )
    intro = f"Search run `{run}` ({space}): {len(epochs)} epoch(s) logged"
    intro += f" of {total} configured." if total is not None else "."
    if skipped:
        intro += f" {skipped} unreadable line(s) of {LOG_NAME} skipped (e.g. torn by a kill)."
    if finished:
        title = f"Final genotype (epoch {epochs[-1]})"
    else:
        title = f"Latest genotype (epoch {epochs[-1]} of {total}; the search has not finished)"
    inputs = {0: "H^{l-2}", 1: "H^{l-1}"}
    cell_rows = [
        [str(b), *(f"{op}({inputs.get(inp, f'block {inp - 1}')})" for op, inp in block)]
        for b, block in enumerate(final.cell, start=1)
    ]
    epoch_rows = [
        [
            str(e),
            _fmt(r.get("train_loss")),
            _fmt(r.get("arch_loss")),
            _fmt(r.get("val_loss")),
            _fmt(100 * as_float(r.get("val_miou")), 2),
            _fmt(r.get("lr"), 5),
            " ".join(str(s) for s in g.strides),
            "-" if lc is None else str(lc),
            "-" if bc is None else str(bc),
        ]
        for e, r, g, lc, bc in zip(epochs, records, genotypes, *changes, strict=True)
    ]
    parts: list[tuple[str, Any]] = [
        ("h1", "Auto-DeepLab search report"),
        ("p", intro),
        ("h2", title),
        *([("p", _score_note(scored[1]))] if scored is not None else []),
        ("p", f"Path (level per layer): `{list(final.path)}`; strides `{list(final.strides)}`."),
        ("table", (["block", "branch 1", "branch 2"], cell_rows)),
        ("img", ("final network path", img["final_path"])),
        ("img", ("final cell", img["final_cell"])),
        ("code", final.to_json()),
        *_learnt(records, img, dynamics),
        ("h2", "Does the architecture settle?"),
        ("p", _settled(changes, epochs)),
        ("img", ("decoded path per epoch", img["path"])),
        ("h2", "Architecture weights"),
        ("p", "softmax(alpha), shared by every cell: one ops x epochs heatmap per edge."),
        ("img", ("alpha per edge", img["alpha"])),
        ("p", "beta as transition probabilities: each trellis node's outgoing edges."),
        ("img", ("beta per node", img["beta"])),
        ("h2", "Losses and validation"),
        ("img", ("losses and validation mIoU", img["curves"])),
        (
            "table",
            (
                ["epoch", "train loss", "arch loss", "val loss", "val mIoU %", "lr"]
                + ["path strides", "layers changed", "blocks changed"],
                epoch_rows,
            ),
        ),
    ]
    out = run / f"{REPORT_NAME}.md"
    text_md = _markdown(parts)
    page = markdown_page(text_md, "Auto-DeepLab search report")
    for suffix, text in (("md", text_md), ("html", page)):
        atomic_write(run / f"{REPORT_NAME}.{suffix}", lambda f, t=text: f.write(t.encode("utf-8")))
    return out


def _markdown(parts: list[tuple[str, Any]]) -> str:
    lines: list[str] = []
    for kind, value in parts:
        if kind == "h1":
            lines += [f"# {value}", ""]
        elif kind == "h2":
            lines += [f"## {value}", ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "img":
            lines += [f"![{value[0]}]({value[1]})", ""]
        elif kind == "code":
            lines += ["```json", value.rstrip("\n"), "```", ""]
        elif kind == "table":
            header, rows = value
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + " --- |" * len(header))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def write_search_results(out: Path, decoded: Decoded) -> None:
    """A finished search's genotype.json, genotype figures and report (rank 0).

    ``decoded.beta``: the final transition probabilities (L, levels, 3) the path figure
    shades (None: none); ``decoded.provenance``: how the genotype was decoded, stored in
    genotype.json beside it; the report only where the log holds alpha and beta.
    """
    genotype = decoded.genotype
    save_genotype(genotype, out / "genotype.json", search=decoded.provenance)
    render_genotype(genotype, out, beta=decoded.beta, prefix="genotype_")
    if not decoded.report:
        return
    try:
        render_search_report(out)
    except (OSError, ValueError) as exc:  # the genotype is saved: a report failure is not fatal
        print(f"warning: search report not written ({exc}); run 'autodeeplab report {out}'")
