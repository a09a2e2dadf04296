"""The report of a search run: how alpha, beta and the decoded architecture evolve.

:func:`render_search_report` reads ``RUN_DIR/search_log.jsonl`` (one record per epoch,
written by :func:`~autodeeplab.engine.search.run_search`) and writes
``RUN_DIR/report_search.md`` and ``report_search.html`` with these figures in
``RUN_DIR/report_search/``:

- ``alpha.png``: softmax(alpha) of every edge (paper Eq. 2), ops x epochs, laid out as the
  cell: one row per block, one column per input (H^{l-2}, H^{l-1}, earlier blocks);
- ``beta.png``: the outgoing transition probabilities of every trellis node (Eq. 7),
  directions x epochs, laid out as the trellis (levels x layers);
- ``path.png``: the decoded path of every epoch (layers x epochs, coloured by stride) and
  how many path layers and cell blocks changed against the previous epoch;
- ``curves.png``: losses and validation mIoU;
- ``final_path.png``, ``final_cell.png``: the last decoded genotype (:mod:`autodeeplab.viz`).

Figures use ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, headless) and every
file is written atomically. The name ``report_search`` keeps clear of the ``report.md``
that ``autodeeplab run`` writes for the whole pipeline.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from autodeeplab.checkpoint import atomic_write
from autodeeplab.genotype import Genotype
from autodeeplab.ops import PRIMITIVES
from autodeeplab.search.cell import edge_index, num_edges
from autodeeplab.search.network import beta_mask
from autodeeplab.viz import render_genotype
from autodeeplab.viz.search_dynamics import plot_search_dynamics

__all__ = ["REPORT_NAME", "read_search_log", "render_search_report"]

REPORT_NAME = "report_search"
LOG_NAME = "search_log.jsonl"
DPI = 100
_PATH_COLOR = "#1f5fa8"
_MARK_COLOR = "#d62728"
_STATES = {0: "$H^{l-2}$", 1: "$H^{l-1}$"}  # genotype inputs; k >= 2 is block k-1 (1-based)
_LEVEL_COLORS = ("#c6dbef", "#6baed6", "#2171b5", "#08306b", "#41ab5d", "#238b45")


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
    for line in log.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # torn, huge integers, absurd nesting: not ours
            skipped += 1
            continue
        if not isinstance(record, dict) or not all(
            k in record for k in ("epoch", "alpha", "beta", "genotype")
        ):
            skipped += 1
            continue
        by_epoch[int(record["epoch"])] = record
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


def _number(x: Any) -> float:
    """A logged metric as a float; None (e.g. arch_loss during warm-up) becomes NaN."""
    return float("nan") if x is None else float(x)


def _fmt(x: Any, digits: int = 4) -> str:
    v = _number(x)
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _suptitle(fig: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (about 12 characters per inch at 11 pt)."""
    width = int(fig.get_figwidth() * 12)
    fig.suptitle(textwrap.fill(text, width), fontsize=11)


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def _epoch_ticks(ax: Any, epochs: list[int], labels: bool = True, most: int = 6) -> None:
    """Columns are records: at most ``most`` ticks, labelled with their epoch numbers."""
    ticks = sorted({round(t) for t in np.linspace(0, len(epochs) - 1, min(len(epochs), most))})
    ax.set_xticks(ticks, [str(epochs[t]) for t in ticks] if labels else [""] * len(ticks))


def _heatmap(
    ax: Any, data: np.ndarray, epochs: list[int], show_epochs: bool, ticks: int, **style: Any
) -> Any:
    """A (rows, epochs) heatmap with epoch ticks (labelled only where ``show_epochs``)."""
    image = ax.imshow(data, aspect="auto", interpolation="nearest", vmin=0.0, **style)
    ax.tick_params(labelsize=7, length=2)
    _epoch_ticks(ax, epochs, show_epochs, ticks)
    if show_epochs:
        ax.set_xlabel("epoch", fontsize=7, labelpad=1)
    return image


def _mark_final(ax: Any, row: int, num_epochs: int) -> None:
    """Frame ``ax`` in path blue and outline heatmap ``row`` in red: the final choice."""
    outline = Rectangle((-0.5, row - 0.5), num_epochs, 1.0, fill=False, lw=1.8, clip_on=False)
    outline.set_edgecolor(_MARK_COLOR)
    ax.add_patch(outline)
    for spine in ax.spines.values():
        spine.set_edgecolor(_PATH_COLOR)
        spine.set_linewidth(2.0)


