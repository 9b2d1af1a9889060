"""Run an otfgen worker under a Blender executable's bundled Python.

    blender --background --factory-startup --python-exit-code 2 --python entry.py -- controller=tcp://…

(what ``launcher.blender=/path/to/blender`` runs). Blender's Python needs numpy (bundled) and
pyzmq (``/path/to/blender/…/python/bin/python3.11 -m pip install pyzmq``); the otfgen package
this file lives in is loaded from its folder, as ``otfgen``.
"""

import importlib.util
import sys
from pathlib import Path

# The package's folder is the checkout's root (or site-packages/otfgen): whatever it is named, it
# is registered as ``otfgen`` so that ``otfgen.blender_gen…`` imports resolve inside it.
_ROOT = Path(__file__).resolve().parents[2]
if "otfgen" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("otfgen", _ROOT / "__init__.py",
                                                   submodule_search_locations=[str(_ROOT)])
    _pkg = importlib.util.module_from_spec(_spec)
    sys.modules["otfgen"] = _pkg
    _spec.loader.exec_module(_pkg)

from otfgen.blender_gen.worker import main  # noqa: E402

main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else [])
