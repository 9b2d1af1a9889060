"""``otfgen preview``: a labelled PNG grid of a scene in seconds, with no trainer and no sockets."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import otfgen_cmd
from otfgen.controller import preview


def _preview(env, *args, timeout=120):
    return subprocess.run(otfgen_cmd("preview", *args), env=env, capture_output=True, text=True, timeout=timeout)


def _rows(png, n_rows: int, left: int) -> list[np.ndarray]:
    a = np.asarray(Image.open(png).convert("L"))[preview.TOP:, left:]
    h = (a.shape[0] - 2) // n_rows
    return [a[r * h:(r + 1) * h] for r in range(n_rows)]


def test_preview_writes_a_labelled_grid(tmp_path, env):
    out = tmp_path / "grid.png"
    p = _preview(env, "scene=mnist2d", "n=64", f"out={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == str(out)  # prints the PNG's path
    img = Image.open(out)
    # 8 × 8 cells of 28 px drawn at 2× (56 px) with a label band: wider and taller than 8 × 56
    assert img.width >= 8 * 56 and img.height >= 8 * 56 + preview.TOP
    rows = _rows(out, 8, 0)
    assert all(r.std() > 10 for r in rows)  # every row holds digits, not an empty canvas


def test_sweep_gives_one_row_per_value_and_rows_differ(tmp_path, env):
    out = tmp_path / "sweep.png"
    p = _preview(env, "scene=mnist2d", "n=24", "sweep=thickness", "steps=4", f"out={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = _rows(out, 4, preview.HEADER_W)  # the images only, not the row's label
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(rows[a].astype(int) - rows[b]).mean() > 1, (a, b)
    # thicker strokes: more ink from the first row to the last
    assert rows[-1].mean() > rows[0].mean()


def test_preview_is_named_and_titled_by_its_scene_config(tmp_path, env):
    # scene=fashion2d_wide is family fashion2d: its grid must not overwrite scene=fashion2d's
    p = subprocess.run(otfgen_cmd("preview", "scene=fashion2d_wide", "n=4", "sweep=tilt", "steps=2"), env=env,
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == str(Path("outputs") / "preview" / "fashion2d_wide-tilt.png")
    assert not (tmp_path / "outputs" / "preview" / "fashion2d-tilt.png").exists()
    assert preview.scene_config(["n=4"]) == "mnist2d"  # the default scene config, config.yaml's


def test_sweep_values_cover_the_range_or_each_choice():
    from otfgen.blender_gen import families

    space = families.default_space("mnist2d")
    v, labels = preview.sweep_values(space["slant"], 5)
    assert v[0] == pytest.approx(-0.3) and v[-1] == pytest.approx(0.6) and len(v) == 5
    v, labels = preview.sweep_values(space["label"], 8)
    assert list(v) == list(range(10)) and labels[3] == "label=3"  # an int of <= 16 values: each of them
    params, seeds, row_labels, cols = preview.draw(space, 30, 0, "label", 8)
    assert cols == 3 and len(seeds) == 30 and list(params["label"][:6]) == [0, 0, 0, 1, 1, 1]
    # every row: the same samples (seeds and other parameters) with only the swept one changed
    assert np.array_equal(seeds[:3], seeds[3:6]) and np.array_equal(params["slant"][:3], params["slant"][3:6])


def test_preview_errors_are_one_line(tmp_path, env):
    for args, needle in ((["scene=mnist2d", "sweep=slnat"], "slnat"), (["scene=nope"], "nope"),
                         (["scene=mnist2d", "n=0"], "n <=")):
        p = _preview(env, *args, f"out={tmp_path}/x.png")
        assert p.returncode == 2 and needle in p.stderr, p.stderr
        assert "Traceback" not in p.stderr


@pytest.mark.blender
def test_preview_renders_a_blender_family_on_the_cpu(tmp_path, env):
    pytest.importorskip("bpy")
    out = tmp_path / "d3.png"
    p = _preview(env, "scene=digits3d", "n=4", "sweep=label", "scene.render.device=cpu", "scene.render.samples=1",
                 "scene.render.rows=2", "scene.render.cols=5", f"out={out}", timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = _rows(out, 10, preview.HEADER_W)
    assert all(r.std() > 5 for r in rows)
    assert np.abs(rows[0].astype(int) - rows[1]).mean() > 1  # a 0 is not a 1
