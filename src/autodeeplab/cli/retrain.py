"""Subcommands of the retrain stage: train, eval, predict, info, and the whole pipeline (run)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from autodeeplab.cli.arguments import (
    OVERWRITE_HELP,
    add_inference_options,
    add_set,
    flag_overrides,
    for_data,
    parse_size,
)
from autodeeplab.cli.messages import (
    Stopped,
    arch_never_updated,
    pct,
    print_search_memory,
    resume_command,
    warn_untrained_genotype,
)
from autodeeplab.cli.outdir import check_out_dir, fresh_start

__all__ = ["register"]


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a discrete network (a searched genotype or a paper preset) from scratch",
        description="Retrain with SGD + poly lr: writes config.yaml, genotype.json, "
        "train_log.jsonl, tensorboard/ and checkpoints/best.pt + last.pt into --out.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--genotype", metavar="FILE", help="genotype.json from a search")
    which.add_argument("--model", metavar="NAME", help="auto-deeplab-s, auto-deeplab-m, ...-l")
    p.add_argument("--data", help="dataset spec, e.g. synthetic (default: the config's)")
    p.add_argument("--out", default="runs/train", help="run directory (default: runs/train)")
    p.add_argument("--config", help="YAML preset, e.g. configs/train/synthetic.yaml")
    p.add_argument("--iters", type=int, help="training iterations")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--crop", type=int, help="training crop size in pixels")
    p.add_argument("--seed", type=int, help="random seed")
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or alone: --out's checkpoints/last.pt",
    )
    again.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add_set(p, "train.lr=0.01")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="mIoU, per-class IoU and accuracies of a trained checkpoint",
        description="Evaluate a train checkpoint; writes metrics.json next to it (or to --out).",
    )
    p.add_argument("checkpoint", help="checkpoints/best.pt or last.pt of a train run")
    p.add_argument("--data", help="dataset spec (default: the one it was trained on)")
    p.add_argument("--split", default="val", help="dataset split (default: val)")
    add_inference_options(p, "default: the checkpoint's eval config")
    p.add_argument("--num-samples", type=int, help="evaluate on the first N images only")
    p.add_argument("--out", help="folder or .json path for metrics.json")
    p.set_defaults(func=_cmd_eval)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images: colour masks and overlays (PNG)",
        description="Writes <name>_mask.png (palette PNG of class indices) and "
        "<name>_overlay.png per image into --out.",
    )
    p.add_argument("checkpoint", help="checkpoints/best.pt of a train run")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--out", required=True, help="output folder")
    add_inference_options(p, "default: whole image, scale 1")
    p.set_defaults(func=_cmd_predict)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameters, Multi-Adds, stride path and cell of a model or genotype",
    )
    p.add_argument("target", metavar="MODEL_OR_GENOTYPE", help="auto-deeplab-s/m/l or a .json")
    p.add_argument(
        "--size", type=parse_size, default=(1025, 2049), help="input HxW (default: 1025x2049)"
    )
    p.add_argument("--classes", type=int, default=19, help="number of classes (default: 19)")
    p.add_argument(
        "--filter-multiplier", type=int, help="F (default: the preset's; 20 for a genotype)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_info)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="search, retrain the found network, evaluate it, and write report.md",
        description="The whole method on one folder: OUT/search, OUT/train, OUT/predictions "
        "and OUT/report.md. Defaults: the CPU presets (configs/search/synthetic.yaml and "
        "configs/train/synthetic.yaml), under 15 minutes on 2 cores.",
    )
    p.add_argument("--out", default="runs/run", help="run directory (default: runs/run)")
    p.add_argument("--data", help="dataset spec for both stages (default: the presets')")
    p.add_argument(
        "--search-config", help="search YAML (default: the CPU preset = configs/search/synthetic)"
    )
    p.add_argument(
        "--train-config", help="train YAML (default: the CPU preset = configs/train/synthetic)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="override a key of one stage, e.g. --set search.search.epochs=2 "
        "--set train.train.iters=50 (repeatable)",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue each stage from its newest checkpoint in --out (same flags as before)",
    )
    again.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _cmd_train(args: argparse.Namespace) -> int | Stopped:
    from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict, load_config
    from autodeeplab.engine.preflight import check_train_settings
    from autodeeplab.engine.train import run_train

    overrides = flag_overrides(
        args,
        (
            ("data", "data.spec"),
            ("iters", "train.iters"),
            ("batch_size", "train.batch_size"),
            ("crop", "data.crop"),
            ("seed", "train.seed"),
        ),
    )
    # --genotype and --model each replace whatever the config names.
    if args.genotype is not None:
        overrides += [f"model.genotype={json.dumps(args.genotype)}", "model.name=null"]
    if args.model is not None:
        overrides += [f"model.name={json.dumps(args.model)}", "model.genotype=null"]
    # Without --config the CPU preset applies, as for `search`, so the bare command finishes.
    base = TrainConfig() if args.config else config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    base = for_data(base, args.data)
    cfg = load_config(args.config, [*overrides, *args.set], base=base)
    out = Path(args.out)
    # Before any work: every setting the run would refuse, and a folder that holds a run.
    check_train_settings(cfg)
    replaced = check_out_dir(out, "train", bool(args.resume), args.overwrite)
    what = cfg.model.name or cfg.model.genotype
    print(
        f"training {what} on {cfg.data.spec} ({args.config or 'built-in CPU preset'}): "
        f"iters={cfg.train.iters} batch={cfg.train.batch_size} crop={cfg.data.crop} "
        f"lr={cfg.train.lr} -> {out}",
        file=sys.stderr,
    )
    with contextlib.nullcontext() if args.resume else fresh_start(out, replaced):
        result = run_train(cfg, out, resume=args.resume, progress=not args.no_progress)
    if result.stopped:  # SIGINT/SIGTERM: last.pt is written; say how to go on
        where, saved = f" at iteration {result.iterations}", f"saved {result.last_checkpoint}"
        return Stopped(where, saved, f"resume with: {resume_command('train', out)}")
    print(
        f"done in {result.seconds:.0f} s; best val mIoU {result.best_miou:.4f} at iteration "
        f"{result.best_iteration}; wrote {result.best_checkpoint}, {result.last_checkpoint}",
        file=sys.stderr,
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from autodeeplab.engine.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        split=args.split,
        mode=args.mode,
        scales=args.scales,
        flip=args.flip,
        window=args.window,
        stride=args.stride,
        num_samples=args.num_samples,
        device=args.device,
        out=args.out,
    )
    print(metrics["table"])
    print(
        f"{metrics['data']} {metrics['split']} ({metrics['num_images']} images, "
        f"{metrics['mode']}, scales {metrics['scales']}, flip {metrics['flip']}): "
        f"mIoU {pct(metrics['miou'])}  pixel acc {pct(metrics['pixel_acc'])}  "
        f"mean acc {pct(metrics['mean_acc'])}",
    )
    print(f"wrote {metrics['path']}", file=sys.stderr)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from autodeeplab.engine.predict import predict_images

    result = predict_images(
        args.checkpoint,
        args.images,
        args.out,
        device=args.device,
        mode=args.mode or "whole",
        scales=args.scales or (1.0,),
        flip=bool(args.flip),
        window=args.window,
        stride=args.stride,
    )
    for path in result.written:
        print(path)
    for message in result.errors:
        print(f"autodeeplab predict: error: {message}", file=sys.stderr)
    return 2 if result.errors else 0


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    from autodeeplab.data.transforms import IGNORE_INDEX as MAX_CLASSES
    from autodeeplab.genotype import load_genotype
    from autodeeplab.model import MODELS, build_model, count_multiply_adds, count_parameters

    if args.target in MODELS:
        target = args.target
    elif args.target.endswith(".json") or Path(args.target).exists():
        target = load_genotype(args.target)
    else:
        raise ValueError(
            f"{args.target!r} is neither a model ({', '.join(MODELS)}) nor a genotype .json file"
        )
    if not 1 <= args.classes <= MAX_CLASSES:
        raise ValueError(
            f"--classes {args.classes}: give 1 to {MAX_CLASSES} (labels are 8-bit, "
            f"{MAX_CLASSES} is the ignore index)"
        )
    if args.filter_multiplier is not None and not 1 <= args.filter_multiplier <= 4096:
        raise ValueError(f"--filter-multiplier {args.filter_multiplier}: give 1 to 4096")
    # On the meta device: counting needs the shapes only, so no size or width allocates.
    with torch.device("meta"):
        model = build_model(target, args.classes, filter_multiplier=args.filter_multiplier)
    genotype = model.genotype
    height, width = args.size
    info = {
        "model": args.target,
        "filter_multiplier": model.filter_multiplier,
        "num_classes": args.classes,
        "parameters": count_parameters(model),
        "multiply_adds": count_multiply_adds(model, (height, width)),
        "size": [height, width],
        "output_stride": model.output_stride,
        "path": list(genotype.path),
        "strides": list(genotype.strides),
        "cell": [[[op, inp] for op, inp in block] for block in genotype.cell],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    inputs = {0: "H^{l-2}", 1: "H^{l-1}"}
    rows = [
        ("model", args.target),
        ("filter multiplier F", str(info["filter_multiplier"])),
        ("classes", str(args.classes)),
        ("parameters", f"{info['parameters']:,} ({info['parameters'] / 1e6:.2f} M)"),
        ("Multi-Adds", f"{info['multiply_adds'] / 1e9:.2f} B at {height}x{width}"),
        ("ASPP output stride", str(info["output_stride"])),
        ("path (stride/layer)", " ".join(str(s) for s in genotype.strides)),
    ]
    for i, block in enumerate(genotype.cell):
        branches = " + ".join(f"{op}({inputs.get(inp, f'block {inp - 1}')})" for op, inp in block)
        rows.append((f"cell block {i}", branches))
    width_key = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width_key}}  {value}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int | Stopped:
    from autodeeplab.config import (
        CPU_SEARCH_PRESET,
        CPU_TRAIN_PRESET,
        SearchConfig,
        TrainConfig,
        config_from_dict,
        load_config,
    )
    from autodeeplab.data import dataset_info
    from autodeeplab.engine.pipeline import run_pipeline, split_overrides
    from autodeeplab.engine.preflight import (
        check_search_settings,
        check_train_settings,
        placeholder_genotype,
    )

    routed = split_overrides(args.set)
    data = [f"data.spec={json.dumps(args.data)}"] if args.data else []
    # A given file replaces the built-in CPU preset (configs/{search,train}/synthetic.yaml).
    search_base = (
        SearchConfig()
        if args.search_config
        else config_from_dict(CPU_SEARCH_PRESET, SearchConfig())
    )
    train_base = (
        TrainConfig() if args.train_config else config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    )
    search_base = for_data(search_base, args.data)
    train_base = for_data(train_base, args.data)
    search_cfg = load_config(args.search_config, [*data, *routed["search"]], base=search_base)
    train_cfg = load_config(args.train_config, [*data, *routed["train"]], base=train_base)
    num_classes = dataset_info(search_cfg.data.spec).num_classes  # a bad --data fails here
    out = Path(args.out)
    # Both stages' settings before the search starts: a bad training option must not wait
    # for the whole search to fail. The decoded genotype is checked for its size only.
    check_search_settings(search_cfg)
    m = search_cfg.model
    check_train_settings(train_cfg, placeholder_genotype(m.num_layers, m.num_blocks))
    replaced = check_out_dir(out, "run", args.resume, args.overwrite)
    print(
        f"run on {search_cfg.data.spec} -> {out}: search "
        f"{args.search_config or 'built-in CPU preset'}, train "
        f"{args.train_config or 'built-in CPU preset'}",
        file=sys.stderr,
    )
    print_search_memory(search_cfg, num_classes)
    with contextlib.nullcontext() if args.resume else fresh_start(out, replaced):
        result = run_pipeline(
            search_cfg, train_cfg, out, progress=not args.no_progress, resume=args.resume
        )
    if result.stopped:  # SIGINT/SIGTERM: the stage wrote a checkpoint; say how to go on
        where, saved = f" in the {result.stopped} stage", f"checkpoints are in {out}"
        return Stopped(where, saved, "resume with the same command plus --resume")
    if arch_never_updated(out / "search"):
        warn_untrained_genotype("run", "the retrained network")
    print(
        f"done in {result.seconds:.0f} s; val mIoU {pct(result.miou)} % "
        f"(chance {pct(result.chance_miou)} %); wrote {result.report}",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_train(sub)
    _add_eval(sub)
    _add_predict(sub)
    _add_info(sub)
    _add_run(sub)
