"""digits3d: Blender/Cycles renders on the CPU (tiny grids), checked for what the family promises.

Every test here needs bpy (the ``blender`` extra); select them with ``-m blender``.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import cycles_gpus
from otfgen.blender_gen import families

pytestmark = pytest.mark.blender

bpy = pytest.importorskip("bpy")
digits3d = families.load("digits3d")
SPACE = families.default_space("digits3d")
CPU = {"device": "cpu", "rows": 4, "cols": 6, "samples": 4}


@pytest.fixture(scope="module", autouse=True)
def cpu_grid():
    digits3d.configure(CPU)
    yield


def defaults(n):
    return {name: np.full(n, p.default, dtype=np.int64 if p.kind == "int" else np.float64)
            for name, p in SPACE.params.items()}


# parameters only visible when another one allows it (a hue needs saturation; a texture's scale
# needs a visible texture; a light's colour shows in a grey image as a coloured material's
# brightness against a grey ground, which the family's levels map to black and white, so only
# the ground's texture, set against the ink, keeps it)
CONTEXT = {"hue": {"saturation": 0.8},
           "light_warmth": {"saturation": 0.8, "hue": 0.6, "bg_level": 0.3, "bg_contrast": 1.0},
           "bg_scale": {"bg_level": 0.3, "bg_contrast": 1.0}}


def test_every_parameter_changes_the_image():
    names = [n for n in SPACE.params if n != "label"]
    lo, hi = defaults(len(names)), defaults(len(names))
    for i, n in enumerate(names):
        for k, v in CONTEXT.get(n, {}).items():
            lo[k][i] = hi[k][i] = v
        lo[n][i], hi[n][i] = SPACE[n].low, SPACE[n].high
        if n == "hue":  # circular: 0 and 1 are the same colour
            hi[n][i] = 0.5
    for p in (lo, hi):
        p["label"][:] = 7  # a class with several style variants
    seeds = np.arange(len(names), dtype=np.uint64) + np.uint64(11)
    a, _ = digits3d.render(lo, seeds)
    b, _ = digits3d.render(hi, seeds)  # each sample in the same cell in both frames: same noise pattern
    same = [n for i, n in enumerate(names) if np.abs(a[i].astype(int) - b[i]).max() < 8]
    assert not same, f"parameters with no visible effect: {same}"


def _shape(img):
    """Binary ink mask cropped to its bounding box and resized to 16×16 (pose/scale-free)."""
    m = img > (int(img.min()) + int(img.max())) // 2
    ys, xs = np.nonzero(m)
    crop = m[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    return np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize((16, 16), Image.BILINEAR), float) / 255


def test_labels_match_what_is_drawn():
    """A clean front view of each class is nearest (in shape) to mnist2d's drawing of that class."""
    mnist2d = families.load("mnist2d")
    clean = defaults(10)
    clean["label"] = np.arange(10)
    clean.update(bg_level=np.zeros(10), light_elevation=np.full(10, 90.0), blur=np.zeros(10),
                 noise=np.zeros(10), jitter=np.zeros(10), slant=np.zeros(10))
    seeds = np.arange(10, dtype=np.uint64)
    imgs, labels = digits3d.render(clean, seeds)
    np.testing.assert_array_equal(labels, np.arange(10))
    ref_p = families.default_space("mnist2d").defaults(10)
    ref_p["label"] = np.arange(10)
    for k in ("jitter", "elastic", "slant", "rotation", "proportion", "shift", "noise", "blur", "pressure"):
        if k in ref_p:
            ref_p[k] = np.zeros(10)
    refs, _ = mnist2d.render(ref_p, seeds)
    R = np.stack([_shape(r).ravel() for r in refs])
    R -= R.mean(1, keepdims=True)
    correct = 0
    for k in range(10):
        v = _shape(imgs[k]).ravel()
        v = v - v.mean()
        correct += int(np.argmax(R @ v) == k)
    assert correct >= 9, f"{correct}/10 classes recognised by shape"


def test_digits_are_normalised_the_mnist_way():
    """Whatever the pose: the ink box fits ``box``×``box`` pixels (its longer side fills it) and the
    ink's centre of mass sits at the frame's centre; the ground is black and the core white."""
    n = 24
    p, seeds = SPACE.sample(None, 5, n)
    p.update(bg_level=np.zeros(n), blur=np.zeros(n), noise=np.zeros(n), light_elevation=np.full(n, 90.0),
             brightness=np.ones(n), box=np.linspace(14.0, 24.0, n))
    imgs, _ = digits3d.render(p, seeds)
    x = imgs.astype(float)
    yy, xx = np.mgrid[:28, :28]
    for i in range(n):
        ys, xs = np.nonzero(x[i] > 64)
        side = max(np.ptp(ys), np.ptp(xs)) + 1
        assert abs(side - p["box"][i]) <= 2.5, (i, side, p["box"][i])
        com = ((x[i] * yy).sum() / x[i].sum(), (x[i] * xx).sum() / x[i].sum())
        assert np.hypot(com[0] - 13.5, com[1] - 13.5) < 1.0, (i, com)
    assert np.median(imgs.reshape(n, -1), 1).max() <= 2 and (imgs.reshape(n, -1).max(1) == 255).all()


