"""The package's shape: one import name (``otfgen``), every folder installed, and dependencies that
run one way. A user's own ``trainer.py`` or ``configs/`` must never shadow a part of otfgen."""

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

PARTS = ("configs", "blender_gen", "trainer", "controller")


def test_every_folder_with_an_init_is_an_installed_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"otfgen"} | {"otfgen." + ".".join(p.parent.relative_to(ROOT).parts)
                          for part in PARTS for p in (ROOT / part).rglob("__init__.py")}
    assert listed == found


def test_a_wheel_install_imports_as_otfgen_beside_a_users_own_trainer_and_configs(tmp_path):
    src = tmp_path / "src"  # what a clone holds, without this checkout's build leftovers
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "__init__.py"):
        shutil.copy(ROOT / name, src / name)
    for name in PARTS:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True).strip())
    # the dependencies (torch, pyzmq, Hydra, pip, setuptools) come from this interpreter's
    # site-packages, as a path only: its .pth files, this checkout's editable install among them,
    # are not read, so otfgen itself can come from nowhere but the wheel
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(src)],
                   check=True, capture_output=True)

    user = tmp_path / "user"  # a user's project with modules named like otfgen's parts
    (user / "configs").mkdir(parents=True)
    (user / "configs" / "__init__.py").write_text("raise ImportError('the user configs package was imported')\n")
    (user / "trainer.py").write_text("raise ImportError('the user trainer module was imported')\n")
    env = dict(os.environ, PYTHONPATH=str(user))
    p = subprocess.run([py, "-c", "import otfgen; import otfgen.controller.main; "
                        "print(otfgen.__file__); print(otfgen.Stream.__module__)"],
                       cwd=user, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    where, module = p.stdout.split()
    assert Path(where).is_relative_to(site) and module == "otfgen.trainer.stream"
    users = subprocess.run([py, "-c", "import otfgen; import configs"], cwd=user, env=env, capture_output=True,
                           text=True, timeout=120)
    assert "the user configs package was imported" in users.stderr  # the bare name is the user's, not ours

    out = tmp_path / "grid.png"
    p = subprocess.run([venv / "bin" / "otfgen", "preview", "scene=mnist2d", "n=8", f"out={out}"],
                       cwd=user, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and out.stat().st_size > 0, p.stderr[-2000:]
    p = subprocess.run([venv / "bin" / "otfgen", "--help"], cwd=user, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "budget.samples" in p.stdout, p.stderr[-2000:]


def imports_of(part: str) -> dict[str, set[str]]:
    """Module file -> the otfgen parts it imports (every import statement, inside functions too)."""
    out = {}
    for path in (ROOT / part).rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                bits = name.split(".")
                if bits[0] in PARTS:
                    found.add("bare " + bits[0])  # the old top-level names: the user's, not ours
                elif bits[0] == "otfgen" and len(bits) > 1:
                    found.add(bits[1])
        out[str(path.relative_to(ROOT))] = found
    return out


# configs <- blender_gen <- trainer <- controller: what each part may import besides itself
ALLOWED = {"configs": set(), "blender_gen": {"configs"}, "trainer": {"configs", "blender_gen"},
           "controller": {"configs", "blender_gen", "trainer"}}


@pytest.mark.parametrize("part", PARTS)
def test_dependencies_run_one_way(part):
    wrong = {f: sorted(found - ALLOWED[part] - {part}) for f, found in imports_of(part).items()}
    assert not {f: w for f, w in wrong.items() if w}


def test_the_layout_check_sees_a_backward_import(tmp_path, monkeypatch):
    import test_layout

    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "x.py").write_text("def f():\n    from otfgen.controller import config\n    import blender_gen\n")
    monkeypatch.setattr(test_layout, "ROOT", tmp_path)
    assert imports_of("trainer") == {"trainer/x.py": {"controller", "bare blender_gen"}}


EXTRAS = ("bpy", "ray", "submitit", "gymnasium", "tensorboard")  # what pyproject's extras install


def test_the_suite_collects_without_the_optional_extras(tmp_path):
    """A user with `pip install -e '.[test]'` only: every test module still imports, and a test
    that needs an extra skips (README) rather than failing at collection."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in EXTRAS))
    env = {k: v for k, v in os.environ.items() if k != "OTFGEN_REQUIRE_EXTRAS"}
    env["PYTHONPATH"] = str(hide)
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        str(ROOT / "tests")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "error" not in p.stdout.lower().splitlines()[-1], p.stdout[-3000:] + p.stderr[-2000:]
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('ray'))"], env=env,
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "None"  # the extras really were hidden
