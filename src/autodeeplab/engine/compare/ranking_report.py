"""``compare``'s ranking section: each network's score on the searched run's supernet, how
well that score ranks the retrained networks, where the searched network stands, the seed
noise and the collapsed retrainings.

Every distinct genotype of a comparison is scored once on the search run's supernet
(single-path forward after BatchNorm recalibration, :mod:`autodeeplab.engine.search.score`,
as ``autodeeplab score`` takes them); the scores are kept in ``out/supernet_scores.json``
so a rerun does not score again. One point per genotype enters the correlations: its score
against the mean retrained mIoU over its seeds, collapsed retrainings
(:mod:`~autodeeplab.engine.compare.collapse`) left out.

Sign convention: the score is ``-val CE`` (higher is better, so agreement is a positive
tau); the supernet's val mIoU is reported as a second score. Correlations are given over
every scored genotype and over the random ones alone (an unbiased sample of the space:
the searched genotype was picked by the same supernet, and the references are hand-chosen).
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autodeeplab.checkpoint import atomic_write
from autodeeplab.config import SearchModelConfig
from autodeeplab.engine.compare.collapse import read_run_health
from autodeeplab.engine.compare.ranking import rank_agreement, seed_noise, standing
from autodeeplab.engine.search.score_run import score_run
from autodeeplab.genotype import Genotype

__all__ = [
    "SCORES",
    "Scorer",
    "genotype_key",
    "measure_ranking",
    "outside_space",
    "ranking_markdown",
    "run_health",
    "score_all",
    "score_or_why",
    "supernet_scorer",
]

#: A function that scores genotypes on a search run's supernet: (run folder, genotypes) ->
#: one ``{"val_ce": ..., "val_miou": ...}`` per genotype, in order.
Scorer = Callable[[Path, list[Genotype]], list[dict[str, float]]]

#: The two scores, each as (key in the score record, sign that makes higher better, label).
SCORES = (("val_ce", -1.0, "-val CE"), ("val_miou", 1.0, "supernet val mIoU"))


def genotype_key(genotype: dict[str, Any]) -> str:
    """A genotype's identity as text (its JSON with sorted keys)."""
    return json.dumps(genotype, sort_keys=True)


def outside_space(genotype: Genotype, space: SearchModelConfig) -> str | None:
    """Why ``genotype`` cannot run on the supernet of ``space`` (None: it can).

    The paper's genotype (12 layers, to stride 32) is outside a smaller search space: it
    keeps its place in the comparison but has no score.
    """
    if (genotype.num_layers, genotype.num_blocks) != (space.num_layers, space.num_blocks):
        return (
            f"{genotype.num_layers} layers of {genotype.num_blocks} blocks, the supernet "
            f"{space.num_layers} of {space.num_blocks}"
        )
    if max(genotype.path) >= len(space.strides):
        stride = 4 * 2 ** max(genotype.path)
        return f"its path reaches stride {stride}, the supernet's {max(space.strides)}"
    unknown = sorted({op for block in genotype.cell for op, _ in block} - set(space.primitives))
    return f"ops the supernet lacks: {', '.join(unknown)}" if unknown else None


