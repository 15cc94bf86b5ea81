"""Record golden values of ``jax.random`` for tests/test_random.py.

jax is not a test dependency: run this by hand in an environment that has jax, and commit
the JSON it writes. ``python tests/golden/record_jax_random.py`` rewrites
``tests/golden/jax_random.json`` next to this file.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

R = jax.random
SEEDS = [0, 1, 42, 2**31 - 1, 2**31 + 5, 2**32 - 1, -1, -(2**31)]


def raw(k):
    return np.asarray(R.key_data(k)).tolist()


def vals(x):
    return np.asarray(x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x).tolist()


def record():
    out = {
        "jax_version": jax.__version__,
        "partitionable": bool(jax.config.jax_threefry_partitionable),
    }
    out["key"] = {str(s): raw(R.key(s)) for s in SEEDS}
    k = R.key(7)
    out["split"] = {
        "3": raw(R.split(k, 3)),
        "2x3": raw(R.split(k, (2, 3))),
        "1": raw(R.split(R.key(0), 1)),
    }
    out["fold_in"] = {str(d): raw(R.fold_in(k, d)) for d in [0, 1, 7, 2**31, 2**32 - 1]}
    out["bits"] = {
        name: vals(R.bits(k, (2, 5), dtype=dt))
        for name, dt in [("uint8", jnp.uint8), ("uint16", jnp.uint16), ("uint32", jnp.uint32)]
    }
    out["bits_keys"] = {str(s): vals(R.bits(R.key(s), (9,))) for s in SEEDS[:4]}
    uni = {}
    for dname, dt in [
        ("float32", jnp.float32),
        ("float16", jnp.float16),
        ("bfloat16", jnp.bfloat16),
    ]:
        for lo, hi in [(0.0, 1.0), (-2.5, 7.3), (3.0, 3.5), (-1.0, 1.0), (1e-3, 0.1)]:
            uni[f"{dname}/{lo}/{hi}"] = vals(R.uniform(k, (4, 8), dt, lo, hi))
    out["uniform"] = uni
    out["uniform_array_bounds"] = vals(
        R.uniform(k, (3, 4), jnp.float32, jnp.array([0.0, 1.0, -3.0, 10.0]), jnp.array(11.5))
    )
    out["bernoulli"] = {str(p): vals(R.bernoulli(k, p, (32,))) for p in [0.1, 0.5, 0.9]}
    out["bernoulli_array"] = vals(R.bernoulli(k, jnp.array([0.0, 0.25, 0.5, 0.75, 1.0])))
    ri = {}
    for dname, dt, lo, hi in [
        ("int32", jnp.int32, 0, 10),
        ("int32", jnp.int32, -5, 5),
        ("int32", jnp.int32, 0, 2**31 - 1),
        ("int32", jnp.int32, -(2**31), 2**31 - 1),
        ("int32", jnp.int32, 3, 3),
        ("int32", jnp.int32, 5, 2),
        ("int32", jnp.int32, 0, 100_003),
        ("int8", jnp.int8, -128, 127),
        ("int8", jnp.int8, 0, 200),
        ("uint8", jnp.uint8, 0, 256),
        ("int16", jnp.int16, -100, 1000),
    ]:
        ri[f"{dname}/{lo}/{hi}"] = vals(R.randint(k, (3, 7), lo, hi, dt))
    out["randint"] = ri
    out["permutation"] = {
        "10": vals(R.permutation(k, 10)),
        "2000": vals(R.permutation(k, 2000)),
        "rows": vals(R.permutation(k, jnp.arange(12).reshape(3, 4), axis=1)),
        "independent": vals(
            R.permutation(k, jnp.arange(12).reshape(3, 4), axis=1, independent=True)
        ),
    }
    out["choice"] = {
        "replace": vals(R.choice(k, 10, (6,))),
        "noreplace": vals(R.choice(k, 10, (6,), replace=False)),
        "array_axis1": vals(R.choice(k, jnp.arange(12).reshape(3, 4), (2,), replace=False, axis=1)),
        "p_replace": vals(R.choice(k, 5, (8,), p=jnp.array([0.1, 0.2, 0.3, 0.15, 0.25]))),
        "p_noreplace": vals(
            R.choice(k, 5, (3,), replace=False, p=jnp.array([0.1, 0.2, 0.3, 0.15, 0.25]))
        ),
    }
    out["normal"] = {
        "float32": vals(R.normal(k, (64,), jnp.float32)),
        "float16": vals(R.normal(k, (16,), jnp.float16)),
        "bfloat16": vals(R.normal(k, (16,), jnp.bfloat16)),
    }
    out["truncated_normal"] = vals(R.truncated_normal(k, -1.5, 2.0, (32,)))
    out["gumbel"] = vals(R.gumbel(k, (32,)))
    out["exponential"] = vals(R.exponential(k, (32,)))
    logits = jnp.log(jnp.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]))
    out["categorical"] = {
        "1d": vals(R.categorical(k, logits[0], shape=(20,))),
        "2d": vals(R.categorical(k, logits, axis=-1, shape=(4, 2))),
        "axis0": vals(R.categorical(k, logits.T, axis=0)),
        "noreplace": vals(R.categorical(k, jnp.zeros((2, 6)), shape=(4, 2), replace=False)),
    }
    out["orthogonal"] = {
        "4": vals(R.orthogonal(k, 4)),
        "3x5": vals(R.orthogonal(k, 3, m=5)),
        "5x3": vals(R.orthogonal(k, 5, m=3)),
    }
    # 64-bit results need jax_enable_x64.
    jax.config.update("jax_enable_x64", True)
    out["x64"] = {
        "bits_uint64": [str(v) for v in np.asarray(R.bits(k, (6,), dtype=jnp.uint64)).tolist()],
        "uniform_float64": vals(R.uniform(k, (8,), jnp.float64)),
        "uniform_float64_range": vals(R.uniform(k, (8,), jnp.float64, -2.5, 7.3)),
        "key_big": {str(s): raw(R.key(s)) for s in [2**32 + 5, 2**40 + 3]},
    }
    return out


if __name__ == "__main__":
    path = pathlib.Path(__file__).with_name("jax_random.json")
    path.write_text(json.dumps(record(), indent=1) + "\n")
    print("wrote", path)
