"""Extension without editing the package: a family and a policy from another installed package,
found through the ``otfgen.families`` / ``otfgen.policies`` entry points.

The package is examples/otfgen_stripes (the one docs/extending.md walks through). Installing it
is simulated the way pip leaves it: its modules plus a ``*.dist-info`` directory with
``entry_points.txt`` (the entry points its pyproject.toml declares) on PYTHONPATH, which
importlib.metadata discovers.
"""

import json
import os
import shutil
import subprocess
import tomllib

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, otfgen_cmd
from otfgen.controller import preview

EXAMPLE = ROOT / "examples" / "otfgen_stripes"


@pytest.fixture
def plugin_env(tmp_path, env):
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "otfgen_stripes", site / "otfgen_stripes")
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    info = site / f"otfgen_stripes-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in project["entry-points"].items()))
    return dict(env, PYTHONPATH=os.pathsep.join(p for p in (str(site), env["PYTHONPATH"]) if p))


def test_preview_renders_a_family_from_another_package(tmp_path, plugin_env):
    out = tmp_path / "stripes.png"
    p = subprocess.run(otfgen_cmd("preview", "scene=stripes2d", "n=8", "sweep=label", f"out={out}"),
                       env=plugin_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    a = np.asarray(Image.open(out).convert("L")).astype(float)[preview.TOP:, preview.HEADER_W:]
    h = (a.shape[0] - 2) // 2
    horizontal, vertical = a[:h], a[h:2 * h]
    assert horizontal.std() > 20 and vertical.std() > 20  # stripes drawn, not an empty canvas
    assert not np.array_equal(horizontal, vertical)


def test_help_and_config_know_the_installed_family_and_policy(plugin_env):
    p = subprocess.run(otfgen_cmd("scene=stripes2d", "policy=prefer", "scene.params.period.high=6", "--help"),
                       env=plugin_env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "stripes2d" in p.stdout and "policy.options.weight" in p.stdout
    assert "period  float [3.0, 6], default 6.0: stripe period in pixels" in p.stdout  # SPACE, narrowed
    # its SPACE bounds a range as a built-in family's does: past it, one line at start-up
    wide = subprocess.run(otfgen_cmd("scene=stripes2d", "scene.params.period.high=20"), env=plugin_env,
                          capture_output=True, text=True, timeout=60)
    assert wide.returncode == 2 and "declared range [3.0, 9.0]" in wide.stderr, wide.stderr
    # a mistyped option of the installed policy fails at start-up like a built-in one's
    bad = subprocess.run(otfgen_cmd("scene=stripes2d", "policy=prefer", "policy.options.wieght=2"),
                         env=plugin_env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "wieght" in bad.stderr
    # without the package installed, the names are unknown again
    gone = subprocess.run(otfgen_cmd("preview", "scene=stripes2d"), capture_output=True, text=True, timeout=60,
                          env=dict(plugin_env, PYTHONPATH=""))
    assert gone.returncode == 2 and "stripes2d" in gone.stderr


@pytest.mark.slow
def test_a_run_on_the_installed_family_with_the_installed_policy(tmp_path, plugin_env):
    run_dir = tmp_path / "run"
    p = subprocess.run(otfgen_cmd(f"hydra.run.dir={run_dir}", "scene=stripes2d", "policy=prefer",
                                  "policy.options.label=1", "budget.samples=2048", "trainer.val_every=1024",
                                  "workers=1", "trainer.threads=1"),
                       env=plugin_env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [json.loads(x) for x in open(run_dir / "params.jsonl")]
    assert lines[0]["family"] == "stripes2d" and lines[1]["action"] == {"label": [0.25, 0.75]}
    vals = [m for m in map(json.loads, open(run_dir / "metrics.jsonl")) if "val/acc" in m]
    assert vals and vals[-1]["val/acc"] > 0.8  # stripes are easy: the loop trained on them
