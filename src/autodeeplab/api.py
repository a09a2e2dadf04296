"""The Python API, as short as timm's: build, list and load networks; search, train, compare.

``create_model`` builds the paper's S/M/L by name or the network of any genotype,
``list_models`` names the presets, ``load_model`` rebuilds a trained checkpoint in eval
mode. ``search``, ``train`` and ``compare`` run the stages with the config objects the CLI
uses (a config, a YAML path, or ``None`` for the built-in CPU preset, plus ``--set``-style
overrides) under the same checks and run-folder rules, and return the stage's result,
which names its run folder. Everything here is re-exported by :mod:`autodeeplab`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autodeeplab.genotype import Genotype, load_genotype

if TYPE_CHECKING:
    from autodeeplab.config import SearchConfig, TrainConfig
    from autodeeplab.engine.compare.compare import CompareResult
    from autodeeplab.engine.search.loop import SearchResult
    from autodeeplab.engine.train.loop import TrainResult
    from autodeeplab.model import AutoDeepLab

__all__ = ["compare", "create_model", "list_models", "load_model", "search", "train"]


def _canonical_name(name: str) -> str | None:
    """``auto-deeplab-s`` for ``auto_deeplab_s``, ``Auto-DeepLab-S`` or itself; else None."""
    from autodeeplab.model import MODELS

    key = name.strip().lower().replace("_", "-")
    return key if key in MODELS else None


def list_models(pattern: str = "*") -> list[str]:
    """The names ``create_model`` takes, sorted; ``pattern`` filters them (fnmatch, as timm)."""
    from autodeeplab.model import MODELS

    return sorted(n for n in MODELS if fnmatch.fnmatch(n, pattern.lower().replace("_", "-")))


def create_model(
    name_or_genotype: str | os.PathLike[str] | Genotype | dict[str, Any],
    num_classes: int = 19,
    **model_kwargs: Any,
) -> AutoDeepLab:
    """A new (untrained) network: a preset by name, or the network of a genotype.

    ``name_or_genotype``: a name from :func:`list_models` (``auto-deeplab-s``, ``-m``, ``-l``;
    underscores work too), a genotype JSON file (what ``search`` writes), a
    :class:`~autodeeplab.genotype.Genotype` or its ``to_dict()`` form. ``model_kwargs`` go to
    :class:`~autodeeplab.model.AutoDeepLab` (``filter_multiplier``, ``aspp_channels``, ...).
    """
    from autodeeplab.model import build_model

    source: str | Genotype
    if isinstance(name_or_genotype, Genotype):
        source = name_or_genotype
    elif isinstance(name_or_genotype, dict):
        source = Genotype.from_dict(name_or_genotype)
    elif isinstance(name_or_genotype, str | os.PathLike):
        text = os.fspath(name_or_genotype)
        name = _canonical_name(text)
        if name is not None:
            source = name
        elif text.endswith(".json") or os.path.lexists(text):
            source = load_genotype(text)
        else:
            raise ValueError(
                f"unknown model {text!r}: give one of {', '.join(list_models())} or a "
                "genotype JSON file (what 'autodeeplab search' writes)"
            )
    else:
        raise TypeError(
            "create_model takes a model name, a genotype file, a Genotype or a dict, not "
            f"{type(name_or_genotype).__name__}"
        )
    return build_model(source, num_classes, **model_kwargs)


def load_model(checkpoint: str | os.PathLike[str], device: str = "cpu") -> AutoDeepLab:
    """A trained network from a ``train`` checkpoint, in eval mode on ``device``.

    The checkpoint is loaded safely (``weights_only``); the network carries its
    ``genotype`` and ``class_names`` (and ``palette`` when the data had one).
    """
    from autodeeplab.model import load_trained_model

    model, state = load_trained_model(checkpoint, device=device)
    model.class_names = list(state["class_names"])
    model.palette = state.get("palette")
    return model


def _config(
    config: Any, overrides: Sequence[str], data: str | None, preset: dict[str, Any], empty: Any
) -> Any:
    """A config from an object, a YAML path or the CPU preset (None), with overrides applied."""
    from autodeeplab.cli.arguments import for_data
    from autodeeplab.config import config_from_dict, load_config

    extra = [f"data.spec={json.dumps(data)}"] if data is not None else []
    if isinstance(config, type(empty)):
        return load_config(None, [*extra, *overrides], base=config)
    path = None if config is None else os.fspath(config)
    base = type(empty)() if path else config_from_dict(preset, type(empty)())
    return load_config(path, [*extra, *overrides], base=for_data(base, data))


def _run_folder(
    out: Path,
    command: str,
    config: Any,
    cfg: SearchConfig | TrainConfig,
    resume: bool,
    overwrite: bool,
    check_resume: Callable[[], None],
    inputs: Sequence[tuple[str, str | None]] = (),
) -> contextlib.AbstractContextManager[None]:
    """The CLI's run-folder rules: one process per folder (its lock), a folder holding a run
    refused unless resumed or replaced, a resume validated before any write, no write over
    an input, and what a failed fresh start wrote removed.

    The inputs are the config file (``config`` when it is a path), ``inputs`` and the dataset.
    """
    from autodeeplab.cli.outdir import claim_out_dir, dataset_path

    given = None if config is None or isinstance(config, type(cfg)) else os.fspath(config)
    read = [("config file", given), *inputs, ("dataset", dataset_path(cfg.data.spec))]
    return claim_out_dir(out, command, resume, overwrite, check_resume, inputs=read)


def search(
    config: SearchConfig | str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str],
    data: str | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> SearchResult:
    """Run ``autodeeplab search``: the result holds the genotype, its val mIoU and the folder.

    ``config``: a :class:`~autodeeplab.config.SearchConfig`, a YAML file, or None for the
    built-in CPU preset; ``data`` a dataset spec (``synthetic``, ``folder:PATH``, ...);
    ``overrides`` ``--set``-style ``key=value`` strings.
    """
    from autodeeplab.config import CPU_SEARCH_PRESET, SearchConfig
    from autodeeplab.engine.preflight import check_search_resume, check_search_settings
    from autodeeplab.engine.search.loop import run_search

    cfg = _config(config, overrides, data, CPU_SEARCH_PRESET, SearchConfig())
    check_search_settings(cfg)
    folder = Path(out)
    resumable = partial(check_search_resume, cfg, folder, resume)
    with _run_folder(folder, "search", config, cfg, resume, overwrite, resumable):
        return run_search(cfg, out, resume=resume, progress=progress)


def train(
    config: TrainConfig | str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str],
    genotype: str | os.PathLike[str] | None = None,
    data: str | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Run ``autodeeplab train``: the result holds the best checkpoint, its mIoU and the folder.

    ``genotype``: a genotype file to train (e.g. a search's ``genotype.json``) in place of the
    config's network; the other arguments as for :func:`search`.
    """
    from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig
    from autodeeplab.engine.preflight import check_train_resume, check_train_settings
    from autodeeplab.engine.train.loop import run_train

    chosen = []
    if genotype is not None:  # replaces whatever network the config names, as --genotype does
        chosen = [f"model.genotype={json.dumps(os.fspath(genotype))}", "model.name=null"]
    cfg = _config(config, [*chosen, *overrides], data, CPU_TRAIN_PRESET, TrainConfig())
    folder = Path(out)
    check_train_settings(cfg, resume_dir=folder if resume else None)
    resumable = partial(check_train_resume, cfg, folder, resume)
    inputs = [("genotype file", cfg.model.genotype)]
    with _run_folder(folder, "train", config, cfg, resume, overwrite, resumable, inputs):
        return run_train(cfg, out, resume=resume, progress=progress)


