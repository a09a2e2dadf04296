"""Search and training under torchrun: two gloo processes on CPU against one process.

The two-process runs happen once, in ``_torchrun`` (this file run as a torchrun script).
Each rank records its final tensors outside the run folders, and rank 1 is given run
folders of its own, which must stay absent: only rank 0 writes, and rank 0 alone decides
what to resume (so a run needs no shared disk).

BatchNorm and the single-process reference: with plain BN a rank normalises over its own
slice of the global batch, so one process with the whole batch is not the right reference
(SyncBatchNorm would make it one, but PyTorch has no CPU kernel for it). The reference here
is one process whose network, in training mode, runs each rank's slice of the batch as a
separate forward and concatenates the logits: the same BN statistics as the ranks, and the
same loss (mean over the global batch's valid pixels). Weights, alpha and beta must then
agree to float rounding. The retraining test gives each rank two images: with one, the ASPP
image-pooling BN falls back to its running statistics in training, and those follow DDP's
rank-0 broadcast rather than the reference's two sequential updates.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autodeeplab.checkpoint import load_checkpoint
from autodeeplab.config import TrainConfig, load_config
from autodeeplab.distributed import (
    all_reduce_mean,
    broadcast_object,
    call_on_main,
    check_same_across_ranks,
    init_distributed,
    rank_indices,
    sharded_mean,
    torchrun_env,
)
from autodeeplab.engine.guards import StopRequest
from autodeeplab.engine.logs import read_jsonl
from autodeeplab.engine.search import loop as search_engine
from autodeeplab.engine.search.sampling import EpochSampler
from autodeeplab.engine.train import loop as train_engine
from autodeeplab.engine.train.loop import BatchSchedule
from autodeeplab.genotype import Genotype, load_genotype
from autodeeplab.metrics import ConfusionMatrix
from conftest import (
    TINY_SEARCH_OVERRIDES,
    TINY_TRAIN_OVERRIDES,
    free_port,
    launch_env,
    run_torchrun,
    set_flags,
)

WORLD = 2
# The shared tiny search (2 epochs; search.batch_size=2 is global: one image per rank);
# strides up to 8 because the search needs the coarsest level at least 3x3: at crop 32
# stride 8 is 4x4.
SEARCH = TINY_SEARCH_OVERRIDES
# The shared tiny retraining, without dropout (each rank draws its own masks, one process
# draws others), with two images per rank. The random rescale pads crops with ignored
# pixels, so the ranks count different numbers of pixels in their loss.
TRAIN = (
    *TINY_TRAIN_OVERRIDES,
    "model.dropout=0.0",
    "data.crop=64",  # at 32 px the stride-32 BN sees 2 values per rank, and training blows up
    "train.batch_size=4",
)
CLI_SEARCH = [
    "search", "--no-progress", "--epochs", "1", "--batch-size", "2", "--crop", "32",
    *set_flags(kv for kv in SEARCH if kv.startswith(("model.", "data.train", "data.val"))),
    "--set", "search.tensorboard=false", "--set", "search.device=cpu",
]  # fmt: skip


def _search_config():
    return load_config(None, list(SEARCH))


def _train_config():
    return load_config(None, list(TRAIN), base=TrainConfig())


# --- helpers in one process ------------------------------------------------------------------


def test_torchrun_environment_is_read(monkeypatch):
    for name, value in (("RANK", "3"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    env = torchrun_env()
    assert (env.rank, env.world_size, env.local_rank) == (3, 8, 1)
    assert (env.master_addr, env.master_port) == ("10.0.0.1", 29500)
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(ValueError, match="RANK=8 and WORLD_SIZE=8"):
        torchrun_env()


def test_helpers_are_identities_in_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, None, True)
    assert info.device == torch.device("cpu") and not torch.distributed.is_initialized()
    x = torch.tensor([1.0, 2.0])
    assert all_reduce_mean([x])[0] is x and x.tolist() == [1.0, 2.0]
    assert broadcast_object({"a": 1}) == {"a": 1} and call_on_main(lambda: 7) == 7
    assert float(sharded_mean(torch.tensor(6.0), torch.tensor(4))) == 1.5
    assert rank_indices(5) == range(5)
    check_same_across_ranks([x], "x")


def test_epoch_sampler_shards_are_the_slices_of_one_process_batches():
    n, seed, b = 13, 4, 2
    whole = EpochSampler(n, seed)
    shards = [EpochSampler(n, seed, rank, 3, b) for rank in range(3)]
    for s in (whole, *shards):
        s.set_epoch(2, cycle=1)
    order = list(whole)
    parts = [list(s) for s in shards]
    assert len(whole) == n and [len(s) for s in shards] == [2 * b] * 3  # 13 // 6 batches of 6
    for t in range(2):  # global batch t = rank 0's slice, then rank 1's, then rank 2's
        assert sum((p[t * b : (t + 1) * b] for p in parts), []) == order[6 * t : 6 * t + 6]


def test_batch_schedule_shards_keep_images_and_augmentation_keys():
    whole = list(BatchSchedule(9, 4, seed=1, start=2, total=6))
    ranks = [list(BatchSchedule(9, 4, 1, 2, 6, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == whole
    with pytest.raises(ValueError, match="cannot be shared by 3 processes"):
        BatchSchedule(9, 4, 1, 0, 6, rank=0, world_size=3)


# --- two processes ---------------------------------------------------------------------------


def _worker(base: Path) -> None:
    """One torchrun rank: search, search stopped and resumed, train, and the CLI."""
    from autodeeplab.cli import main
    from autodeeplab.engine.search.loop import run_search
    from autodeeplab.engine.train.loop import run_train

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    own = "" if rank == 0 else f".rank{rank}"  # folders of rank > 0 must never appear
    nets, models = _recording()

    run_search(_search_config(), base / f"search{own}", progress=False)
    torch.save(nets[-1].state_dict(), base / f"search_rank{rank}.pt")
    run_search(_search_config(), base / f"resumed{own}", progress=False, stop_after=1)
    run_search(_search_config(), base / f"resumed{own}", progress=False, resume=True)
    torch.save(nets[-1].state_dict(), base / f"resumed_rank{rank}.pt")
    run_train(_train_config(), base / f"train{own}", progress=False)
    torch.save(models[-1].state_dict(), base / f"train_rank{rank}.pt")
    (base / f"helpers_rank{rank}.json").write_text(json.dumps(_helpers(rank)))

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([*CLI_SEARCH, "--out", str(base / f"cli{own}")])  # leaves the group
    (base / f"cli_rank{rank}.json").write_text(json.dumps([code, printed.getvalue()]))


def _helpers(rank: int) -> dict[str, object]:
    """What the helpers give on this rank of a live two-process group."""
    found: dict[str, object] = {"broadcast": broadcast_object(f"from {rank}")}
    x = torch.tensor([1.0, 2.0 + rank])
    found["mean"] = all_reduce_mean([x.clone()])[0].tolist()
    count = torch.tensor(10 * (rank + 1))  # ranks count 10 and 20 pixels: global mean 1/30
    found["share"] = float(sharded_mean(torch.tensor(3.0 + rank), count))
    found["indices"] = list(rank_indices(5))
    # Confusion matrices: rank 0 sees pixels (pred, target) (0,0) (1,0); rank 1 sees (1,1) x2.
    cm = ConfusionMatrix(2)
    if rank == 0:
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    else:
        cm.update(torch.tensor([1, 1]), torch.tensor([1, 1]))
    cm.all_reduce()
    found["confusion"] = cm.matrix.tolist()
    # A stop signal that only rank 1 receives: every rank must stop after the same step.
    with StopRequest() as stop:
        found["stop_before"] = stop.should_stop(torch.device("cpu"))
        if rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        found["stop_seen"] = stop.requested
        found["stop_after"] = stop.should_stop(torch.device("cpu"))
    for name, call in (
        ("diverged", lambda: check_same_across_ranks([x], "x")),
        ("raised", lambda: call_on_main(lambda: 1 // 0)),
    ):
        try:
            call()
            found[name] = None
        except (RuntimeError, ZeroDivisionError) as exc:
            found[name] = f"{type(exc).__name__}: {exc}"
    return found


_SEARCH_NETWORK, _BUILD_TRAIN_MODEL = search_engine.SearchNetwork, train_engine.build_train_model


def _recording(search_chunk: int | None = None, train_chunk: int | None = None):
    """Patch the engines to record the networks they build (and, with a chunk size, to run
    the training forward on slices of that many images, like one rank each)."""
    nets, models = [], []

    def chunked(model: torch.nn.Module, chunk: int | None) -> None:
        if chunk is None:
            return
        plain = model.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            if not model.training:
                return plain(x)
            return torch.cat([plain(part) for part in x.split(chunk)])

        model.forward = forward

    class Recorded(_SEARCH_NETWORK):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            chunked(self, search_chunk)
            nets.append(self)

    def build_recorded(cfg, num_classes):
        model = _BUILD_TRAIN_MODEL(cfg, num_classes)
        chunked(model, train_chunk)
        models.append(model)
        return model

    search_engine.SearchNetwork = Recorded
    train_engine.build_train_model = build_recorded
    return nets, models


@pytest.fixture(scope="module")
def torchrun_base(tmp_path_factory) -> Path:
    """The folder of one two-process run of :func:`_worker`."""
    base = tmp_path_factory.mktemp("torchrun")
    run_torchrun(__file__, base, WORLD, timeout=300)
    return base


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    """One process, global batch, each rank's slice run as its own forward."""
    base = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        nets, models = _recording(search_chunk=1, train_chunk=2)  # the per-rank batches
        search_engine.run_search(_search_config(), base / "search", progress=False)
        train_engine.run_train(_train_config(), base / "train", progress=False)
    finally:
        search_engine.SearchNetwork = _SEARCH_NETWORK
        train_engine.build_train_model = _BUILD_TRAIN_MODEL
        torch.set_num_threads(threads)
    return {"search": nets[-1].state_dict(), "train": models[-1].state_dict()}


