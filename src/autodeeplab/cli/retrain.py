"""Subcommands of the retrain stage: train, eval and predict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autodeeplab.cli.arguments import (
    OVERWRITE_HELP,
    add_inference_options,
    add_set,
    flag_overrides,
    for_data,
)
from autodeeplab.cli.messages import (
    Stopped,
    pct,
    resume_command,
)
from autodeeplab.cli.outdir import check_out_dir, claim_out_dir, dataset_path

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


def _cmd_train(args: argparse.Namespace) -> int | Stopped:
    from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict, load_config
    from autodeeplab.engine.preflight import check_train_resume, check_train_settings
    from autodeeplab.engine.train.loop import run_train

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
    check_train_settings(cfg, resume_dir=out if args.resume else None)
    check_out_dir(out, "train", bool(args.resume), args.overwrite)
    what = cfg.model.name or cfg.model.genotype
    print(
        f"training {what} on {cfg.data.spec} ({args.config or 'built-in CPU preset'}): "
        f"iters={cfg.train.iters} batch={cfg.train.batch_size} crop={cfg.data.crop} "
        f"lr={cfg.train.lr} -> {out}",
        file=sys.stderr,
    )
    resumable = lambda: check_train_resume(cfg, out, args.resume)  # noqa: E731
    inputs = [("config file", args.config), ("genotype file", cfg.model.genotype)]
    inputs.append(("dataset", dataset_path(cfg.data.spec)))
    with claim_out_dir(out, "train", args.resume, args.overwrite, resumable, inputs=inputs):
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
    from autodeeplab.engine.infer.evaluate import evaluate_checkpoint

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
    from autodeeplab.engine.infer.predict import output_stems, predict_images
    from autodeeplab.files import check_outputs_spare_inputs

    out = Path(args.out)
    outputs = [
        ("--out", out / f"{stem}_{kind}.png")
        for stem in output_stems(args.images)
        for kind in ("mask", "overlay")
    ]
    inputs = [("checkpoint", args.checkpoint), *(("image", image) for image in args.images)]
    check_outputs_spare_inputs(outputs, inputs)
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_train(sub)
    _add_eval(sub)
    _add_predict(sub)
