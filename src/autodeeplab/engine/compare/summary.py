"""What a comparison says: the summary by kind, compare.md, compare.json and compare.png.

Everything the user reads about a comparison is made here from the networks' results:
:func:`summarise` (means and spreads by kind, the searched network's margins),
:func:`markdown` (the table and the verdict lines) and :func:`write_comparison`, which
writes the three files, with the ranking section of
:mod:`~autodeeplab.engine.compare.ranking_report` where it is given.
:func:`read_comparison` reads compare.json back with its shape checked.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from autodeeplab.checkpoint import atomic_write
from autodeeplab.engine.compare.ranking_report import ranking_markdown
from autodeeplab.engine.compare.results import ResultError, check_result, read_json, write_json
from autodeeplab.viz.compare import plot_compare

__all__ = ["COMPARE_FILES", "markdown", "read_comparison", "summarise", "write_comparison"]

#: What a comparison writes into its --out beside runs/.
COMPARE_FILES = ("compare.json", "compare.md", "compare.png")


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and spreads by kind, and whether the searched network wins."""

    def mious(kind: str) -> list[float]:
        return [r["miou"] for r in results if r["kind"] == kind]

    searched, randoms = mious("searched"), mious("random")
    handmade, paper = mious("handmade"), mious("paper")
    out: dict[str, Any] = {
        "split": results[0]["split"] if results else None,
        "searched_mean": statistics.fmean(searched) if searched else None,
        "random_mean": statistics.fmean(randoms) if randoms else None,
        "random_std": statistics.stdev(randoms) if len(randoms) > 1 else None,
        "random_best": max(randoms) if randoms else None,
        # Means over the references' seeds (the searched network's).
        "handmade": statistics.fmean(handmade) if handmade else None,
        "paper": statistics.fmean(paper) if paper else None,
        "reference_seeds": len(handmade),
    }
    if out["searched_mean"] is not None and out["random_mean"] is not None:
        out["searched_minus_random"] = out["searched_mean"] - out["random_mean"]
    if out["searched_mean"] is not None and out["handmade"] is not None:
        out["searched_minus_handmade"] = out["searched_mean"] - out["handmade"]
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def markdown(results: list[dict[str, Any]], summary: dict[str, Any], header: str) -> str:
    """compare.md: the header, one table row per network, then the verdict lines."""
    split = summary["split"]
    lines = [
        "# Does the search help?",
        "",
        header,
        "",
        f"| network | kind | seed | Multi-Adds | parameters | val mIoU | {split} mIoU | path |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        path = " ".join(str(4 * 2**lv) for lv in r["genotype"]["path"])
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['seed']} | {r['madds'] / 1e9:.3f}G | "
            f"{r['parameters']:,} | {100 * r['val_miou']:.2f} | {100 * r['miou']:.2f} | {path} |"
        )
    lines += [
        "",
        f"- searched ({split} mIoU, mean over seeds): {_pct(summary['searched_mean'])}",
        f"- random: mean {_pct(summary['random_mean'])}, std {_pct(summary['random_std'])}, "
        f"best {_pct(summary['random_best'])}",
        f"- hand-made path with the searched cell: {_pct(summary['handmade'])}; "
        f"the paper's genotype: {_pct(summary['paper'])}"
        + (
            f" (means over {summary['reference_seeds']} seeds)"
            if summary["reference_seeds"] > 1
            else ""
        ),
    ]
    if "searched_minus_random" in summary:
        lines.append(
            f"- searched minus random mean: {100 * summary['searched_minus_random']:+.2f} points"
        )
    if "searched_minus_handmade" in summary:
        lines.append(
            f"- searched minus hand-made: {100 * summary['searched_minus_handmade']:+.2f} points"
        )
    reused = [r["name"] for r in results if r.get("reused_from")]
    if reused:
        lines.append(
            "- taken from earlier comparisons (the same genotype, seed and training config, "
            "their digests checked): " + ", ".join(reused)
        )
    return "\n".join(lines) + "\n"


def write_comparison(
    out: Path,
    results: list[dict[str, Any]],
    header: str,
    size: tuple[int, int],
    ranking: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write compare.json, compare.md and compare.png into ``out``; return the summary.

    ``ranking``: :func:`~autodeeplab.engine.compare.ranking_report.measure_ranking`'s
    section, added to compare.json and compare.md and as compare.png's second panel.
    """
    summary = summarise(results)
    payload = {"header": header, "summary": summary, "results": results, "size": list(size)}
    if ranking is not None:
        payload["ranking"] = ranking
    write_json(out / "compare.json", payload)
    text = markdown(results, summary, header)
    if ranking is not None:
        text += ranking_markdown(ranking)
    atomic_write(out / "compare.md", lambda f: f.write(text.encode("utf-8")))
    plot_compare(results, summary, out / "compare.png", ranking=ranking)
    return summary


def read_comparison(path: Path) -> dict[str, Any]:
    """compare.json with its header, summary, size and every result checked."""
    fix = "rerun the same compare command to write it again"
    data = read_json(path, "a comparison", fix)
    if not isinstance(data, dict):
        raise ResultError(f"{path}: expected a JSON object, got {type(data).__name__}; {fix}")
    shapes = {"header": str, "summary": dict, "results": list, "size": list}
    for key, tp in shapes.items():
        if not isinstance(data.get(key), tp):
            raise ResultError(f"{path}: {key!r} must be a {tp.__name__}; {fix}")
    size = data["size"]
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise ResultError(f"{path}: 'size' must be [height, width]; {fix}")
    for i, result in enumerate(data["results"]):
        check_result(result, f"{path} results[{i}]", fix)
    return data
