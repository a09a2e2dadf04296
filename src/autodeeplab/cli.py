"""The ``autodeeplab`` command line: search, decode (and, as they land, train/eval/...).

Every user error ends as one line on stderr and exit status 2; nothing already written
is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="architecture search on a dataset (default: the built-in synthetic data)",
        description="Hierarchical architecture search: writes genotype.json, search_log.jsonl, "
        "checkpoints/ and the path and cell figures into --out.",
    )
    p.add_argument("--data", help="dataset spec, e.g. synthetic (default: the config's)")
    p.add_argument("--out", default="runs/search", help="run directory (default: runs/search)")
    p.add_argument("--config", help="YAML preset, e.g. configs/search/paper.yaml")
    p.add_argument("--epochs", type=int, help="search epochs")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--crop", type=int, help="crop (image) size in pixels")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument(
        "--target-madds",
        metavar="BUDGET@HxW",
        help="cost-aware search: pull the found network (at retrain F=20) toward this "
        "Multi-Adds budget, e.g. 50G@1024x2048",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or alone: the newest complete checkpoint in --out",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set model.num_layers=8 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="decode the genotype of a search checkpoint")
    p.add_argument("checkpoint", help="a checkpoints/epoch_*.pt file of a search run")
    p.add_argument("--out", help="write the genotype JSON here (and the figures beside it)")
    p.set_defaults(func=_cmd_decode)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = data_sub.add_parser(
        "check",
        help="scan a dataset and report counts, sizes, class histogram and every problem",
        description="Exit status 1 when a problem is found, each reported with its file.",
    )
    check.add_argument("spec", help="dataset spec, e.g. folder:data/msrc21 or cityscapes:PATH")
    check.add_argument("--split", action="append", help="split to check (repeatable; default: all)")
    check.add_argument("--max-files", type=int, help="check at most N pairs per split")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=_cmd_data_check)


def _cmd_data_check(args: argparse.Namespace) -> int:
    from autodeeplab.data.check import check_dataset

    report = check_dataset(args.spec, args.split, max_files=args.max_files)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


def _cmd_search(args: argparse.Namespace) -> int:
    from autodeeplab.config import CPU_SEARCH_PRESET, SearchConfig, config_from_dict, load_config
    from autodeeplab.data import dataset_info
    from autodeeplab.engine.search import run_search

    overrides = []
    for flag, key in (
        ("data", "data.spec"),
        ("epochs", "search.epochs"),
        ("batch_size", "search.batch_size"),
        ("crop", "data.crop"),
        ("seed", "search.seed"),
        ("target_madds", "search.target_madds"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    # Without --config the CPU preset applies, so the bare command finishes on a laptop.
    base = None if args.config else config_from_dict(CPU_SEARCH_PRESET, SearchConfig())
    cfg = load_config(args.config, [*overrides, *args.set], base=base)
    dataset_info(cfg.data.spec)  # a bad --data fails here, before anything is printed
    out = Path(args.out)
    config_note = args.config or "built-in CPU preset"
    print(
        f"searching on {cfg.data.spec} ({config_note}): L={cfg.model.num_layers} "
        f"B={cfg.model.num_blocks} F={cfg.model.filter_multiplier} crop={cfg.data.crop} "
        f"batch={cfg.search.batch_size} epochs={cfg.search.epochs} -> {out}",
        file=sys.stderr,
    )
    result = run_search(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(result.genotype.to_json(), end="")
    print(
        f"done in {result.seconds:.0f} s; val mIoU {result.val_miou:.3f}; wrote "
        f"{out / 'genotype.json'}, {out / 'genotype_path.png'}, {out / 'genotype_cell.png'}",
        file=sys.stderr,
    )
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from autodeeplab.engine.search import decode_checkpoint
    from autodeeplab.genotype import save_genotype

    genotype, meta = decode_checkpoint(args.checkpoint)
    print(genotype.to_json(), end="")
    if args.out:
        from autodeeplab.viz import render_genotype

        out = Path(args.out)
        save_genotype(genotype, out)
        render_genotype(
            genotype, out.parent, beta=meta["beta_weights"].numpy(), prefix=f"{out.stem}_"
        )
        print(f"wrote {out} (epoch {meta['epoch']})", file=sys.stderr)
    return 0


# --- train / eval / predict / info / run ------------------------------------------------------


def _add_set(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override any config key, e.g. --set {example} (repeatable)",
    )


def _scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated numbers, e.g. 0.5,0.75,1,1.25"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: scales must be positive numbers")
    return values


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 1025x2049, or one side")
    return (values[0], values[-1])


def _add_inference_options(p: argparse.ArgumentParser, defaults: str) -> None:
    p.add_argument("--mode", choices=("whole", "slide"), help=f"inference mode ({defaults})")
    p.add_argument(
        "--scales",
        type=_scales,
        metavar="S1,S2,...",
        help=f"multi-scale inference, e.g. 0.5,0.75,1,1.25,1.5,1.75 ({defaults})",
    )
    p.add_argument(
        "--flip", action="store_true", default=None, help="also average the mirrored image"
    )
    p.add_argument("--window", type=int, help="sliding-window size (default: the training crop)")
    p.add_argument("--stride", type=int, help="sliding-window step (default: 2/3 of the window)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


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
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or alone: --out's checkpoints/last.pt",
    )
    _add_set(p, "train.lr=0.01")
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
    _add_inference_options(p, "default: the checkpoint's eval config")
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
    _add_inference_options(p, "default: whole image, scale 1")
    p.set_defaults(func=_cmd_predict)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameters, Multi-Adds, stride path and cell of a model or genotype",
    )
    p.add_argument("target", metavar="MODEL_OR_GENOTYPE", help="auto-deeplab-s/m/l or a .json")
    p.add_argument(
        "--size", type=_size, default=(1025, 2049), help="input HxW (default: 1025x2049)"
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
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _flag_overrides(args: argparse.Namespace, mapping: tuple[tuple[str, str], ...]) -> list[str]:
    overrides = []
    for flag, key in mapping:
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    return overrides


def _cmd_train(args: argparse.Namespace) -> int:
    from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict, load_config
    from autodeeplab.engine.train import run_train

    overrides = _flag_overrides(
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
    cfg = load_config(args.config, [*overrides, *args.set], base=base)
    out = Path(args.out)
    what = cfg.model.name or cfg.model.genotype
    print(
        f"training {what} on {cfg.data.spec} ({args.config or 'built-in CPU preset'}): "
        f"iters={cfg.train.iters} batch={cfg.train.batch_size} crop={cfg.data.crop} "
        f"lr={cfg.train.lr} -> {out}",
        file=sys.stderr,
    )
    result = run_train(cfg, out, resume=args.resume, progress=not args.no_progress)
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
        f"mIoU {_pct(metrics['miou'])}  pixel acc {_pct(metrics['pixel_acc'])}  "
        f"mean acc {_pct(metrics['mean_acc'])}",
    )
    print(f"wrote {metrics['path']}", file=sys.stderr)
    return 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


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
    if args.classes < 1:
        raise ValueError(f"--classes must be positive, got {args.classes}")
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


def _cmd_run(args: argparse.Namespace) -> int:
    from autodeeplab.config import (
        CPU_SEARCH_PRESET,
        CPU_TRAIN_PRESET,
        SearchConfig,
        TrainConfig,
        config_from_dict,
        load_config,
    )
    from autodeeplab.engine.pipeline import run_pipeline, split_overrides

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
    search_cfg = load_config(args.search_config, [*data, *routed["search"]], base=search_base)
    train_cfg = load_config(args.train_config, [*data, *routed["train"]], base=train_base)
    out = Path(args.out)
    print(
        f"run on {search_cfg.data.spec} -> {out}: search "
        f"{args.search_config or 'built-in CPU preset'}, train "
        f"{args.train_config or 'built-in CPU preset'}",
        file=sys.stderr,
    )
    result = run_pipeline(search_cfg, train_cfg, out, progress=not args.no_progress)
    print(
        f"done in {result.seconds:.0f} s; val mIoU {_pct(result.miou)} % "
        f"(chance {_pct(result.chance_miou)} %); wrote {result.report}",
        file=sys.stderr,
    )
    return 0


# --- export / report ---------------------------------------------------------------------------


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained network to ONNX or TorchScript, checked against PyTorch",
        description="Writes the file only if its output matches eager PyTorch on random "
        "input (max abs difference <= 1e-4 + 1e-5 * max |logit|, or within PyTorch's own "
        "float32 rounding); exit status 2 otherwise.",
    )
    p.add_argument("checkpoint", help="checkpoints/best.pt or last.pt of a train run")
    p.add_argument(
        "--format", choices=("onnx", "torchscript"), default="onnx", help="(default: onnx)"
    )
    p.add_argument(
        "--size", type=_size, metavar="HxW", help="traced input size (default: the training crop)"
    )
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--out", help="output file (default: beside the checkpoint)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.add_argument(
        "--dynamo", action="store_true", help="ONNX: torch.export-based exporter (needs onnxscript)"
    )
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from autodeeplab.export import export_model

    result = export_model(
        args.checkpoint,
        args.out,
        format=args.format,
        size=args.size,
        dynamic=args.dynamic,
        check=not args.no_check,
        dynamo=args.dynamo,
    )
    print(result.describe())
    print(f"wrote {result.path}", file=sys.stderr)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="report of a search run: alpha, beta, path and curves over the epochs",
        description="Reads RUN_DIR/search_log.jsonl; writes RUN_DIR/report_search.md, "
        "report_search.html and the figures in RUN_DIR/report_search/.",
    )
    p.add_argument("run_dir", help="the --out folder of an 'autodeeplab search' run")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from autodeeplab.engine.search_report import render_search_report

    print(render_search_report(args.run_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from autodeeplab import __version__

    parser = argparse.ArgumentParser(
        prog="autodeeplab",
        description="Auto-DeepLab: hierarchical architecture search for semantic segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"autodeeplab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_search(sub)
    _add_decode(sub)
    _add_data(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_predict(sub)
    _add_info(sub)
    _add_run(sub)
    _add_export(sub)
    _add_report(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autodeeplab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from autodeeplab.checkpoint import CheckpointError
    from autodeeplab.distributed import cleanup, get_rank

    rank, err = get_rank(), sys.stderr  # torchrun's RANK; 0 in a plain run
    name = f"autodeeplab {args.command}" + (f" (rank {rank})" if rank else "")
    with contextlib.ExitStack() as quiet:
        if rank:  # under torchrun only rank 0 prints; every rank's errors still do
            devnull = quiet.enter_context(open(os.devnull, "w"))
            quiet.enter_context(contextlib.redirect_stdout(devnull))
            quiet.enter_context(contextlib.redirect_stderr(devnull))
        try:
            code = int(args.func(args) or 0)
        except (ValueError, FileNotFoundError, CheckpointError, OSError) as exc:
            print(f"{name}: error: {exc}", file=err)
            return 2
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=err)
            return 130
    cleanup()  # leave torchrun's process group, if a command joined one
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