def score_all(
    search_dir: Path,
    genotypes: Sequence[Genotype],
    out: Path,
    scorer: Scorer,
    space: SearchModelConfig | None = None,
) -> dict[str, dict[str, Any]]:
    """Each distinct genotype's score on ``search_dir``'s supernet, kept in supernet_scores.json.

    The cache holds the search run and the scorer's settings (a ``functools.partial``'s
    keywords) it came from; genotypes already there are not scored again (a rerun, or one
    with ``--seed-noise`` added, scores only its new networks). With ``space``, a genotype
    outside it (:func:`outside_space`) gets no score and ``not_scored`` saying why.
    """
    cache_file = out / "supernet_scores.json"
    # Scores from another search run or other scoring settings are scored again.
    settings = dict(getattr(scorer, "keywords", None) or {})
    cache: dict[str, Any] = {"search_run": str(search_dir), "settings": settings, "scores": {}}
    if cache_file.is_file():
        old = json.loads(cache_file.read_text(encoding="utf-8"))
        if old.get("search_run") == str(search_dir) and old.get("settings") == settings:
            cache = old
    scores: dict[str, dict[str, Any]] = cache["scores"]
    todo: dict[str, Genotype] = {}
    for g in genotypes:
        key = genotype_key(g.to_dict())
        why = outside_space(g, space) if space is not None else None
        if why is not None:
            scores[key] = {"val_ce": None, "val_miou": None, "not_scored": why}
        elif key not in scores:
            todo.setdefault(key, g)
    if todo:
        for key, record in zip(todo, scorer(search_dir, list(todo.values())), strict=True):
            scores[key] = {k: float(record[k]) for k in ("val_ce", "val_miou")}
        text = json.dumps(cache, indent=2).encode()
        atomic_write(cache_file, lambda f: f.write(text))
    return scores


def _score_on_supernet(
    run_dir: Path, genotypes: list[Genotype], *, recal_batches: int, seed: int
) -> list[dict[str, float]]:
    """:func:`~autodeeplab.engine.search.score_run.score_run`'s val CE and mIoU."""
    scores = score_run(run_dir, genotypes, recal_batches=recal_batches, seed=seed)
    return [{"val_ce": s.val_loss, "val_miou": s.val_miou} for s in scores]


def supernet_scorer(recal_batches: int = 8, seed: int = 0) -> Scorer:
    """Scores on the search run's supernet, as ``autodeeplab score`` takes them.

    ``recal_batches`` trainA batches recalibrate BatchNorm before each genotype's val pass;
    the settings are kept in supernet_scores.json, so other settings score anew.
    """
    return functools.partial(_score_on_supernet, recal_batches=recal_batches, seed=seed)


def score_or_why(
    search_dir: Path,
    genotypes: Sequence[Genotype],
    out: Path,
    scorer: Scorer | None,
    space: SearchModelConfig | None = None,
) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """:func:`score_all`, or None and why not (no scorer; a search run without a supernet)."""
    if scorer is None:
        return None, "no supernet scores were asked for (--no-score)"
    try:
        return score_all(search_dir, genotypes, out, scorer, space), None
    except FileNotFoundError as e:
        # A search run from before supernet checkpoints were kept still gets its comparison.
        print(f"compare: no supernet scores: {e}", file=sys.stderr)
        return None, f"the search run has no supernet to score on ({e})"