def _params(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trained tensors: all but the BN statistics (which only validation reads)."""
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in state.items() if not k.endswith(stats)}


@pytest.mark.distributed
@pytest.mark.parametrize("what", ["search", "resumed", "train"])
@pytest.mark.slow
def test_replicas_are_bitwise_identical(torchrun_base: Path, what: str) -> None:
    a = torch.load(torchrun_base / f"{what}_rank0.pt")
    b = torch.load(torchrun_base / f"{what}_rank1.pt")
    for name, tensor in _params(a).items():
        assert torch.equal(tensor, b[name]), name
    if what != "train":  # the architecture: NNI#5013's failure mode
        assert torch.equal(a["alpha"], b["alpha"]) and torch.equal(a["beta"], b["beta"])


@pytest.mark.distributed
@pytest.mark.parametrize("what", ["search", "train"])
@pytest.mark.slow
def test_two_processes_equal_one_with_the_global_batch(torchrun_base, reference, what) -> None:
    ranks = torch.load(torchrun_base / f"{what}_rank0.pt")
    ref = _params(reference[what])
    assert ref.keys() == _params(ranks).keys()
    for name, tensor in ref.items():
        torch.testing.assert_close(ranks[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    if what == "search":
        torch.testing.assert_close(ranks["alpha"], ref["alpha"], atol=1e-5, rtol=0)
        torch.testing.assert_close(ranks["beta"], ref["beta"], atol=1e-5, rtol=0)


@pytest.mark.distributed
@pytest.mark.slow
def test_only_rank_0_writes_and_its_run_folders_are_complete(torchrun_base: Path) -> None:
    names = sorted(p.name for p in torchrun_base.iterdir())
    assert not [n for n in names if ".rank" in n], names
    search = torchrun_base / "search"
    for name in ("config.yaml", "split.json", "genotype.json", "genotype_path.png"):
        assert (search / name).is_file(), name
    assert [r["epoch"] for r in read_jsonl(search / "search_log.jsonl")] == [1, 2]
    state = load_checkpoint(search / "checkpoints" / "epoch_0002.pt", "search")
    mine = torch.load(torchrun_base / "search_rank0.pt", weights_only=True)
    assert torch.equal(state["model"]["alpha"], mine["alpha"])
    train = torchrun_base / "train"
    assert {p.name for p in (train / "checkpoints").iterdir()} == {
        "best.pt",
        "last.pt",
        "latest.json",
    }
    last = load_checkpoint(train / "checkpoints" / "last.pt", "train")
    assert last["iteration"] == 4 and len(last["rng_ranks"]) == WORLD
    evals = [r for r in read_jsonl(train / "train_log.jsonl") if r["event"] == "eval"]
    assert [r["iter"] for r in evals] == [2, 4] and 0.0 <= evals[-1]["val_miou"] <= 1.0
    # The CLI under torchrun: both ranks succeed, only rank 0 prints the genotype.
    code0, out0 = json.loads((torchrun_base / "cli_rank0.json").read_text())
    code1, out1 = json.loads((torchrun_base / "cli_rank1.json").read_text())
    assert code0 == code1 == 0 and out1 == ""
    # genotype.json also records how it was searched (its "search" object); stdout does not.
    assert Genotype.from_json(out0) == load_genotype(torchrun_base / "cli" / "genotype.json")


@pytest.mark.distributed
@pytest.mark.slow
def test_helpers_in_a_live_process_group(torchrun_base: Path) -> None:
    found = [json.loads((torchrun_base / f"helpers_rank{r}.json").read_text()) for r in (0, 1)]
    assert [f["broadcast"] for f in found] == ["from 0", "from 0"]
    assert [f["mean"] for f in found] == [[1.0, 2.5], [1.0, 2.5]]
    # Shares 2 * 3/30 and 2 * 4/30 average to the global mean (3 + 4) / 30.
    assert [f["share"] for f in found] == pytest.approx([0.2, 8 / 30])
    assert [f["indices"] for f in found] == [[0, 2, 4], [1, 3]]
    # Both ranks hold the sum of both matrices (rows: target, columns: prediction).
    assert [f["confusion"] for f in found] == [[[1, 1], [0, 2]], [[1, 1], [0, 2]]]
    # Only rank 1 got the signal; both ranks agree to stop, neither stopped before it.
    assert [f["stop_seen"] for f in found] == [False, True]
    assert [f["stop_before"] for f in found] == [False, False]
    assert [f["stop_after"] for f in found] == [True, True]
    for f in found:
        assert f["diverged"].startswith("RuntimeError: x differ between ranks (1 of 2 ranks")
        assert f["raised"] == "ZeroDivisionError: integer division or modulo by zero"


@pytest.mark.distributed
@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_under_torchrun(torchrun_base: Path) -> None:
    a = load_checkpoint(torchrun_base / "search" / "checkpoints" / "epoch_0002.pt", "search")
    b = load_checkpoint(torchrun_base / "resumed" / "checkpoints" / "epoch_0002.pt", "search")
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    log_a = read_jsonl(torchrun_base / "search" / "search_log.jsonl")
    log_b = read_jsonl(torchrun_base / "resumed" / "search_log.jsonl")
    assert [strip(r) for r in log_a] == [strip(r) for r in log_b]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_node_rendezvous_as_the_readme_runs_it(tmp_path: Path) -> None:
    """README's multi-node command: one torchrun agent per node, --node-rank and
    --rdzv-endpoint, each node with its own --out folder (no shared disk)."""
    endpoint = f"127.0.0.1:{free_port()}"
    sets = [a for key in SEARCH for a in ("--set", key)]
    env = launch_env()
    nodes = []
    for node in (0, 1):
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node}",
            f"--rdzv-endpoint={endpoint}", "--nproc-per-node=1", "-m", "autodeeplab", "search",
            "--out", str(tmp_path / f"node{node}"), "--no-progress", *sets,
            "--set", "search.epochs=1",
        ]  # fmt: skip
        nodes.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [proc.communicate(timeout=300) for proc in nodes]
    for proc, (_, err) in zip(nodes, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-3000:]
    # Rank 0 (node 0) wrote the run; rank 1 wrote nothing, and printed no genotype.
    genotype = load_genotype(tmp_path / "node0" / "genotype.json")
    assert Genotype.from_json(outputs[0][0].decode()) == genotype
    assert not (tmp_path / "node1").exists() and outputs[1][0] == b""


if __name__ == "__main__":  # one rank of the torchrun in `torchrun_base`
    _worker(Path(sys.argv[1]))