def compare(
    search_run: str | os.PathLike[str],
    config: TrainConfig | str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str],
    data: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
    score: bool = True,
    recal_batches: int = 8,
    **options: Any,
) -> CompareResult:
    """Run ``autodeeplab compare``: the searched network against random ones of its cost.

    ``options`` are :func:`~autodeeplab.engine.compare.compare.run_compare`'s (``num_random``,
    ``searched_seeds``, ``reuse``, ...); with ``score`` (as the CLI) every network is also
    scored on the search's supernet, and on the same supernet freshly initialised (the
    control; ``control_scorer=None`` leaves it out), and the ranking reported. The result
    holds every network's metrics and the summary (searched minus random, the ranking).
    """
    from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig
    from autodeeplab.engine.compare.compare import run_compare
    from autodeeplab.engine.compare.scores import supernet_scorer
    from autodeeplab.engine.preflight import check_train_settings
    from autodeeplab.genotype import PAPER_GENOTYPE

    cfg = _config(config, overrides, data, CPU_TRAIN_PRESET, TrainConfig())
    # The schedule and data with the largest network of the comparison (the paper's).
    check_train_settings(cfg, PAPER_GENOTYPE)
    if score:
        options.setdefault("scorer", supernet_scorer(recal_batches, cfg.train.seed))
        options.setdefault(
            "control_scorer", supernet_scorer(recal_batches, cfg.train.seed, untrained=True)
        )
    return run_compare(search_run, cfg, out, progress=progress, **options)