def _groups(
    results: list[dict[str, Any]], health: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per distinct genotype: its runs' mIoUs (collapsed ones apart), in plan order."""
    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        key = genotype_key(r["genotype"])
        # The searched genotype by its kind, the others by their first run's name.
        name = "searched" if r["kind"] == "searched" else r["name"]
        row = rows.setdefault(
            key, {"name": name, "kind": r["kind"], "key": key, "runs": [], "collapsed": []}
        )
        if health.get(r["name"], {}).get("collapsed"):
            row["collapsed"].append(r["name"])
        else:
            row["runs"].append(r)
    for row in rows.values():
        runs = row.pop("runs")
        row["seeds"] = [r["seed"] for r in runs]
        row["val_miou"] = statistics.fmean(r["val_miou"] for r in runs) if runs else None
        row["miou"] = statistics.fmean(r["miou"] for r in runs) if runs else None
    return list(rows.values())


def measure_ranking(
    results: list[dict[str, Any]],
    scores: dict[str, dict[str, Any]] | None,
    health: dict[str, dict[str, Any]],
    *,
    seed: int = 0,
    not_scored: str | None = None,
) -> dict[str, Any]:
    """The ranking section of compare.json (see the module docstring).

    ``scores``: by :func:`genotype_key`, or None with ``not_scored`` saying why;
    ``health``: :func:`~autodeeplab.engine.compare.collapse.read_run_health` by run name.
    """
    split = results[0]["split"] if results else None
    groups = _groups(results, health)
    for row in groups:
        score = (scores or {}).get(row.pop("key"))
        row["score_val_ce"] = score["val_ce"] if score else None
        row["score_val_miou"] = score["val_miou"] if score else None
        row["not_scored"] = score.get("not_scored") if score else None
    agreement: dict[str, Any] = {}
    for subset, kinds in (("all", None), ("random", {"random"})):
        rows = [
            g
            for g in groups
            if g["miou"] is not None
            and g["score_val_ce"] is not None
            and (kinds is None or g["kind"] in kinds)
        ]
        for score_key, sign, _ in SCORES:
            for target in ("val_miou", "miou"):
                name = f"{subset}/{score_key}/{'val' if target == 'val_miou' else split}"
                agreement[name] = rank_agreement(
                    [sign * g[f"score_{score_key}"] for g in rows],
                    [g[target] for g in rows],
                    seed=seed,
                )
    ok = [r for r in results if not health.get(r["name"], {}).get("collapsed")]
    by_genotype: dict[str, list[float]] = {}
    for r in ok:
        by_genotype.setdefault(genotype_key(r["genotype"]), []).append(r["miou"])
    names = {
        genotype_key(r["genotype"]): "searched" if r["kind"] == "searched" else r["name"]
        for r in reversed(results)
    }
    randoms = [r["miou"] for r in ok if r["kind"] == "random"]
    return {
        "split": split,
        "sign": "score = -val CE on the supernet (higher is better); also its val mIoU",
        "not_scored": not_scored,
        "networks": groups,
        "agreement": agreement,
        "standing": standing(
            [r["miou"] for r in ok if r["kind"] == "searched"], randoms, seed=seed
        ),
        "seed_noise": seed_noise(
            {names[k]: v for k, v in by_genotype.items() if len(v) >= 2}, randoms
        ),
        "collapsed": [
            {"name": name, "reasons": h["reasons"]}
            for name, h in health.items()
            if h.get("collapsed")
        ],
    }


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def _corr(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.3g}"


def ranking_markdown(ranking: dict[str, Any]) -> str:
    """The ranking section of compare.md."""
    lines = ["", "## Does the supernet rank?", ""]
    runs = sum(len(g["seeds"]) + len(g["collapsed"]) for g in ranking["networks"])
    if runs and 2 * len(ranking["collapsed"]) >= runs:
        lines += [
            f"**{len(ranking['collapsed'])} of {runs} retrainings collapsed** (listed below): "
            "the statistics here rest on the few that did not. Lengthen or stabilise the "
            "retraining schedule (e.g. --set train.grad_clip=...) before reading them.",
            "",
        ]
    if ranking.get("not_scored"):
        lines += [f"Scores not measured: {ranking['not_scored']}."]
    else:
        lines += _agreement_lines(ranking)
    lines += _standing_lines(ranking)
    return "\n".join(lines) + "\n"


def _agreement_lines(ranking: dict[str, Any]) -> list[str]:
    """The correlation table and the threshold tau needs."""
    if not any(a["n"] for a in ranking["agreement"].values()):
        return ["No genotype has both a score and a retraining that did not collapse."]
    lines = [
        "Each genotype's score on the searched run's supernet (single path, BatchNorm "
        "recalibrated) against its retrained mIoU (mean over its seeds, collapsed "
        "retrainings left out). Sign: the score is -val CE, higher is better, so a "
        "positive tau is agreement. 95% bootstrap intervals over genotypes; p one-sided "
        "(tau > 0).",
        "",
        "| genotypes | score | against | n | tau for p < 0.05 | Kendall tau [95% CI] | p "
        "| Spearman rho [95% CI] | p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {key: label for key, _, label in SCORES}
    for name, a in ranking["agreement"].items():
        subset, score_key, target = name.split("/")
        needed = "n/a" if a["tau_threshold"] is None else f"{a['tau_threshold']:.2f}"
        lines.append(
            f"| {subset} | {labels[score_key]} | {target} mIoU | {a['n']} | {needed} | "
            f"{_corr(a['kendall_tau'], a['kendall_ci'])} | {_p(a['kendall_p'])} | "
            f"{_corr(a['spearman_rho'], a['spearman_ci'])} | {_p(a['spearman_p'])} |"
        )
    n_random = ranking["standing"]["random_n"]
    if n_random < 20:
        lines += [
            "",
            f"Only {n_random} random genotypes (that did not collapse): a tau of 0.3, which "
            "would make the search worth about 0.85 random standard deviations, cannot be "
            "told from zero with fewer than 20 (--random 20).",
        ]
    return lines


def _standing_lines(ranking: dict[str, Any]) -> list[str]:
    """The searched network's percentile, the seed noise, the collapsed runs, the scores."""
    split, st = ranking["split"], ranking["standing"]
    lines = ["", f"- the searched network within the random cloud ({split} mIoU): "]
    if st["percentile"] is None:
        lines[-1] += "n/a"
    else:
        ci = st["difference_ci"]
        lines[-1] += (
            f"percentile {st['percentile']:.0f} among {st['random_n']} random networks; "
            "searched minus random "
            f"mean {_pct(st['difference'], True)} points"
            + (f" [95% CI {_pct(ci[0], True)}, {_pct(ci[1], True)}]" if ci else "")
            + (
                f", {st['effect_size']:+.2f} random standard deviations"
                if st["effect_size"] is not None
                else ""
            )
        )
    sn = ranking["seed_noise"]
    if sn["within_sd"] is not None:
        lines.append(
            f"- seed noise: {_pct(sn['within_sd'])} points (pooled standard deviation over "
            f"seeds of {len(sn['genotypes'])} genotypes: {', '.join(sn['genotypes'])}) against "
            f"{_pct(sn['between_sd'])} between random genotypes"
            + (
                f" (ratio {sn['ratio']:.2f}; share of the random spread that is the "
                f"genotypes' own: {sn['reliability']:.2f})"
                if sn["ratio"] is not None
                else ""
            )
        )
    else:
        lines.append(
            "- seed noise: not measured (no genotype with 2 or more seeds that did not "
            "collapse; --seed-noise retrains 3 random genotypes with 3 seeds)"
        )
    for name in sn["unstable"]:
        g = sn["genotypes"][name]
        lines.append(
            f"- {name}: its {g['n']} seeds disagree far beyond the seed noise of the others "
            f"(standard deviation {_pct(g['sd'])} points): look for a failed retraining"
        )
    outside = [g for g in ranking["networks"] if g.get("not_scored")]
    if outside:
        lines.append(
            "- not scored, outside the supernet's space: "
            + "; ".join(f"{g['name']} ({g['not_scored']})" for g in outside)
        )
    if ranking["collapsed"]:
        lines.append(
            "- collapsed retrainings, left out of the statistics above (not of the table at "
            "the top): "
            + "; ".join(f"{c['name']} ({', '.join(c['reasons'])})" for c in ranking["collapsed"])
        )
    else:
        lines.append("- collapsed retrainings: none found")
    if ranking.get("not_scored"):
        return lines
    lines += [
        "",
        f"| network | kind | seeds | val CE | supernet val mIoU | val mIoU | {split} mIoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in ranking["networks"]:
        ce = "n/a" if g["score_val_ce"] is None else f"{g['score_val_ce']:.3f}"
        lines.append(
            f"| {g['name']} | {g['kind']} | {len(g['seeds'])} | {ce} | "
            f"{_pct(g['score_val_miou'])} | {_pct(g['val_miou'])} | {_pct(g['miou'])} |"
        )
    return lines


def run_health(
    out: Path, results: list[dict[str, Any]], split: str | None
) -> dict[str, dict[str, Any]]:
    """Each run's collapse check, read from its folder (a reused run's from its source)."""
    health = {}
    for r in results:
        folder = out / "runs" / r["name"]
        # A reused run's metrics were copied here; its train log stayed where it ran.
        log_folder = Path(r["reused_from"]) if r.get("reused_from") else folder
        health[r["name"]] = read_run_health(folder, split or r["split"], log_folder=log_folder)
    return health