def test_same_request_same_bytes_in_two_worker_processes(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from blender_gen import families\n"
        "f = families.load('digits3d'); s = families.default_space('digits3d')\n"
        "f.configure({'device': 'cpu', 'rows': 3, 'cols': 4, 'samples': 2})\n"
        "p, seeds = s.sample(None, 42, 12)\n"
        "img, lab = f.render(p, seeds)\n"
        "sys.stdout.buffer.write(img.tobytes() + lab.tobytes())\n"
    )
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=True).stdout
            for _ in range(2)]
    n = 12 * 28 * 28 + 12 * 8
    assert len(outs[0]) >= n and outs[0][-n:] == outs[1][-n:]


def test_batches_larger_than_one_frame_are_split_and_kept_in_order():
    p, seeds = SPACE.sample(None, 3, 30)  # 24 cells per frame here
    big, labels = digits3d.render(p, seeds)
    tail, _ = digits3d.render({k: v[24:] for k, v in p.items()}, seeds[24:])
    np.testing.assert_array_equal(labels, p["label"])
    assert big[24:].tobytes() == tail.tobytes()  # the second frame is rendered as a batch of its own


def test_render_options_are_checked():
    from otfgen.blender_gen.blender import BlenderDeviceError

    with pytest.raises(ValueError, match="unknown render options"):
        digits3d.configure({"spp": 4})
    with pytest.raises(ValueError, match="63 cells"):
        digits3d.configure({"rows": 8, "cols": 8})
    if cycles_gpus("OPTIX"):  # a machine with an OptiX GPU renders on it
        digits3d.configure({"device": "optix"})
    else:
        with pytest.raises(BlenderDeviceError, match="OPTIX|auto"):
            digits3d.configure({"device": "optix"})  # no such GPU: never a silent CPU fallback
    digits3d.configure(CPU)
    images, _ = digits3d.render(*SPACE.sample(None, 0, 2))
    assert images.shape == (2, 28, 28)


@pytest.mark.slow
def test_loop_with_blender_workers_trains_stops_cleanly_and_replays(tmp_path, env):
    from conftest import otfgen_cmd

    run_dir = tmp_path / "run"
    p = subprocess.run(otfgen_cmd(f"hydra.run.dir={run_dir}", "scene=digits3d", "workers=2", "budget.samples=504",
                                  "controller.request_size=63", "trainer.batch_size=63", "trainer.threads=1",
                                  "trainer.val_every=504", "scene.render.device=cpu", "scene.render.samples=2"),
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("stop (training finished)") == 2  # both Blender workers left on the stop message
    assert "Cycles on cpu" in p.stderr
    r = subprocess.run(otfgen_cmd("replay", str(run_dir)), env=env, capture_output=True, text=True, timeout=300)
    # every request checked and matched (a run with no digests recorded exits 1)
    assert r.returncode == 0 and json.loads(r.stdout)["matched"] == 8, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.slow
def test_missing_gpu_stops_the_run_with_a_clear_error(tmp_path, env):
    from conftest import otfgen_cmd

    p = subprocess.run(otfgen_cmd(f"hydra.run.dir={tmp_path / 'run'}", "scene=digits3d", "workers=1",
                                  "budget.samples=63", "scene.render.device=cuda", "launcher.max_restarts=0"),
                       env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode != 0
    assert "render device 'cuda' requested but Cycles finds no CUDA device" in p.stderr
    assert "cannot start as configured" in p.stdout + p.stderr


@pytest.mark.slow
def test_a_blender_worker_killed_mid_render_is_restarted_and_nothing_is_lost(tmp_path, env):

    from conftest import otfgen_cmd
    from launch_helpers import assert_recovered, kill_a_worker

    run_dir, n_req = tmp_path / "run", 16
    proc = subprocess.Popen(otfgen_cmd(f"hydra.run.dir={run_dir}", "scene=digits3d", "workers=2",
                                       f"budget.samples={63 * n_req}", "controller.request_size=63",
                                       "trainer.batch_size=63", "trainer.threads=1", f"trainer.val_every={63 * n_req}",
                                       "scene.render.device=cpu", "scene.render.samples=1",
                                       "controller.dead_after_s=2"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        kill_a_worker(run_dir, proc, after=3, timeout=120)  # most likely inside bpy.ops.render.render
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert_recovered(out, run_dir, n_req, env, replay_timeout=300)
