"""One command-line style: every console script answers --help with its options and exits 0."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def script_cmd(name: str) -> list[str]:
    """The console script as a user runs it; where it is not installed next to this Python, its
    entry point function run by this Python (the same code)."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    module, fn = SCRIPTS[name].split(":")
    return [sys.executable, "-c", f"import sys; sys.argv[0] = {name!r}; from {module} import {fn}; {fn}()"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_console_script_answers_help(name, env):
    p = subprocess.run([*script_cmd(name), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert name in p.stdout and "usage" in p.stdout.lower(), p.stdout[:500]
    assert "powered by Hydra" not in p.stdout
    assert len(p.stdout.splitlines()) >= 5, p.stdout  # its options, not a bare usage line


def test_otfgen_help_names_its_subcommands_and_settings(env):
    p = subprocess.run([*script_cmd("otfgen"), "policy=bandit", "--help"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    for sub in ("preview", "export", "replay", "keys", "compare"):
        assert f"\n  {sub} " in p.stdout, sub
    # the settings come from the composed config: the chosen policy's options, the scene's parameters
    assert "policy.options.temperature" in p.stdout and "budget.samples" in p.stdout
    assert "slant" in p.stdout and "[-0.3, 0.6]" in p.stdout
    bad = subprocess.run([*script_cmd("otfgen"), "trainer.lrr=1", "--help"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "trainer.lrr" in bad.stderr


def test_hydra_cfg_flag_prints_the_config_and_succeeds(tmp_path, env):
    p = subprocess.run([*script_cmd("otfgen"), "--cfg", "job", "budget.samples=1234"], env=env, capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "samples: 1234" in p.stdout and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("sub", ["preview", "export", "replay", "keys", "compare", "serve"])
def test_every_subcommand_answers_help(sub, env):
    p = subprocess.run([*script_cmd("otfgen"), sub, "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sub in p.stdout


def test_compare_refuses_an_unknown_policy_before_running_anything(tmp_path, env):
    out = tmp_path / "cmp"
    p = subprocess.run([*script_cmd("otfgen-compare"), "policies=[uniform,bandti]", "seeds=1", f"out={out}"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "bandti" in p.stderr and "available" in p.stderr
    assert not out.exists()  # no run started, nothing written


def test_compare_exits_non_zero_when_a_run_failed(tmp_path, env):
    import json

    from otfgen.controller.study import runs

    for arm, ok in (("good", True), ("bad", False)):
        d = runs.run_dir(tmp_path, arm, 0)
        d.mkdir(parents=True)
        (d / runs.RUN_RECORD).write_text(json.dumps({"ok": ok, "returncode": 0 if ok else 1, "wall_s": 1.0}))
        if ok:
            (d / "metrics.jsonl").write_text(json.dumps({"train/samples": 1000, "val/acc": 0.9, "val/n": 100}) + "\n")
    args = ["policies=[good:uniform,bad:uniform]", "baseline=good", "seeds=1", f"out={tmp_path}", "report_only=true"]
    p = subprocess.run([*script_cmd("otfgen-compare"), *args], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "failed runs: bad/seed0" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
