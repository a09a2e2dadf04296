"""One table over several ``autodeeplab compare`` folders: each search's supernet ranking
(Kendall tau of its score against the retrained mIoU of the random networks, with its 95%
bootstrap interval and one-sided p, beside its controls' tau: the supernet untrained, the
parameter count and the path's mean level, where compare measured them), where the searched
network stands in the random cloud, and its difference from the random mean and from its
cell on the hand-made path; then the mean of each strategy over its searches. The README's
"Does the search help?" table.

    python tools/ranking_table.py runs/msrc21-darts-s0/compare runs/msrc21-spos-s0/compare

Prints markdown (``--json`` for the numbers). Every figure is read from the folders'
compare.json, written by ``compare`` itself; nothing is recomputed here but the means.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from scipy import stats

from autodeeplab.config import load_config
from autodeeplab.engine.compare.summary import read_comparison
from autodeeplab.engine.compare.validate import MANIFEST_NAME


def _search_of(folder: Path) -> tuple[str, int, str]:
    """The compared search's strategy, seed and folder, from compare_manifest.json."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    search = Path(manifest["search"]["folder"])
    cfg = load_config(search / "config.yaml")
    return cfg.search.strategy, cfg.search.seed, str(search)


def row(folder: Path) -> dict[str, Any]:
    """The table's numbers for one compare folder."""
    data = read_comparison(folder / "compare.json")
    ranking, summary = data.get("ranking") or {}, data["summary"]
    split = summary["split"]
    tau = (ranking.get("agreement") or {}).get(f"random/val_ce/{split}") or {}
    stand = ranking.get("standing") or {}
    verdict = (ranking.get("controls") or {}).get("verdict") or {}
    strategy, seed, search = _search_of(folder)
    # The random cloud as the ranking's standing counts it: one seed each, collapsed
    # retrainings left out.
    collapsed = {c["name"] for c in ranking.get("collapsed") or []}
    cloud = [r for r in data["results"] if r["kind"] == "random" and r["name"] not in collapsed]
    mious = [r["miou"] for r in cloud]
    # How well the retrained networks' own val mIoU ranks their test mIoU: the ceiling a
    # score measured on val can be expected to reach against test at this retraining noise.
    val_test = (
        float(stats.kendalltau([r["val_miou"] for r in cloud], mious).statistic)
        if len(cloud) >= 3
        else None
    )
    return {
        "folder": str(folder),
        "search": search,
        "strategy": strategy,
        "seed": seed,
        "split": split,
        "n_random": tau.get("n"),
        "tau": tau.get("kendall_tau"),
        "tau_ci": tau.get("kendall_ci"),
        "tau_p": tau.get("kendall_p"),
        "rho": tau.get("spearman_rho"),
        "untrained_tau": verdict.get("untrained_tau"),
        "parameters_tau": verdict.get("parameters_tau"),
        "resolution_tau": verdict.get("resolution_tau"),
        "val_test_tau": val_test,
        "searched": summary.get("searched_mean"),
        "random_mean": statistics.fmean(mious) if mious else None,
        "random_std": statistics.stdev(mious) if len(mious) > 1 else None,
        "percentile": stand.get("percentile"),
        "minus_random": stand.get("difference"),
        "minus_random_ci": stand.get("difference_ci"),
        "handmade": summary.get("handmade"),
        "minus_handmade": summary.get("searched_minus_handmade"),
    }


def _num(x: float | None, scale: float = 1.0, fmt: str = ".2f", sign: bool = False) -> str:
    if x is None:
        return "n/a"
    return format(scale * x, ("+" if sign else "") + fmt)


def _ci(ci: list[float] | None, scale: float = 1.0, fmt: str = ".2f") -> str:
    return "" if not ci else f" [{_num(ci[0], scale, fmt)}, {_num(ci[1], scale, fmt)}]"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table, one row per compare folder, then one mean row per strategy."""
    lines = [
        "| search | tau (random, -val CE vs retrained) [95% CI] | p | rho | untrained tau | "
        "parameters tau | path level tau | retrained val-test tau | searched | "
        "random mean +- sd | percentile | -random [95% CI] | hand-made | -hand-made |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']}, seed {r['seed']} | {_num(r['tau'])}{_ci(r['tau_ci'])} "
            f"(n={r['n_random']}) | {_num(r['tau_p'], fmt='.3f')} | {_num(r['rho'])} | "
            f"{_num(r['untrained_tau'])} | {_num(r['parameters_tau'])} | "
            f"{_num(r['resolution_tau'])} | {_num(r['val_test_tau'])} | "
            f"{_num(r['searched'], 100)} | "
            f"{_num(r['random_mean'], 100)} +- "
            f"{_num(r['random_std'], 100)} | {_num(r['percentile'], fmt='.0f')} | "
            f"{_num(r['minus_random'], 100, sign=True)}{_ci(r['minus_random_ci'], 100)} | "
            f"{_num(r['handmade'], 100)} | {_num(r['minus_handmade'], 100, sign=True)} |"
        )
    for strategy in sorted({r["strategy"] for r in rows}):
        mine = [r for r in rows if r["strategy"] == strategy]

        def mean(key: str, mine: list[dict[str, Any]] = mine) -> float | None:
            values = [r[key] for r in mine if r[key] is not None]
            return statistics.fmean(values) if values else None

        lines.append(
            f"| **{strategy}, mean of {len(mine)}** | {_num(mean('tau'))} | | "
            f"{_num(mean('rho'))} | {_num(mean('untrained_tau'))} | "
            f"{_num(mean('parameters_tau'))} | {_num(mean('resolution_tau'))} | "
            f"{_num(mean('val_test_tau'))} | "
            f"{_num(mean('searched'), 100)} | "
            f"{_num(mean('random_mean'), 100)} | {_num(mean('percentile'), fmt='.0f')} | "
            f"{_num(mean('minus_random'), 100, sign=True)} | {_num(mean('handmade'), 100)} | "
            f"{_num(mean('minus_handmade'), 100, sign=True)} |"
        )
    split = rows[0]["split"] if rows else "test"
    return "\n".join(lines) + (
        f"\n\nmIoU in % on {split}; tau, rho and the random cloud over the random networks "
        "whose retraining did not collapse; the controls' tau (the supernet untrained, the "
        "parameter count, the path's mean level) as compare.md's; -random and its interval as "
        "compare.md's standing.\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Print the table for the compare folders given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="compare --out folders")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    try:
        rows = [row(f) for f in args.folders]
    except (OSError, ValueError, KeyError) as exc:
        print(f"ranking_table: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=1) if args.json else markdown(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
