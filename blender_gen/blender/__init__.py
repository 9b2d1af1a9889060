"""Blender backend: headless Cycles rendering of parametric scenes, pixels read from memory.

A Blender family builds its scene once (a grid of independent cells, one sample per cell), then
per request only writes parameters into the existing data-blocks and renders one frame. Pixels
come from the render result in memory (``cycles.py``), never through files. Importing this
package does not import ``bpy``; ``require_bpy()`` does, with a clear error when it is missing.
"""

from __future__ import annotations


class BlenderUnavailable(RuntimeError):
    """bpy is not importable in this Python (install the ``blender`` extra or use Blender's Python)."""


class BlenderDeviceError(RuntimeError):
    """The requested render device does not exist on this machine."""


def require_bpy():
    try:
        import bpy  # noqa: F401
    except ImportError as e:
        import sys

        raise BlenderUnavailable(
            f"this scene family renders with Blender, but `import bpy` failed in {sys.executable} "
            f"(Python {sys.version_info.major}.{sys.version_info.minor}): {e}. Install it with "
            "`pip install 'otfgen[blender]'` (bpy==5.0.1 needs Python 3.11), or run workers under a "
            "Blender executable with launcher.blender=/path/to/blender") from None
    return bpy
