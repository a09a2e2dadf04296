"""``autodeeplab run``'s overrides: each goes to its stage, a bare key to the stage's loop."""

from __future__ import annotations

import pytest

from autodeeplab.config import (
    CPU_SEARCH_PRESET,
    CPU_TRAIN_PRESET,
    SearchConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)
from autodeeplab.engine.pipeline import split_overrides


def test_a_bare_key_names_the_stage_loop_and_the_long_spelling_still_works() -> None:
    routed = split_overrides(
        ["search.epochs=2", "search.search.lr=0.1", "train.batch_size=4", "search.num_layers=3"]
    )
    assert routed == {
        "search": ["search.epochs=2", "search.lr=0.1", "num_layers=3"],
        "train": ["train.batch_size=4"],
    }


def test_routed_keys_load_into_the_stage_config() -> None:
    routed = split_overrides(["search.epochs=2", "train.batch_size=4", "train.iters=7"])
    preset_search = config_from_dict(CPU_SEARCH_PRESET, SearchConfig())
    preset_train = config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    search = load_config(None, routed["search"], base=preset_search)
    train = load_config(None, routed["train"], base=preset_train)
    assert search.search.epochs == 2
    # batch_size is in both train and eval: the bare key is the training batch
    assert (train.train.batch_size, train.train.iters) == (4, 7)
    assert train.eval.batch_size == preset_train.eval.batch_size != 4


@pytest.mark.parametrize(
    "text", ["epochs=2", "model.num_layers=2", "search.epochs", "eval.flip=true"]
)
def test_a_key_without_its_stage_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="prefix the key with its stage"):
        split_overrides([text])
