"""Run an otfgen worker under a Blender executable's bundled Python.

    blender --background --factory-startup --python-exit-code 2 --python entry.py -- controller=tcp://…

(what ``launcher.blender=/path/to/blender`` runs). Blender's Python needs numpy (bundled) and
pyzmq (``/path/to/blender/…/python/bin/python3.11 -m pip install pyzmq``); the otfgen checkout
this file lives in is put on its path.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from blender_gen.worker import main  # noqa: E402

main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else [])
