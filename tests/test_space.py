"""Parameter spaces (declaration errors, sampling from actions, checks) and the counter-based RNG."""

from __future__ import annotations

import numpy as np
import pytest

from otfgen.blender_gen import rng
from otfgen.blender_gen.space import ParamSpace, SpaceError

DECL = {
    "size": {"kind": "float", "low": -2.0, "high": 3.0, "default": 0.5, "doc": "a float"},
    "tiny": {"kind": "float", "low": 0.0, "high": 0.08, "default": 0.02},
    "count": {"kind": "int", "low": 1, "high": 6, "default": 2},
    "colour": {"kind": "choice", "choices": ["red", "green", "blue"], "default": "green"},
}
space = ParamSpace.from_mapping(DECL)


# -- declarations -------------------------------------------------------------------------------

@pytest.mark.parametrize("decl, words", [
    ({"kind": "gaussian", "low": 0, "high": 1}, ["kind", "gaussian"]),
    ({"low": 0, "high": 1}, ["kind"]),
    ({"kind": "float", "high": 1}, ["low", "high"]),
    ({"kind": "float", "low": 0}, ["low", "high"]),
    ({"kind": "int", "low": "a", "high": 3}, ["low", "high"]),
    ({"kind": "float", "low": 2, "high": 1}, ["low=2", "high=1"]),
    ({"kind": "int", "low": 5, "high": 4}, ["low=5", "high=4"]),
    ({"kind": "float", "low": 0, "high": float("inf")}, ["finite"]),
    ({"kind": "int", "low": 0.5, "high": 4}, ["whole"]),
    ({"kind": "float", "low": 0, "high": 1, "default": 1.5}, ["default", "1.5"]),
    ({"kind": "int", "low": 0, "high": 9, "default": -1}, ["default", "-1"]),
    ({"kind": "choice", "choices": ["a", "b"], "default": "c"}, ["default", "'c'"]),
    ({"kind": "choice", "choices": []}, ["choices"]),
    ({"kind": "float", "low": 0, "high": 1, "step": 0.1}, ["unknown", "step"]),
])
def test_declaration_errors_name_the_parameter(decl, words):
    with pytest.raises(SpaceError) as e:
        ParamSpace.from_mapping({"ok": {"kind": "float", "low": 0, "high": 1}, "the_param": decl})
    msg = str(e.value)
    assert "'the_param'" in msg and "'ok'" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_empty_space_is_an_error():
    with pytest.raises(SpaceError):
        ParamSpace.from_mapping({})


def test_declaration_defaults_and_mapping_round_trip():
    assert space["count"].n_options == 6 and space["colour"].n_options == 3 and space["size"].n_options is None
    assert ParamSpace.from_mapping({"x": {"kind": "int", "low": 3, "high": 5}})["x"].default == 3
    assert ParamSpace.from_mapping(space.to_mapping()) == space
    d = space.defaults(4)
    assert d["colour"].tolist() == [1] * 4 and d["count"].dtype == np.int64 and d["size"].dtype == np.float32
    space.check_params(d, 4)


def test_unknown_parameter_lookup_names_it():
    with pytest.raises(SpaceError, match="'nope'"):
        space["nope"]


# -- sampling -----------------------------------------------------------------------------------

ACTION = {"size": [1, 2, 3, 4], "count": [0, 1, 0, 5, 1, 1], "colour": [0.2, 0, 0.8]}


def test_sample_is_deterministic():
    a, sa = space.sample(ACTION, 1234, 300)
    b, sb = space.sample({k: list(v) for k, v in ACTION.items()}, 1234, 300)
    assert sa.tobytes() == sb.tobytes()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    c, sc = space.sample(ACTION, 1235, 300)
    assert not np.array_equal(sa, sc) and not np.array_equal(a["size"], c["size"])


def test_sample_i_of_n_equals_sample_i_of_fewer():
    big, seeds_big = space.sample(ACTION, 99, 500)
    for k in (1, 17, 499):
        small, seeds_small = space.sample(ACTION, 99, k)
        np.testing.assert_array_equal(seeds_small, rng.derive_seeds(99, k))
        np.testing.assert_array_equal(seeds_big[:k], seeds_small)
        for name in big:
            assert big[name][:k].tobytes() == small[name].tobytes(), (name, k)