def _plot_alpha(
    alpha: np.ndarray, epochs: list[int], ops: list[str], final: Genotype, path: Path
) -> Path:
    """One ops x epochs heatmap per edge, in a blocks x inputs grid (as the cell reads)."""
    num_blocks, cols = final.num_blocks, final.num_blocks + 1
    chosen = {(b, inp): op for b, block in enumerate(final.cell) for op, inp in block}
    fig = _new_figure(1.2 + 2.3 * cols, 1.0 + (0.6 + 0.16 * len(ops)) * num_blocks)
    axes = fig.subplots(num_blocks, cols, squeeze=False)
    # Uniform alpha (before any update) should look neutral, not saturated.
    vmax = max(float(alpha.max()), 2.0 / len(ops))
    image = None
    for b in range(num_blocks):
        for s in range(cols):
            ax = axes[b, s]
            if s > b + 1:  # block b reads states 0..b+1 only
                ax.set_axis_off()
                continue
            last_in_column = b == num_blocks - 1 or s == b + 1
            data = alpha[:, edge_index(b, s), :].T
            image = _heatmap(ax, data, epochs, last_in_column, 6, cmap="viridis", vmax=vmax)
            ax.set_yticks(range(len(ops)), ops if s == 0 else [""] * len(ops), fontsize=7)
            op = chosen.get((b, s))
            title = f"{_STATES.get(s, f'block {s - 1}')} \u2192 block {b + 1}"
            ax.set_title(
                title + (f": {op}" if op else ""), fontsize=8, color=_PATH_COLOR if op else "black"
            )
            if op:
                _mark_final(ax, ops.index(op), len(epochs))
    assert image is not None
    # The empty top-right corner of the staircase holds the colour bar when there is one.
    host = axes[0, -1] if num_blocks >= 2 else None
    if host is not None:
        cax = host.inset_axes((0.05, 0.55, 0.9, 0.12))
        fig.colorbar(image, cax=cax, orientation="horizontal", label="softmax(alpha)")
    else:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="softmax(alpha)")
    _suptitle(
        fig, "alpha per edge over the epochs; blue frame + red row: the op the final cell keeps"
    )
    return _save(fig, path)


def _plot_beta(beta: np.ndarray, epochs: list[int], final: Genotype, path: Path) -> Path:
    """One directions x epochs heatmap per trellis node, in a levels x layers grid."""
    _, num_layers, num_levels, _ = beta.shape
    mask = beta_mask(num_layers, num_levels).numpy()
    levels = (0, *final.path)  # level of the path at each source layer (0 = stem)
    rows = min(num_levels, num_layers)
    fig = _new_figure(1.6 + 1.35 * num_layers, 1.2 + 1.05 * rows)
    axes = fig.subplots(rows, num_layers, squeeze=False)
    cmap = colormaps["viridis"].with_extremes(bad="#e6e6e6")  # grey: no such edge
    image = None
    for s in range(rows):
        stride = 4 * 2**s
        names = [f"to {stride // 2}", f"to {stride}", f"to {stride * 2}"]
        for layer in range(num_layers):
            ax = axes[s, layer]
            if not mask[layer, s].any():
                ax.set_axis_off()
                continue
            values = beta[:, layer, s, :].T  # (3 directions, epochs)
            data = np.ma.masked_array(
                values, np.broadcast_to(~mask[layer, s, :, None], values.shape)
            )
            lowest = s == min(layer, rows - 1)
            image = _heatmap(ax, data, epochs, lowest, 4, cmap=cmap, vmax=1.0)
            ax.set_yticks(range(3), names if layer == s else [""] * 3, fontsize=7)
            if layer == s:
                ax.set_ylabel(f"stride {stride}", fontsize=8)
            if s == 0:
                ax.set_title("stem" if layer == 0 else f"layer {layer}", fontsize=8)
            if levels[layer] == s:
                _mark_final(
                    ax, final.path[layer] - s + 1, len(epochs)
                )  # the transition the path takes
    assert image is not None
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.7, label="beta (outgoing)")
    _suptitle(
        fig,
        "beta per node over the epochs: rows = stride of the node, columns = the layer it "
        "leaves; blue frame + red row: the final path (grey: no such edge)",
    )
    return _save(fig, path)


def _changes(genotypes: list[Genotype]) -> tuple[list[int | None], list[int | None]]:
    """Per epoch: path layers and cell blocks that differ from the previous epoch's."""
    layers: list[int | None] = [None]
    blocks: list[int | None] = [None]
    for prev, cur in zip(genotypes, genotypes[1:], strict=False):
        layers.append(sum(a != b for a, b in zip(prev.path, cur.path, strict=True)))
        blocks.append(sum(sorted(a) != sorted(b) for a, b in zip(prev.cell, cur.cell, strict=True)))
    return layers, blocks


