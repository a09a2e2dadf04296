"""The device plumbing: which torch.compile backend a ``compile`` option names."""

from __future__ import annotations

import pytest

from autodeeplab.engine.device import compile_backend


@pytest.mark.parametrize(
    ("value", "backend"),
    [(False, None), ("off", None), (True, "inductor"), ("inductor", "inductor"),
     ("aot_eager", "aot_eager")],
)  # fmt: skip
def test_compile_backend_names(value: bool | str, backend: str | None) -> None:
    assert compile_backend(value, "train.compile") == backend


def test_an_unknown_backend_is_refused_by_key() -> None:
    with pytest.raises(ValueError, match=r"train.compile='inductr' is not a torch.compile"):
        compile_backend("inductr", "train.compile")
