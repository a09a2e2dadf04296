"""Subcommands of the retrain stage: train, eval and predict."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

from autodeeplab.cli.arguments import (
    add_again_options,
    add_command,
    add_inference_options,
    add_set,
    add_stage_options,
    inference_changes,
    stage_overrides,
)
from autodeeplab.cli.messages import Stopped, pct, resume_command
from autodeeplab.cli.outdir import dataset_path
from autodeeplab.cli.stage import run_stage, stage_config, stage_exit

__all__ = ["register"]


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "train", _cmd_train)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--genotype", metavar="FILE", help="genotype.json from a search")
    which.add_argument("--model", metavar="NAME", help="auto-deeplab-s, auto-deeplab-m, ...-l")
    add_stage_options(p, "train")
    add_again_options(p, "train")
    add_set(p, "train.lr=0.01")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "eval", _cmd_eval)
    p.add_argument("checkpoint", help="checkpoints/best.pt or last.pt of a train run")
    p.add_argument("--data", help="dataset spec (default: the one it was trained on)")
    p.add_argument("--split", default="val", help="dataset split (default: val)")
    add_inference_options(p, "default: the checkpoint's eval config")
    p.add_argument("--num-samples", type=int, help="evaluate on the first N images only")
    p.add_argument("--out", help="folder or .json path for metrics.json")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "predict", _cmd_predict)
    p.add_argument("checkpoint", help="checkpoints/best.pt of a train run")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--out", required=True, help="output folder")
    add_inference_options(p, "default: whole image, scale 1")


def _cmd_train(args: argparse.Namespace) -> int | Stopped:
    """train a discrete network (a searched genotype or a paper preset) from scratch

    Retrain with SGD + poly lr: writes config.yaml, genotype.json, train_log.jsonl, tensorboard/ and
    checkpoints/best.pt + last.pt into --out.
    """
    from autodeeplab.engine.preflight import check_train_resume, check_train_settings
    from autodeeplab.engine.train.loop import run_train

    overrides = stage_overrides(args, "train")
    # --genotype and --model each replace whatever the config names.
    if args.genotype is not None:
        overrides += [f"model.genotype={json.dumps(args.genotype)}", "model.name=null"]
    if args.model is not None:
        overrides += [f"model.name={json.dumps(args.model)}", "model.genotype=null"]
    cfg = stage_config("train", args.config, args.data, [*overrides, *args.set])
    out = Path(args.out)
    # Before any work: every setting the run would refuse (a resume: the run's genotype copy).
    check_train_settings(cfg, resume_dir=out if args.resume else None)
    header = (
        f"training {cfg.model.name or cfg.model.genotype} on {cfg.data.spec} "
        f"({args.config or 'built-in CPU preset'}): iters={cfg.train.iters} "
        f"batch={cfg.train.batch_size} crop={cfg.data.crop} lr={cfg.train.lr} -> {out}"
    )
    resumable = partial(check_train_resume, cfg, out, args.resume)
    inputs = [("config file", args.config), ("genotype file", cfg.model.genotype)]
    inputs.append(("dataset", dataset_path(cfg.data.spec)))
    job = partial(run_train, cfg)
    result = run_stage(args, "train", header, job, check_resume=resumable, inputs=inputs)
    how = f"resume with: {resume_command('train', out)}"  # stopped: last.pt is written
    return stage_exit(
        result,
        lambda r: Stopped(f" at iteration {r.iterations}", f"saved {r.last_checkpoint}", how),
        lambda r: (
            f"done in {r.seconds:.0f} s; best val mIoU {r.best_miou:.4f} at iteration "
            f"{r.best_iteration}; wrote {r.best_checkpoint}, {r.last_checkpoint}"
        ),
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    """mIoU, per-class IoU and accuracies of a trained checkpoint

    Evaluate a train checkpoint; writes metrics.json next to it (or to --out).
    """
    from autodeeplab.config.checks import RANGES
    from autodeeplab.engine.infer.evaluate import evaluate_checkpoint

    low, high = (int(v) for v in RANGES["val_samples"])  # as many as a validation set may hold
    if args.num_samples is not None and not low <= args.num_samples <= high:
        raise ValueError(f"--num-samples {args.num_samples}: give {low} to {high:,} images")
    metrics = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        split=args.split,
        changes=inference_changes(args),
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
    """segment images: colour masks and overlays (PNG)

    Writes <name>_mask.png (palette PNG of class indices) and <name>_overlay.png per image into
    --out.
    """
    from autodeeplab.config import EvalConfig
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
    eval_cfg = replace(EvalConfig(), **inference_changes(args))  # whole image, scale 1
    result = predict_images(args.checkpoint, args.images, args.out, eval_cfg, device=args.device)
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
