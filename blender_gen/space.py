"""A scene family's parameter space: typed parameters, sampling from a policy's action, checks.

The space is data: each parameter is a float range, an int range or a choice, with a default
and a one-line doc. A family module declares the widest space it renders (``SPACE``); a scene
config narrows its ranges (``blender_gen.families.scene_space``). A policy's *action* is, per
parameter, a list of non-negative weights over equal-width bins of its range (or over its
choices); a parameter the action leaves out is drawn uniformly. An action may also make a parameter's
bins depend on a discrete one: ``"thickness|label": [[w, ...] per label value]`` draws each
sample's thickness bin from the row of its own label (joint regions such as "thin strokes for
1s, thick for 0s" cannot be written per parameter). Drawing (this module) and rendering (the
family) are separate steps, and drawing is a pure function of (action, request seed), so the
parameter log only needs those two to regenerate every sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from otfgen.blender_gen import rng

KINDS = ("float", "int", "choice")


class SpaceError(ValueError):
    """A parameter space, an action or a set of parameter values does not fit the declaration."""


# A family's SPACE, one line a parameter: what each parameter is, the widest range (or every
# choice) it may take, its default and its doc, as the plain mapping ParamSpace.from_mapping reads.
def floats(low: float, high: float, default: float, doc: str) -> dict:
    return {"kind": "float", "low": low, "high": high, "default": default, "doc": doc}


def ints(low: int, high: int, default: int, doc: str) -> dict:
    return {"kind": "int", "low": low, "high": high, "default": default, "doc": doc}


def choices(options: list, default: Any, doc: str) -> dict:
    return {"kind": "choice", "choices": list(options), "default": default, "doc": doc}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    default: Any = None
    doc: str = ""

    @property
    def n_options(self) -> int | None:
        """Number of discrete values (int and choice), None for float."""
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "int":
            return int(self.high - self.low + 1)
        return None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.kind == "float" else np.dtype(np.int64)

    def check_values(self, values: np.ndarray) -> None:
        """Raise SpaceError naming the parameter if any value falls outside its declaration."""
        v = np.asarray(values)
        if self.kind == "float":
            if not np.issubdtype(v.dtype, np.floating):
                raise SpaceError(f"parameter '{self.name}': expected float values, got {v.dtype}")
            bad = ~np.isfinite(v) | (v < self.low) | (v > self.high)
            allowed = f"[{self.low}, {self.high}]"
        else:
            if not np.issubdtype(v.dtype, np.integer):
                raise SpaceError(f"parameter '{self.name}': expected integer values, got {v.dtype}")
            hi = len(self.choices) - 1 if self.kind == "choice" else self.high
            lo = 0 if self.kind == "choice" else self.low
            bad = (v < lo) | (v > hi)
            allowed = f"choice index in [0, {hi}]" if self.kind == "choice" else f"[{lo}, {hi}]"
        if np.any(bad):
            first = v[np.argmax(bad)]
            raise SpaceError(f"parameter '{self.name}': value {first!r} outside {allowed}")


def _param_from_mapping(name: str, d: Mapping[str, Any]) -> Param:
    known = {"kind", "low", "high", "choices", "default", "doc"}
    unknown = set(d) - known
    if unknown:
        raise SpaceError(f"parameter '{name}': unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    kind = d.get("kind")
    if kind not in KINDS:
        raise SpaceError(f"parameter '{name}': kind {kind!r} not one of {list(KINDS)}")
    doc = str(d.get("doc") or "")
    if kind == "choice":
        choices = tuple(d.get("choices") or ())
        if len(choices) < 1:
            raise SpaceError(f"parameter '{name}': a choice needs a non-empty 'choices' list")
        default = d.get("default", choices[0])
        if default not in choices:
            raise SpaceError(f"parameter '{name}': default {default!r} not in choices {list(choices)}")
        return Param(name, kind, choices=choices, default=default, doc=doc)
    try:
        low, high = float(d["low"]), float(d["high"])
    except (KeyError, TypeError, ValueError):
        raise SpaceError(f"parameter '{name}': a {kind} range needs numeric 'low' and 'high'") from None
    if kind == "int":
        if low != math.floor(low) or high != math.floor(high):
            raise SpaceError(f"parameter '{name}': int bounds must be whole numbers, got {low}, {high}")
        low, high = int(low), int(high)
    if not (math.isfinite(low) and math.isfinite(high)) or high < low:
        raise SpaceError(f"parameter '{name}': need finite low <= high, got low={low}, high={high}")
    default = d.get("default", low)
    if default is None or not (low <= float(default) <= high):
        raise SpaceError(f"parameter '{name}': default {default!r} outside [{low}, {high}]")
    default = int(default) if kind == "int" else float(default)
    return Param(name, kind, low=low, high=high, default=default, doc=doc)


@dataclass(frozen=True)
class ParamSpace:
    params: dict[str, Param] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, params: Mapping[str, Mapping[str, Any]]) -> "ParamSpace":
        if not params:
            raise SpaceError("a parameter space needs at least one parameter")
        return cls({str(k): _param_from_mapping(str(k), v) for k, v in params.items()})

    def to_mapping(self) -> dict[str, dict[str, Any]]:
        """JSON-able form, the inverse of from_mapping (sent to workers in the welcome)."""
        out = {}
        for p in self.params.values():
            d: dict[str, Any] = {"kind": p.kind, "default": p.default, "doc": p.doc}
            if p.kind == "choice":
                d["choices"] = list(p.choices)
            else:
                d["low"], d["high"] = p.low, p.high
            out[p.name] = d
        return out

    def __iter__(self):
        return iter(self.params.values())

    def __getitem__(self, name: str) -> Param:
        try:
            return self.params[name]
        except KeyError:
            raise SpaceError(f"unknown parameter '{name}'; known: {sorted(self.params)}") from None

    # -- actions -----------------------------------------------------------------------------
    def check_action(self, action: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate an action (name -> weights) and return normalised float64 probabilities.

        Keys starting with '_' are a policy's metadata and are ignored."""
        out = {}
        for name, w in (action or {}).items():
            if name.startswith("_"):
                continue  # metadata a policy keeps with its action (e.g. a decision id)
            if "|" in name:
                out[name] = self._check_conditional(name, w)
                continue
            p = self[name]
            w = np.asarray(w, dtype=np.float64).reshape(-1)
            if w.size < 1 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise SpaceError(f"action for '{name}': weights must be finite, >= 0, not all zero")
            if p.kind == "choice" and w.size != len(p.choices):
                raise SpaceError(f"action for '{name}': {w.size} weights for {len(p.choices)} choices")
            if p.kind == "int" and w.size > p.n_options:
                raise SpaceError(f"action for '{name}': {w.size} bins for {p.n_options} integer values")
            out[name] = w / w.sum()
        return out

    def _check_conditional(self, key: str, w) -> np.ndarray:
        name, _, given = key.partition("|")
        p, g = self[name], self[given]
        if g.kind == "float" or name == given:
            raise SpaceError(f"action for '{key}': '{given}' must be another int or choice parameter")
        w = np.asarray(w, dtype=np.float64)
        k = len(p.choices) if p.kind == "choice" else None
        if (w.ndim != 2 or w.shape[0] != g.n_options or (k is not None and w.shape[1] != k)
                or (p.kind == "int" and w.shape[1] > p.n_options) or w.shape[1] < 1):
            raise SpaceError(f"action for '{key}': need one row of bin weights per value of '{given}' "
                             f"({g.n_options} rows), got shape {list(w.shape)}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or np.any(w.sum(1) <= 0):
            raise SpaceError(f"action for '{key}': weights must be finite, >= 0, no row all zero")
        return w / w.sum(1, keepdims=True)

    def sample(self, action: Mapping[str, Any] | None, seed: int, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Draw ``n`` samples: (params name -> array [n], per-sample seeds uint64 [n]).

        Sample i's values depend only on (action, its own seed), which is derived from
        (seed, i); this is the one function the controller and ``replay`` both call.
        """
        probs = self.check_action(action or {})
        given = {k.partition("|")[0]: (k.partition("|")[2], w) for k, w in probs.items() if "|" in k}
        seeds = rng.derive_seeds(seed, n)
        params = {}
        # parameters a conditional row depends on are drawn first (each has its own RNG stream,
        # so the order changes no value)
        order = sorted(self, key=lambda p: p.name in given)
        for p in order:
            u = rng.uniform(seeds, "param:" + p.name, 2).astype(np.float64)
            pr = probs.get(p.name)
            if p.name in given:
                g, rows = given[p.name]
                gv = params[g] - (self[g].low if self[g].kind == "int" else 0)
                pr = rows[gv]  # [n, k]: each sample's row
            if p.kind == "choice":
                k = len(p.choices)
                pr = pr if pr is not None else np.full(k, 1.0 / k)
                params[p.name] = _pick_bin(pr, u[:, 0])
                continue
            k = pr.shape[-1] if pr is not None else 1
            b = _pick_bin(pr, u[:, 0]) if pr is not None else np.zeros(n, dtype=np.int64)
            t = (b + u[:, 1]) / k  # position in [0, 1) inside the chosen bin
            if p.kind == "int":
                v = np.floor(p.low + t * (p.high - p.low + 1)).astype(np.int64)
                params[p.name] = np.clip(v, p.low, p.high)
            else:
                params[p.name] = (p.low + t * (p.high - p.low)).astype(np.float32)
        return params, seeds

    def defaults(self, n: int) -> dict[str, np.ndarray]:
        """Every parameter at its default, as arrays of length n (choice -> index)."""
        out = {}
        for p in self:
            v = p.choices.index(p.default) if p.kind == "choice" else p.default
            out[p.name] = np.full(n, v, dtype=p.dtype)
        return out

    def cast(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Values off the wire (float64) -> declared dtypes; a non-integral int value is an error."""
        out = {}
        for name, v in params.items():
            p = self.params.get(name)
            v = np.asarray(v)
            if p is None or v.dtype == p.dtype:
                out[name] = v
                continue
            c = v.astype(p.dtype)
            if p.dtype.kind == "i" and not np.array_equal(c, v):
                raise SpaceError(f"parameter '{name}': non-integral or out-of-range value for a {p.kind}")
            out[name] = c
        return out

    def check_params(self, params: Mapping[str, np.ndarray], n: int) -> None:
        """Every declared parameter present, length n, within its declaration; nothing extra."""
        extra = set(params) - set(self.params)
        if extra:
            raise SpaceError(f"unknown parameters {sorted(extra)}; known: {sorted(self.params)}")
        for p in self:
            if p.name not in params:
                raise SpaceError(f"missing parameter '{p.name}'")
            v = np.asarray(params[p.name])
            if v.shape != (n,):
                raise SpaceError(f"parameter '{p.name}': shape {v.shape}, expected ({n},)")
            p.check_values(v)


def bin_index(p: Param, values: np.ndarray, k: int) -> np.ndarray:
    """Which of the k action bins each value falls in: the inverse of ``ParamSpace.sample``'s
    binning, for policies that credit a sample's outcome to the bin it was drawn from."""
    v = np.asarray(values, dtype=np.float64)
    if p.kind == "choice":
        return np.clip(v.astype(np.int64), 0, k - 1)
    span = (p.high - p.low + 1) if p.kind == "int" else (p.high - p.low)
    t = (v - p.low) / span if span > 0 else np.zeros_like(v)
    return np.clip((t * k).astype(np.int64), 0, k - 1)


def _pick_bin(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF choice of a bin per uniform draw; ``probs`` [k], or [n, k] (a row per draw)."""
    if probs.ndim == 2:
        cdf = np.cumsum(probs, axis=1)
        cdf[:, -1] = 1.0
        return np.minimum((u[:, None] >= cdf).sum(1), probs.shape[1] - 1).astype(np.int64)
    cdf = np.cumsum(probs)
    cdf[-1] = 1.0
    return np.minimum(np.searchsorted(cdf, u, side="right"), probs.size - 1).astype(np.int64)
