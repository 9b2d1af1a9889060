"""Installed packages that add to otfgen (scene families, policies): entry points of a group, found
by name and imported on first use."""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points


@functools.lru_cache(maxsize=None)
def installed(group: str, builtin: frozenset[str]) -> dict[str, EntryPoint]:
    """Entry points of ``group`` by name, not yet imported; a built-in name always wins."""
    return {ep.name: ep for ep in entry_points(group=group) if ep.name not in builtin}


def load(ep: EntryPoint, what: str, error: type[Exception]):
    """The entry point's module. It is the user's package: a failure to import is one line that
    names the entry point, not a traceback from inside it."""
    try:
        return ep.load()
    except Exception as e:
        raise error(f"{what} '{ep.name}' (entry point {ep.value}) failed to import: {e}") from e
