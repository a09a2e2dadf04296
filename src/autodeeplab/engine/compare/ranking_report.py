"""``compare``'s ranking section: each network's score on the searched run's supernet, how
well that score ranks the retrained networks, where the searched network stands, the seed
noise and the collapsed retrainings.

The scores come from :mod:`~autodeeplab.engine.compare.scores`. One point per genotype
enters the correlations: its score
against the mean retrained mIoU over its seeds, collapsed retrainings
(:mod:`~autodeeplab.engine.compare.collapse`) left out.

Sign convention: the score is ``-val CE`` (higher is better, so agreement is a positive
tau); the supernet's val mIoU is reported as a second score. Correlations are given over
every scored genotype and over the random ones alone (an unbiased sample of the space:
the searched genotype was picked by the same supernet, and the references are hand-chosen).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from autodeeplab.engine.compare.collapse import read_run_health
from autodeeplab.engine.compare.controls import CONTROLS, measure_controls
from autodeeplab.engine.compare.ranking import Bootstrap, rank_agreement, seed_noise, standing
from autodeeplab.engine.compare.scores import genotype_key

__all__ = ["SCORES", "measure_ranking", "ranking_markdown", "run_health"]

#: The two scores, each as (key in the score record, sign that makes higher better, label).
SCORES = (("val_ce", -1.0, "-val CE"), ("val_miou", 1.0, "supernet val mIoU"))


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
            key,
            {
                "name": name,
                "kind": r["kind"],
                "key": key,
                "parameters": r.get("parameters"),
                # The resolution control's prior (controls.py): 0 = stride 4 throughout.
                "path_level": statistics.fmean(r["genotype"]["path"]),
                "runs": [],
                "collapsed": [],
            },
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
    untrained: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ranking section of compare.json (see the module docstring).

    ``scores``: by :func:`~autodeeplab.engine.compare.scores.genotype_key`, or None with
    ``not_scored`` saying why; ``untrained``: the same for the freshly initialised supernet,
    the control (:mod:`~autodeeplab.engine.compare.controls`; None: the controls' section
    is left out);
    ``health``: :func:`~autodeeplab.engine.compare.collapse.read_run_health` by run name.
    """
    split = results[0]["split"] if results else None
    groups = _groups(results, health)
    for row in groups:
        key = row.pop("key")
        score = (scores or {}).get(key)
        row["score_val_ce"] = score["val_ce"] if score else None
        row["score_val_miou"] = score["val_miou"] if score else None
        row["not_scored"] = score.get("not_scored") if score else None
        if untrained is not None:
            row["control_val_ce"] = (untrained.get(key) or {}).get("val_ce")
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
                    Bootstrap(seed),
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
            [r["miou"] for r in ok if r["kind"] == "searched"], randoms, Bootstrap(seed)
        ),
        "seed_noise": seed_noise(
            {names[k]: v for k, v in by_genotype.items() if len(v) >= 2}, randoms
        ),
        "collapsed": [
            {"name": name, "reasons": h["reasons"]}
            for name, h in health.items()
            if h.get("collapsed")
        ],
        "controls": None
        if untrained is None or scores is None
        else measure_controls(groups, split, agreement[f"random/val_ce/{split}"], seed=seed),
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
        lines += _controls_lines(ranking.get("controls"), ranking["split"])
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


def _controls_lines(controls: dict[str, Any] | None, split: str | None) -> list[str]:
    """The controls' table and the verdict (:mod:`~autodeeplab.engine.compare.controls`)."""
    if not controls:
        return []
    labels = {name: label for name, _, _, label in CONTROLS}
    lines = [
        "",
        "Controls, on the same random genotypes: the supernet freshly initialised (its score "
        "reads structure alone), the parameter count (a size prior) and the path's mean "
        "level (a resolution prior).",
        "",
        "| control | against | n | Kendall tau [95% CI] | p |",
        "|---|---|---|---|---|",
    ]
    for key, a in controls["agreement"].items():
        name, target = key.split("/")
        lines.append(
            f"| {labels[name]} | {target} mIoU | {a['n']} | "
            f"{_corr(a['kendall_tau'], a['kendall_ci'])} | {_p(a['kendall_p'])} |"
        )
    v = controls["verdict"]
    if v["beats_controls"] is None:
        return [*lines, "", "- against the controls: n/a (too few random genotypes scored)"]
    return [
        *lines,
        "",
        f"- against the controls ({split} mIoU): trained supernet tau "
        f"{_corr(v['trained_tau'], None)}, untrained {_corr(v['untrained_tau'], None)}, "
        f"parameter count {_corr(v['parameters_tau'], None)}, path level "
        f"{_corr(v['resolution_tau'], None)}; training the supernet adds "
        f"{_corr(v['training_adds'], None)}. "
        + (
            "The trained supernet ranks better than every control."
            if v["beats_controls"]
            else "**The trained supernet ranks no better than a control**: its score does "
            "not show that the supernet's weights carry the ranking."
        ),
    ]


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
