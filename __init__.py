"""otfgen: on-the-fly training data, steered by what the model gets wrong.

The repository's folders install as one package (pyproject.toml's ``package-dir``):
``otfgen.configs`` (settings, their schema, the command line's edge), ``otfgen.blender_gen``
(scene families, the wire format, workers), ``otfgen.trainer`` (the stream, the model, the
judges) and ``otfgen.controller`` (the policies, the ledger, the launchers). What a user's own
loop needs is here at the top; it is imported on first use, so that a worker, which needs
neither torch nor Hydra, imports only what it renders with.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it
_PUBLIC = {
    "Stream": "otfgen.trainer.stream",
    "StreamError": "otfgen.trainer.stream",
    "Batch": "otfgen.trainer.stream",
    "RealSignal": "otfgen.trainer.judges",
    "score": "otfgen.trainer.evaluate",
    "ParamSpace": "otfgen.blender_gen.space",
    "Policy": "otfgen.controller.policies",
    "PolicyArgs": "otfgen.controller.policies",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'otfgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
