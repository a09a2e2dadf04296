"""autodeeplab.viz.genotype: PNG validity, sizes, determinism, and that inputs change pixels."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from autodeeplab.genotype import PAPER_GENOTYPE, Genotype
from autodeeplab.viz.genotype import render_cell, render_genotype, render_path

PATH_PX = (1200, 500)  # 12 x 5 in at 100 dpi
CELL_PX = (1200, 600)  # 12 x 6 in at 100 dpi
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SMALL_CELL = ((("sep_conv_3x3", 0), ("skip_connect", 1)),)


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _valid_png(path, size: tuple[int, int]) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        assert im.size == size
    px = _pixels(path)
    assert px.std() > 10  # something was drawn, not a blank canvas
    return px


def _beta(num_layers: int, num_levels: int, seed: int = 0) -> np.ndarray:
    """Random transition probabilities, zero on edges that do not exist."""
    rng = np.random.default_rng(seed)
    beta = np.zeros((num_layers, num_levels, 3))
    for x in range(num_layers):
        for i in range(min(x, num_levels - 1) + 1):
            dirs = [d for d in (-1, 0, 1) if 0 <= i + d <= min(x + 1, num_levels - 1)]
            beta[x, i, [d + 1 for d in dirs]] = rng.dirichlet(np.ones(len(dirs)))
    return beta


def _no_temp_files(folder) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_paper_genotype_renders(tmp_path):
    path_png = render_path(PAPER_GENOTYPE, tmp_path / "path.png")
    cell_png = render_cell(PAPER_GENOTYPE, tmp_path / "cell.png")
    assert path_png == tmp_path / "path.png"
    assert cell_png == tmp_path / "cell.png"
    _valid_png(path_png, PATH_PX)
    _valid_png(cell_png, CELL_PX)
    _no_temp_files(tmp_path)


def test_same_genotype_gives_identical_pixels(tmp_path):
    a = render_path(PAPER_GENOTYPE, tmp_path / "a.png")
    b = render_path(PAPER_GENOTYPE, tmp_path / "b.png")
    assert np.array_equal(_pixels(a), _pixels(b))
    c = render_cell(PAPER_GENOTYPE, tmp_path / "c.png")
    d = render_cell(PAPER_GENOTYPE, tmp_path / "d.png")
    assert np.array_equal(_pixels(c), _pixels(d))


def test_different_paths_give_different_images(tmp_path):
    other = Genotype(PAPER_GENOTYPE.cell, (1, 2, 3, 3, 3, 2, 1, 0, 0, 1, 1, 0))
    a = _pixels(render_path(PAPER_GENOTYPE, tmp_path / "a.png"))
    b = _pixels(render_path(other, tmp_path / "b.png"))
    changed = np.any(a != b, axis=-1).mean()
    assert changed > 0.005  # whole arrows and nodes moved, not a stray pixel


def test_different_cells_give_different_images(tmp_path):
    other = Genotype(((("avg_pool_3x3", 1), ("dil_conv_3x3", 0)),), (0,))
    a = _pixels(render_cell(Genotype(SMALL_CELL, (0,)), tmp_path / "a.png"))
    b = _pixels(render_cell(other, tmp_path / "b.png"))
    assert np.any(a != b, axis=-1).mean() > 0.002


def test_path_shows_the_path_colour_along_the_decoded_levels(tmp_path):
    # Two one-layer paths: the highlighted layer-1 node sits on a different row.
    g_top = Genotype(SMALL_CELL, (0,))
    g_down = Genotype(SMALL_CELL, (1,))
    top = _pixels(render_path(g_top, tmp_path / "top.png"))
    down = _pixels(render_path(g_down, tmp_path / "down.png"))
    blue = np.array([0x1F, 0x5F, 0xA8])  # the path colour

    def blue_rows(px: np.ndarray) -> np.ndarray:
        mask = np.abs(px - blue).sum(axis=-1) < 30
        return np.nonzero(mask.any(axis=1))[0]

    # The path reaches lower (larger y in pixels) when it goes down to stride 8.
    assert blue_rows(down).max() > blue_rows(top).max() + 50


@pytest.mark.parametrize("path", [(0,), (1,), (0, 1, 2, 3, 3, 2, 1, 0) * 5])
def test_any_number_of_layers_renders(tmp_path, path):
    out = render_path(Genotype(SMALL_CELL, path), tmp_path / "p.png")
    _valid_png(out, PATH_PX)


@pytest.mark.parametrize("num_levels", [1, 2, 4, 6])
def test_any_number_of_levels_renders(tmp_path, num_levels):
    path = tuple(min(x, num_levels - 1) for x in range(1, 9))
    out = render_path(Genotype(SMALL_CELL, path), tmp_path / "p.png", num_levels=num_levels)
    _valid_png(out, PATH_PX)


def test_more_levels_changes_the_drawing(tmp_path):
    g = Genotype(SMALL_CELL, (0, 1, 1, 0))
    a = _pixels(render_path(g, tmp_path / "a.png", num_levels=2))
    b = _pixels(render_path(g, tmp_path / "b.png", num_levels=4))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("num_blocks", [1, 2, 5, 8])
def test_any_number_of_blocks_renders(tmp_path, num_blocks):
    ops = ("sep_conv_3x3", "dil_conv_5x5", "avg_pool_3x3", "skip_connect", "max_pool_3x3")
    # Block b (0-based) may read inputs 0..b+1: one branch from the previous node, one earlier.
    cell = tuple(
        ((ops[b % len(ops)], b + 1), (ops[(b + 2) % len(ops)], b // 2)) for b in range(num_blocks)
    )
    out = render_cell(Genotype(cell, (0,)), tmp_path / "c.png")
    _valid_png(out, CELL_PX)


def test_beta_overlay_changes_the_image(tmp_path):
    plain = _pixels(render_path(PAPER_GENOTYPE, tmp_path / "plain.png"))
    beta = _beta(12, 4)
    shaded = _pixels(render_path(PAPER_GENOTYPE, tmp_path / "beta.png", beta=beta))
    assert np.any(plain != shaded, axis=-1).mean() > 0.005
    # Other probabilities pick other max edges and shades.
    other = _pixels(render_path(PAPER_GENOTYPE, tmp_path / "beta2.png", beta=_beta(12, 4, 1)))
    assert not np.array_equal(shaded, other)


def test_beta_with_wrong_shape_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"expected \(12, 4, 3\)"):
        render_path(PAPER_GENOTYPE, tmp_path / "p.png", beta=np.zeros((11, 4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        render_path(PAPER_GENOTYPE, tmp_path / "p.png", beta=np.full((12, 4, 3), np.nan))
    assert not (tmp_path / "p.png").exists()


def test_path_deeper_than_num_levels_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="num_levels=4 or more"):
        render_path(PAPER_GENOTYPE, tmp_path / "p.png", num_levels=3)
    with pytest.raises(ValueError, match="positive integer"):
        render_path(PAPER_GENOTYPE, tmp_path / "p.png", num_levels=0)


def test_titles_change_the_image(tmp_path):
    a = _pixels(render_path(PAPER_GENOTYPE, tmp_path / "a.png"))
    b = _pixels(render_path(PAPER_GENOTYPE, tmp_path / "b.png", title="my search"))
    assert not np.array_equal(a, b)
    c = _pixels(render_cell(PAPER_GENOTYPE, tmp_path / "c.png"))
    d = _pixels(render_cell(PAPER_GENOTYPE, tmp_path / "d.png", title="my cell"))
    assert not np.array_equal(c, d)


def test_render_genotype_writes_both_files_with_prefix(tmp_path):
    out_dir = tmp_path / "new" / "dir"
    path_png, cell_png = render_genotype(PAPER_GENOTYPE, out_dir, prefix="run1_")
    assert out_dir.is_dir()
    assert path_png == out_dir / "run1_path.png"
    assert cell_png == out_dir / "run1_cell.png"
    assert sorted(p.name for p in out_dir.iterdir()) == ["run1_cell.png", "run1_path.png"]
    _valid_png(path_png, PATH_PX)
    _valid_png(cell_png, CELL_PX)
    # Same pixels as the single renderers: render_genotype adds nothing of its own.
    assert np.array_equal(
        _pixels(path_png), _pixels(render_path(PAPER_GENOTYPE, tmp_path / "p.png"))
    )


def test_render_genotype_passes_beta_and_its_levels(tmp_path):
    g = Genotype(SMALL_CELL, (0, 1, 2, 3, 4))
    beta = _beta(5, 5)
    path_png, _ = render_genotype(g, tmp_path, beta=beta)  # 5 levels, read from beta's shape
    direct = render_path(g, tmp_path / "direct.png", num_levels=5, beta=beta)
    assert np.array_equal(_pixels(path_png), _pixels(direct))


def test_render_genotype_default_prefix(tmp_path):
    paths = render_genotype(PAPER_GENOTYPE, str(tmp_path))
    assert [p.name for p in paths] == ["path.png", "cell.png"]


def test_overwrite_replaces_the_file_atomically(tmp_path):
    target = tmp_path / "p.png"
    target.write_bytes(b"old")
    render_path(PAPER_GENOTYPE, target)
    assert target.read_bytes()[:8] == PNG_MAGIC
    _no_temp_files(tmp_path)


def test_failed_render_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        render_cell(PAPER_GENOTYPE, tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


def test_threads_render_concurrently(tmp_path):
    # No pyplot state: parallel renders give the same pixels as a serial one.
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            render_path(PAPER_GENOTYPE, tmp_path / f"t{k}.png")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ref = _pixels(tmp_path / "t0.png")
    assert all(np.array_equal(ref, _pixels(tmp_path / f"t{k}.png")) for k in (1, 2))