def test_derive_seeds_is_a_prefix_family_and_unique():
    s = rng.derive_seeds(5, 10_000)
    assert s.dtype == np.uint64 and len(np.unique(s)) == 10_000
    np.testing.assert_array_equal(rng.derive_seeds(5, 37), s[:37])
    assert rng.derive_seeds(5, 0).shape == (0,)
    # seeds beyond 64 bits wrap instead of failing
    np.testing.assert_array_equal(rng.derive_seeds(2**64 + 5, 3), s[:3])


@pytest.mark.parametrize("action", [None, {}, ACTION, {"tiny": [0, 0, 1]}])
def test_values_stay_inside_their_ranges(action):
    params, seeds = space.sample(action, 7, 5000)
    assert seeds.dtype == np.uint64 and seeds.shape == (5000,)
    for name in ("size", "tiny"):
        p, v = space[name], params[name]
        assert v.dtype == np.float32
        assert v.min() >= np.float32(p.low) and v.max() <= np.float32(p.high)
    assert params["count"].dtype == np.int64
    assert set(np.unique(params["count"])) <= set(range(1, 7))
    assert set(np.unique(params["colour"])) <= {0, 1, 2}
    space.check_params(params, 5000)


def test_uniform_sampling_covers_everything():
    params, _ = space.sample(None, 3, 6000)
    assert set(np.unique(params["count"])) == set(range(1, 7))
    assert set(np.unique(params["colour"])) == {0, 1, 2}
    hist, _ = np.histogram(params["size"], bins=5, range=(-2, 3))
    assert hist.min() > 1000  # 1,200 expected per bin


@pytest.mark.parametrize("k", [1, 4, 10])
def test_weight_only_on_last_bin_gives_the_top_of_the_range(k):
    w = [0] * (k - 1) + [1]
    params, _ = space.sample({"size": w, "tiny": w}, 11, 4000)
    for name in ("size", "tiny"):
        p, v = space[name], params[name].astype(np.float64)
        edge = p.low + (k - 1) / k * (p.high - p.low)
        assert v.min() >= edge - 1e-6 * (p.high - p.low), name
        assert v.max() <= p.high + 1e-6 * (p.high - p.low), name
        if k > 1:  # spread over the whole last bin, not piled on an edge
            assert v.max() - v.min() > 0.9 * (p.high - p.low) / k


def test_bin_weights_are_followed():
    params, _ = space.sample({"colour": [0.2, 0, 0.8], "count": [0, 1, 0, 0, 0, 3]}, 5, 20_000)
    frac = np.bincount(params["colour"], minlength=3) / 20_000
    assert frac[1] == 0 and abs(frac[2] - 0.8) < 0.02
    counts = np.bincount(params["count"], minlength=7)
    assert counts[[1, 3, 4, 5]].sum() == 0 and abs(counts[6] / 20_000 - 0.75) < 0.02


def test_int_with_fewer_bins_than_values():
    params, _ = space.sample({"count": [0, 1]}, 5, 3000)  # second half of 1..6
    assert set(np.unique(params["count"])) == {4, 5, 6}


@pytest.mark.parametrize("action, words", [
    ({"size": [1, -1, 2]}, ["'size'", ">= 0"]),
    ({"size": [0, 0, 0]}, ["'size'", "not all zero"]),
    ({"size": []}, ["'size'"]),
    ({"size": [1, float("nan")]}, ["'size'", "finite"]),
    ({"count": [1, float("inf")]}, ["'count'", "finite"]),
    ({"colour": [1, 1]}, ["'colour'", "2 weights for 3 choices"]),
    ({"colour": [1, 1, 1, 1]}, ["'colour'", "4 weights"]),
    ({"count": [1] * 7}, ["'count'", "7 bins for 6"]),
    ({"nope": [1]}, ["'nope'"]),
])
def test_action_errors_name_the_parameter(action, words):
    with pytest.raises(SpaceError) as e:
        space.sample(action, 0, 4)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


# -- checking parameter values -------------------------------------------------------------------

def good(n=5):
    return space.sample(None, 1, n)[0]


