"""The run's configuration: Hydra overrides into frozen dataclasses, every typo named in one line."""

import dataclasses

import pytest

from conftest import needs_extra
from otfgen.configs.schema import RunConfig
from otfgen.controller import config
from otfgen.controller.config import ConfigError, compose


def test_policy_options_override_without_plus():
    cfg = compose(["policy=bandit", "policy.options.floor=0.3"])
    assert cfg.policy.name == "bandit" and cfg.policy.options.floor == 0.3
    assert cfg.policy.options_dict()["fast"] == 0.3  # the Args default, from its dataclass
    cfg = compose(["policy=ppo", "policy.options.params=[slant,label]"])
    assert cfg.policy.options.params == ["slant", "label"]


# (the launcher's own path for trainer.lrr, +trainer.lrr, +foo and policy.options.flor: tests/test_loop.py)
@pytest.mark.parametrize("overrides,key", [
    (["+scene.params.slant.hgh=1"], "scene.params.slant"),
    (["+policy.options.floor=1"], "policy.options.floor"),  # uniform takes no options
    (["policy=align", "+policy.options.rate_=1"], "policy.options.rate_"),
])
def test_unknown_keys_are_refused_with_their_name(overrides, key):
    with pytest.raises(ConfigError) as e:
        config.check(compose(overrides))
    assert key in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("overrides,needle", [
    (["policy=nope"], "policy=nope: no such config; available: align, bandit, match, ppo, realism, rho, uniform"),
    (["trainer.lr=abc"], "trainer.lr=abc"),
    (["policy=bandit", "policy.options.floor=abc"], "policy.options.floor=abc"),
    # typos get the nearest name
    (["scene=mnist2"], "available: digits3d, fashion2d, fashion2d_wide, mnist2d, mnist2d_wide, shapes3d; "
                       "did you mean scene=mnist2d?"),
    (["trainer.lr_=1"], "unknown key 'trainer.lr_' (did you mean trainer.lr?"),
    (["+budget.sample=1"], "unknown key 'budget.sample' (did you mean budget.samples?"),
])
def test_hydra_errors_are_one_line(overrides, needle):
    with pytest.raises(ConfigError) as e:
        compose(overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_config_is_frozen_and_copies_are_explicit(tmp_path):
    cfg = compose(["workers=3"])
    assert cfg.launcher.workers == 3 and cfg.workers is None  # the shorthand is resolved once
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run_dir = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trainer.lr = 1.0
    moved = config.with_run_dir(cfg, tmp_path)
    assert moved.run_dir == str(tmp_path) and cfg.run_dir is None


def test_saved_config_loads_back_equal(tmp_path):
    cfg = config.with_run_dir(compose(["policy=bandit", "policy.options.floor=0.2", "scene=fashion2d"]), tmp_path)
    config.save(cfg, tmp_path / "config.json")
    assert config.load(tmp_path / "config.json") == cfg


def test_missing_cuda_device_is_a_startup_error():
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=f"trainer.device=cuda:{n + 3}"):
        config.check(compose([f"trainer.device=cuda:{n + 3}"]))
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda"):
        config.check(compose(["trainer.device=tpu"]))


def test_family_facts_are_not_in_the_scene_config():
    names = {f.name for f in dataclasses.fields(RunConfig().scene)}
    assert not names & {"image_shape", "num_classes", "label_param"}


@pytest.mark.parametrize("overrides,needle", [
    (["launcher=ray", "launcher.adress=auto"], "unknown key 'launcher.adress'"),
    (["launcher.address=auto"], "unknown key 'launcher.address': an option of launcher=ray only"),
    (["launcher=ray", "launcher.partition=gpu"], "unknown key 'launcher.partition': an option of launcher=slurm only"),
    (["launcher.num_cpus=2"], "unknown key 'launcher.num_cpus': an option of launcher=ray / slurm only"),
    (["launcher=slurm", "launcher.executor=lokal"], "launcher.executor=lokal: expected slurm or local"),
    (["launcher=ray", "launcher.blender=/usr/bin/blender"], "launcher.blender: launcher=ray runs workers"),
    (["launcher.name=k8s"], "launcher.name: unknown launcher 'k8s'; available: local, ray, slurm"),
])
def test_launcher_options_belong_to_their_launcher(overrides, needle):
    with pytest.raises(ConfigError) as e:
        config.check(compose(overrides))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_engine_launchers_make_their_own_keys_for_binds_beyond_loopback():
    needs_extra("ray", "ray")  # config.check refuses launcher=ray without it
    # launcher=ray / slurm write a key pair per run, so a wide bind is no start-up error there
    config.check(compose(["launcher=ray", "controller.bind=tcp://0.0.0.0", "trainer.bind=tcp://0.0.0.0"]))
    with pytest.raises(ConfigError, match="CurveZMQ keys are required"):
        config.check(compose(["controller.bind=tcp://0.0.0.0"]))
    cfg = compose(["launcher=slurm", "launcher.executor=local", "workers=3"])
    assert (cfg.launcher.name, cfg.launcher.executor, cfg.launcher.workers) == ("slurm", "local", 3)


# sys.meta_path with ray's module hidden, as in an install without the ray extra; then pytest
HIDE_RAY = """
import sys

class Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        return None if name.split(".")[0] == "ray" else self.finder.find_spec(name, path, target)

sys.meta_path[:] = [Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("require", ["0", "1"])
def test_a_test_that_needs_an_extra_skips_without_it_and_fails_in_ci(env, require):
    """pip install -e '.[test]' alone: the test skips; CI (OTFGEN_REQUIRE_EXTRAS=1) fails it instead."""
    import subprocess
    import sys

    from conftest import ROOT

    test = "tests/test_config.py::test_engine_launchers_make_their_own_keys_for_binds_beyond_loopback"
    p = subprocess.run([sys.executable, "-c", HIDE_RAY, "-q", "-p", "no:cacheprovider", "-rs", test],
                       env=dict(env, OTFGEN_REQUIRE_EXTRAS=require), cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    out = p.stdout + p.stderr
    if require == "1":
        assert p.returncode == 1 and "1 failed" in out and "an extra is missing" in out, out[-2000:]
    else:
        assert p.returncode == 0 and "1 skipped" in out and "could not import 'ray'" in out, out[-2000:]