def _plot_path(
    genotypes: list[Genotype],
    epochs: list[int],
    num_levels: int,
    changes: tuple[list[int | None], list[int | None]],
    path: Path,
) -> Path:
    """Decoded path per epoch (layers x epochs by stride) over the per-epoch change counts."""
    levels = np.array([g.path for g in genotypes]).T  # (L, epochs)
    num_layers, n = levels.shape
    fig = _new_figure(max(7.0, 2.5 + 0.28 * n), 3.0 + 0.28 * num_layers)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[max(num_layers, 3), 4])
    cmap = ListedColormap(list(_LEVEL_COLORS[:num_levels]))
    image = top.imshow(
        levels,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=-0.5,
        vmax=num_levels - 0.5,
        extent=(-0.5, n - 0.5, num_layers + 0.5, 0.5),
    )
    if n <= 60:
        for layer in range(num_layers):
            for e in range(n):
                level = int(levels[layer, e])
                color = "white" if level >= 2 else "black"
                text = str(4 * 2**level)
                top.text(e, layer + 1, text, ha="center", va="center", fontsize=7, color=color)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_ylabel("layer")
    top.set_title("decoded path per epoch (cell value = stride of the layer)", fontsize=10)
    bar = fig.colorbar(image, ax=top, ticks=range(num_levels), shrink=0.9)
    bar.ax.set_yticklabels([str(4 * 2**i) for i in range(num_levels)])
    bar.set_label("stride")

    layer_changes, block_changes = changes
    xs = np.arange(n)
    width = 0.4
    bottom.bar(xs - width / 2, [c or 0 for c in layer_changes], width, label="path layers")
    bottom.bar(
        xs + width / 2, [c or 0 for c in block_changes], width, label="cell blocks", color="#f28e2b"
    )
    bottom.set_ylabel("changed")
    bottom.set_xlabel("epoch")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylim(0, max(num_layers, len(genotypes[0].cell)) + 0.5)
    bottom.legend(fontsize=8, loc="upper right", ncol=2)
    bottom.set_title("changes against the previous epoch", fontsize=10)
    bottom.grid(axis="y", alpha=0.3)
    _epoch_ticks(bottom, epochs)
    return _save(fig, path)


def _plot_curves(records: list[dict[str, Any]], epochs: list[int], path: Path) -> Path:
    """Training, architecture and validation losses; validation mIoU and pixel accuracy."""
    fig = _new_figure(11.0, 4.0)
    ax_loss, ax_miou = fig.subplots(1, 2)
    style = {"marker": "o", "ms": 4}
    for key, label, color in (
        ("train_loss", "train loss (trainA, w step)", "#1f5fa8"),
        ("arch_loss", "arch loss (trainB, alpha/beta step)", "#d62728"),
        ("val_loss", "val loss", "#2ca02c"),
    ):
        ax_loss.plot(
            epochs, [_number(r.get(key)) for r in records], label=label, color=color, **style
        )
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Losses")
    for key, label, color in (
        ("val_miou", "val mIoU", "#f28e2b"),
        ("val_pixel_acc", "val pixel acc", "#7f7f7f"),
    ):
        ax_miou.plot(
            epochs, [100 * _number(r.get(key)) for r in records], label=label, color=color, **style
        )
    ax_miou.set(xlabel="epoch", ylabel="%", title="Validation (supernet)", ylim=(0, 100))
    arch_on = [e for e, r in zip(epochs, records, strict=True) if r.get("arch_loss") is not None]
    for ax in (ax_loss, ax_miou):
        if arch_on and arch_on[0] > epochs[0]:
            ax.axvline(
                arch_on[0] - 0.5, color="#7f7f7f", ls="--", lw=1, label="alpha/beta updates start"
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)  # one epoch still gets a sane axis
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


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
        f"{100 * _number(last.get('param_free_share')):.0f}% of the cell's branches parameter-free",
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
    except (OSError, yaml.YAMLError):
        return {}
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
    final = genotypes[-1]
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
    ops = list(model_cfg.get("primitives") or PRIMITIVES)
    if len(ops) != alpha.shape[2]:
        ops = [f"op {k}" for k in range(alpha.shape[2])]

    fig_dir = run / REPORT_NAME
    changes = _changes(genotypes)
    figures = {
        "alpha": _plot_alpha(alpha, epochs, ops, final, fig_dir / "alpha.png"),
        "beta": _plot_beta(beta, epochs, final, fig_dir / "beta.png"),
        "path": _plot_path(genotypes, epochs, beta.shape[2], changes, fig_dir / "path.png"),
        "curves": _plot_curves(records, epochs, fig_dir / "curves.png"),
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

    total = loop_cfg.get("epochs")
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
    if total is None or epochs[-1] >= total:
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
            _fmt(100 * _number(r.get("val_miou")), 2),
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
    for suffix, text in (("md", _markdown(parts)), ("html", _html(parts))):
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


def _html(parts: list[tuple[str, Any]]) -> str:
    body: list[str] = []
    for kind, value in parts:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(value)}</{kind}>")
        elif kind == "p":
            body.append(
                "<p>" + re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(value)) + "</p>"
            )
        elif kind == "img":
            body.append(f'<p><img src="{html.escape(value[1])}" alt="{html.escape(value[0])}"></p>')
        elif kind == "code":
            body.append(f"<pre>{html.escape(value)}</pre>")
        elif kind == "table":
            header, rows = value
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows
            )
            body.append(f"<table><tr>{head}</tr>{cells}</table>")
    style = (
        "body{font-family:sans-serif;max-width:1400px;margin:2em auto}"
        "img{max-width:100%}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>Auto-DeepLab search report</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