@pytest.mark.parametrize("mutate, words", [
    (lambda p: p.update(extra=np.zeros(5, np.float32)), ["unknown", "extra"]),
    (lambda p: p.pop("count"), ["missing", "'count'"]),
    (lambda p: p.update(size=np.array([0, 0, 0, 0, 3.5], np.float32)), ["'size'", "3.5"]),
    (lambda p: p.update(size=np.array([0, 0, -2.5, 0, 0], np.float32)), ["'size'", "-2.5"]),
    (lambda p: p.update(size=np.array([0, 0, np.nan, 0, 0], np.float32)), ["'size'"]),
    (lambda p: p.update(count=np.array([1, 2, 3, 0, 1])), ["'count'", "0"]),
    (lambda p: p.update(count=np.array([1, 2, 3, 7, 1])), ["'count'", "7"]),
    (lambda p: p.update(colour=np.array([0, 3, 0, 0, 0])), ["'colour'", "3"]),
    (lambda p: p.update(colour=np.array([0, -1, 0, 0, 0])), ["'colour'"]),
    (lambda p: p.update(count=np.array([1.0, 2, 3, 4, 5])), ["'count'", "integer"]),
    (lambda p: p.update(size=np.array([0, 1, 0, 1, 0])), ["'size'", "float"]),
    (lambda p: p.update(size=np.zeros(4, np.float32)), ["'size'", "shape"]),
    (lambda p: p.update(size=np.zeros((5, 1), np.float32)), ["'size'", "shape"]),
    (lambda p: p.update(size=np.float32(0)), ["'size'", "shape"]),
])
def test_check_params_rejects(mutate, words):
    p = good()
    space.check_params(p, 5)
    mutate(p)
    with pytest.raises(SpaceError) as e:
        space.check_params(p, 5)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


# -- the counter-based RNG -------------------------------------------------------------------------

def test_uniform_range_and_mean():
    seeds = rng.derive_seeds(0, 1000)
    u = rng.uniform(seeds, "test", 100)
    assert u.dtype == np.float32 and u.shape == (1000, 100)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(float(u.mean(dtype=np.float64)) - 0.5) < 0.005  # std of the mean ≈ 0.0009
    hist = np.bincount((u * 10).astype(int).ravel(), minlength=10)
    assert hist.min() > 9_500 and hist.max() < 10_500


def test_streams_differ_and_repeat():
    seeds = rng.derive_seeds(42, 64)
    a, b = rng.uniform(seeds, "a", 8), rng.uniform(seeds, "b", 8)
    assert not np.any(a == b) or np.mean(a == b) < 0.01
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.1
    np.testing.assert_array_equal(rng.uniform(seeds, "a", 8), a)
    np.testing.assert_array_equal(rng.bits(seeds, "a", 8), rng.bits(seeds.copy(), "a", 8))
    assert not np.array_equal(rng.uniform(rng.derive_seeds(43, 64), "a", 8), a)


def test_more_counters_extend_fewer():
    seeds = rng.derive_seeds(1, 16)
    np.testing.assert_array_equal(rng.bits(seeds, "s", 3), rng.bits(seeds, "s", 10)[:, :3])


def test_sample_alone_equals_inside_a_batch():
    seeds = rng.derive_seeds(9, 50)
    for fn in (rng.uniform, rng.normal, rng.bits):
        batch = fn(seeds, "x", 6)
        for i in (0, 17, 49):
            np.testing.assert_array_equal(fn(seeds[i : i + 1], "x", 6)[0], batch[i])
        np.testing.assert_array_equal(fn(seeds[::-1].copy(), "x", 6)[::-1], batch)


def test_normal_moments():
    z = rng.normal(rng.derive_seeds(3, 2000), "n", 50).astype(np.float64)
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02


def test_mix64_is_a_bijection_on_a_sample():
    z = rng.mix64(np.arange(100_000, dtype=np.uint64))
    assert int(rng.mix64(np.uint64(0))) == 0 and len(np.unique(z)) == z.size


def _splitmix64_ref(seed: int, n: int) -> np.ndarray:
    """SplitMix64 in plain Python ints: pins the stream, or stored runs would replay differently."""
    m = (1 << 64) - 1
    out = []
    for i in range(1, n + 1):
        z = (seed + i * 0x9E3779B97F4A7C15) & m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        out.append(z ^ (z >> 31))
    return np.array(out, dtype=np.uint64)



def test_derive_seeds_matches_reference_splitmix64():
    for seed in (0, 1, 2**63 + 12345, 2**64 - 1):
        np.testing.assert_array_equal(rng.derive_seeds(seed, 20), _splitmix64_ref(seed, 20))
