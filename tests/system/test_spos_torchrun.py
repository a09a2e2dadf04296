"""The single-path search under torchrun: two gloo ranks on CPU draw the same sub-network at
every step (from the seed and the step alone), so their gradients all-reduce over the same
parameters and their replicas stay bitwise equal.

The two-process run happens once, with this file as the torchrun script: each rank records
the sub-networks it drew and its final tensors outside the run folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from autodeeplab.config import load_config

WORLD = 2
SEARCH = (
    "model.num_layers=3",
    "model.num_blocks=2",
    "model.filter_multiplier=2",
    "model.strides=[4,8]",
    "data.crop=32",
    "data.train_samples=8",
    "data.val_samples=4",
    "search.strategy=spos",
    "search.decode_candidates=2",
    "search.epochs=2",
    "search.batch_size=2",  # global: one image per rank
    "search.tensorboard=false",
    "search.device=cpu",
)


def _worker(base: Path) -> None:
    """One torchrun rank: a spos search, recording each sub-network drawn and the weights."""
    from autodeeplab.engine.search.loop import run_search
    from autodeeplab.engine.search.strategies.spos import SinglePathOneShot

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    drawn: list[list] = []
    models: list[torch.nn.Module] = []
    sample, init = SinglePathOneShot.sample, SinglePathOneShot.__init__

    def recorded_sample(self, step):
        genotype = sample(self, step)
        drawn.append([step, genotype.to_dict()])
        return genotype

    def recorded_init(self, model, *args, **kwargs):
        init(self, model, *args, **kwargs)
        models.append(model)

    SinglePathOneShot.sample = recorded_sample  # type: ignore[method-assign]
    SinglePathOneShot.__init__ = recorded_init  # type: ignore[method-assign]
    own = "" if rank == 0 else f".rank{rank}"  # folders of rank > 0 must never appear
    result = run_search(load_config(None, list(SEARCH)), base / f"search{own}", progress=False)
    torch.save(models[-1].state_dict(), base / f"state_rank{rank}.pt")
    record = {"drawn": drawn, "genotype": result.genotype.to_dict()}
    (base / f"drawn_rank{rank}.json").write_text(json.dumps(record))


@pytest.mark.distributed
@pytest.mark.slow
def test_every_rank_trains_the_same_sub_networks(tmp_path: Path) -> None:
    # Imported here: this file is also each rank's script, run where tests/ is not on the path.
    from conftest import run_torchrun

    run_torchrun(__file__, tmp_path, WORLD, timeout=600)
    ranks = [json.loads((tmp_path / f"drawn_rank{r}.json").read_text()) for r in range(WORLD)]
    # 2 epochs of 4 steps (one image per rank, 8 training images), plus the fixed validation
    # paths and the decode's scores, which draw no training step.
    steps = [s for s, _ in ranks[0]["drawn"] if s >= 0]
    assert steps == list(range(8))
    assert ranks[0] == ranks[1]  # the same sub-networks, in the same order, and the result
    a, b = (torch.load(tmp_path / f"state_rank{r}.pt") for r in range(WORLD))
    assert a.keys() == b.keys()
    for name, tensor in a.items():  # weights, path edges, and the BN statistics
        assert torch.equal(tensor, b[name]), name
    assert (tmp_path / "search" / "genotype.json").is_file()
    assert not (tmp_path / "search.rank1").exists()


if __name__ == "__main__":  # one rank of the torchrun above
    _worker(Path(sys.argv[1]))
