"""fnn.checkpoint: save/restore round trips bit for bit, structure checks, corruption, interop.

The reference for every round trip is the original tree itself, compared byte for byte
(``assert_identical``: same types, dtypes, shapes, dict key order, and the same bytes; never
``allclose``). Interop is checked against the real ``safetensors`` package and ``torch.nn``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import pickle
import struct
import tempfile
import typing
from pathlib import Path
from typing import Any

import numpy as np
import optree
import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
import fnn_optim as optim
from fnn import nn
from fnn.checkpoint import (
    CheckpointError,
    CorruptCheckpointError,
    IncompleteCheckpointError,
    StructureMismatchError,
)

# --------------------------------------------------------------------------------------------
# The reference comparison: identical types, structure, dtypes, shapes and bytes
# --------------------------------------------------------------------------------------------


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().resolve_conj().resolve_neg().contiguous()
    return (
        t.as_strided((t.numel(),), (1,)).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    )


def assert_identical(a: Any, b: Any, path: str = "<root>") -> None:
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device), path
        assert a.requires_grad == b.requires_grad, path
        assert tensor_bytes(a) == tensor_bytes(b), f"{path}: {a} != {b}"
    elif isinstance(a, np.ndarray | np.generic):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), path
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, dict):
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b], path
        if isinstance(a, collections.defaultdict):
            assert a.default_factory is b.default_factory, path
        for k in a:
            assert_identical(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple | collections.deque):
        assert len(a) == len(b), path
        if isinstance(a, collections.deque):
            assert a.maxlen == b.maxlen, path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{path}.{i}")
    elif a is None or isinstance(a, int | str | bool):
        assert a == b, f"{path}: {a!r} != {b!r}"
    else:  # a registered pytree node
        ca, ma, ea, _ = optree.tree_flatten_one_level(a, namespace="fnn", none_is_leaf=False)
        cb, mb, eb, _ = optree.tree_flatten_one_level(b, namespace="fnn", none_is_leaf=False)
        assert (ma, ea) == (mb, eb), path
        for e, x, y in zip(ea, ca, cb, strict=True):
            assert_identical(x, y, f"{path}.{e}")


def round_trip(tree: Any, **restore_kwargs: Any) -> Any:
    with tempfile.TemporaryDirectory() as d:
        fnn.checkpoint.save(f"{d}/ckpt", tree)
        return fnn.checkpoint.restore(f"{d}/ckpt", **restore_kwargs)


# Test containers: a NamedTuple and a registered dataclass with a static field.
class Pair(typing.NamedTuple):
    first: Any
    second: Any


@fnn.tree.register_dataclass
@dataclasses.dataclass
class Box:
    value: Any
    label: str = dataclasses.field(default="box", metadata={"static": True})


# --------------------------------------------------------------------------------------------
# Hypothesis: round trips of arbitrary trees
# --------------------------------------------------------------------------------------------

TORCH_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.bool,
    torch.complex64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
]
NUMPY_DTYPES = [np.dtype(c) for c in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8")] + [
    np.dtype(c) for c in ("f2", "f4", "f8", "c8")
]


def _raw(draw: Any, n: int, itemsize: int, is_bool: bool) -> bytearray:
    if is_bool:
        return bytearray(draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)))
    return bytearray(draw(st.binary(min_size=n * itemsize, max_size=n * itemsize)))


@st.composite
def tensors(draw: Any) -> torch.Tensor:
    """Any dtype and bit pattern (NaN payloads included), 0-d to 3-d, empty, non-contiguous."""
    dtype = draw(st.sampled_from(TORCH_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    base_shape = {
        "contiguous": shape,
        "transposed": shape[::-1],
        "strided": (2 * shape[0], *shape[1:]) if shape else shape,
    }[layout]
    n = math.prod(base_shape)
    raw = _raw(draw, n, dtype.itemsize, dtype == torch.bool)
    base = torch.frombuffer(raw, dtype=dtype) if n else torch.empty(0, dtype=dtype)
    base = base.reshape(base_shape)
    t = {"contiguous": base, "transposed": base.permute(tuple(reversed(range(base.ndim))))}.get(
        layout
    )
    if t is None:
        t = base[::2] if shape else base
    assert t.shape == shape
    if dtype.is_floating_point and dtype.itemsize > 1 and draw(st.booleans()):
        t = t.detach().requires_grad_(True)
    return t


@st.composite
def arrays(draw: Any) -> np.ndarray | np.generic:
    dtype = draw(st.sampled_from(NUMPY_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    n = math.prod(shape)
    raw = _raw(draw, n, dtype.itemsize, dtype == np.bool_)
    a = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape).copy()
    kind = draw(st.sampled_from(["array", "transposed", "scalar"]))
    if kind == "transposed":
        return a.T
    if kind == "scalar":
        return np.frombuffer(bytes(_raw(draw, 1, dtype.itemsize, dtype == np.bool_)), dtype)[0]
    return a


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # arbitrary size
    st.floats(allow_nan=True, allow_infinity=True),  # NaN payloads and -0.0 too
    st.text(max_size=6),
)
keys = st.one_of(st.text(max_size=4), st.integers(-2, 2))

trees = st.recursive(
    st.one_of(tensors(), arrays(), json_scalars),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, children, max_size=3),
        st.builds(Pair, children, children),
        st.builds(Box, children, st.sampled_from(["a", "b"])),
    ),
    max_leaves=8,
)


@settings(max_examples=60)
@given(trees)
def test_any_tree_round_trips_bit_for_bit(tree):
    with tempfile.TemporaryDirectory() as d:
        fnn.checkpoint.save(f"{d}/ckpt", tree)
        assert_identical(fnn.checkpoint.restore(f"{d}/ckpt"), tree)
        assert_identical(fnn.checkpoint.restore(f"{d}/ckpt", mmap=True), tree)
        paths = [p for p, _ in fnn.tree.flatten_with_path(tree)[0]]
        if len(set(paths)) == len(paths):  # like= matches by dotted path
            assert_identical(fnn.checkpoint.restore(f"{d}/ckpt", like=tree), tree)


# --------------------------------------------------------------------------------------------
# Every leaf kind, explicitly
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_every_tensor_dtype_keeps_its_bits_in_every_layout(dtype):
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (2 * 3 * 4 * dtype.itemsize,), dtype=torch.uint8, generator=g)
    base = raw.view(dtype).reshape(2, 3, 4) if dtype != torch.bool else (raw[:24] % 2).bool()
    base = base.reshape(2, 3, 4)
    tree = {
        "scalar": base.reshape(-1)[0].clone(),  # 0-d
        "empty": base.reshape(-1)[:0].reshape(0, 3),
        "contiguous": base,
        "transposed": base.transpose(0, 2),
        "sliced": base[:, ::2, 1:],
        "expanded": base[0, 0, :1].expand(5, 3),
    }
    assert tree["scalar"].ndim == 0 and not tree["transposed"].is_contiguous()
    assert_identical(round_trip(tree), tree)


def test_numpy_leaves_come_back_as_numpy():
    tree = {
        "f32": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
        "zero_d": np.array(7, dtype=np.uint16),
        "scalar": np.float64(2.5),
        "bool": np.array([True, False]),
        "empty": np.zeros((0, 2), dtype=np.complex64),
    }
    restored = round_trip(tree)
    assert_identical(restored, tree)
    assert isinstance(restored["scalar"], np.float64) and type(restored["f32"]) is np.ndarray


def test_json_scalars_keep_type_and_exact_value():
    payload_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF0_0000_DEAD_BEEF))[0]
    tree = {
        "int": 3,
        "big": 2**100 + 1,
        "neg": -(2**70),
        "bool": True,
        "false": False,
        "float": 0.1,
        "tiny": 5e-324,
        "neg_zero": -0.0,
        "inf": math.inf,
        "-inf": -math.inf,
        "nan": math.nan,
        "payload_nan": payload_nan,
        "str": 'héllo ✓ \n "quoted"',
        "none": None,
        "nested": {"epoch": 2, "position": [1, 2.5, "x", None, False]},
    }
    assert_identical(round_trip(tree), tree)


def test_containers_keep_their_kind_key_order_and_key_types():
    t = torch.arange(3)
    tree = {
        "z_first": 1,
        "a_second": 2,
        3: "int key",
        True: "bool key",
        "od": collections.OrderedDict([("b", t), ("a", t + 1)]),
        "dd": collections.defaultdict(list, {"x": [t]}),
        "deque": collections.deque([t, 1], maxlen=4),
        "tuple": (t, (t,), ()),
        "list": [[], [t]],
        "pair": Pair(t, Pair(None, 2.0)),
        "box": Box({"w": t}, "static label"),
        "empty": {},
    }
    restored = round_trip(tree)
    assert_identical(restored, tree)
    assert list(restored) == list(tree)


def test_tensor_names_in_the_file_are_the_dotted_paths_of_fnn_tree():
    tree = {"encoder": {"layers": [{"weight": torch.ones(2, 3)}]}, "opt": Pair(torch.ones(1), 1)}
    with tempfile.TemporaryDirectory() as d:
        fnn.checkpoint.save(d + "/c", tree)
        names = set(safetensors.torch.load_file(d + "/c/tensors.safetensors"))
    tensor_paths = {p for p, x in fnn.tree.flatten_with_path(tree)[0] if torch.is_tensor(x)}
    assert names == tensor_paths == {"encoder.layers.0.weight", "opt.first"}


def test_colliding_dotted_paths_still_round_trip_without_like():
    tree = {"a.b": torch.zeros(1), "a": {"b": torch.ones(1)}, 1: torch.full((1,), 2.0)}
    tree["1"] = torch.full((1,), 3.0)
    with tempfile.TemporaryDirectory() as d:
        fnn.checkpoint.save(d + "/c", tree)
        assert_identical(fnn.checkpoint.restore(d + "/c"), tree)
        with pytest.raises(CheckpointError, match=r"same dotted path|have the path"):
            fnn.checkpoint.restore(d + "/c", like={"x": torch.zeros(1)})


# --------------------------------------------------------------------------------------------
# fnn states: optimizer, BatchNorm, PRNG keys
# --------------------------------------------------------------------------------------------


def _adamw_run():
    params = {"conv": {"weight": torch.randn(4, 1, 3, 3)}, "bias": torch.randn(4)}
    schedule = optim.warmup_cosine(1e-2, 2, 10)
    opt = optim.inject_hyperparams(optim.adamw)(learning_rate=schedule, weight_decay=0.05)
    state = opt.init(params)
    for i in range(3):
        grads = fnn.tree.map(lambda p, i=i: torch.sin(p * (i + 1)), params)
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    return opt, params, state


def test_adamw_with_injected_schedule_round_trips_and_continues_identically():
    opt, params, state = _adamw_run()
    assert state.count.dtype == torch.int64 and state.count.ndim == 0
    restored = round_trip({"params": params, "opt": state})
    assert_identical(restored, {"params": params, "opt": state})
    assert type(restored["opt"]) is optim.InjectHyperparamsState
    # the restored state drives the optimizer exactly like the original
    grads = fnn.tree.map(torch.cos, params)
    expected = opt.update(grads, state, params)
    assert_identical(opt.update(grads, restored["opt"], restored["params"]), expected)
    # and restoring onto a freshly initialised state (like=) gives the same
    like = {"params": params, "opt": opt.init(params)}
    assert_identical(round_trip({"params": params, "opt": state}, like=like), restored)


def _bn_model():
    return nn.Sequential(
        [nn.Conv2d(4, 3, padding=1), nn.BatchNorm2d(), nn.relu, nn.Flatten(), nn.Linear(3)]
    )


def test_batchnorm_params_and_state_round_trip_and_apply_identically():
    model = _bn_model()
    x = torch.randn(6, 2, 5, 5)
    params, state = model.init(fnn.random.key(0), x)
    _, state = model.apply(params, x, state=state, train=True)
    assert state["1"]["num_batches_tracked"].dtype == torch.int64
    restored = round_trip({"params": params, "state": state})
    assert_identical(restored, {"params": params, "state": state})
    y = model.apply(params, x, state=state, train=False)[0]
    y2 = model.apply(restored["params"], x, state=restored["state"], train=False)[0]
    assert torch.equal(y, y2)
    # restoring onto init_shapes (meta tensors: shapes only) lands on the CPU
    like = dict(zip(("params", "state"), model.init_shapes(x), strict=True))
    on_like = round_trip({"params": params, "state": state}, like=like)
    assert_identical(on_like, restored)


def test_prng_keys_round_trip_and_draw_the_same_numbers():
    key = fnn.random.key(42)
    keys = fnn.random.split(key, 5)
    restored = round_trip({"key": key, "keys": keys})
    assert restored["key"].dtype == torch.uint32 and restored["keys"].shape == (5, 2)
    assert_identical(restored, {"key": key, "keys": keys})
    assert torch.equal(fnn.random.normal(restored["key"], (4,)), fnn.random.normal(key, (4,)))


# --------------------------------------------------------------------------------------------
# restore(like=...): every problem at once
# --------------------------------------------------------------------------------------------


def test_like_mismatch_lists_every_missing_unexpected_shape_dtype_and_kind_problem():
    saved = {
        "params": {"w": torch.zeros(2, 3), "b": torch.zeros(3), "old": torch.zeros(1)},
        "opt": Pair(torch.zeros((), dtype=torch.int64), torch.zeros(2)),
        "step": 5,
        "extra": {"x": torch.zeros(1)},
    }
    like = {
        "params": {"w": torch.zeros(3, 2), "b": torch.zeros(3, dtype=torch.float64)},
        "opt": Pair(torch.zeros((), dtype=torch.int64), torch.zeros(2)),
        "step": torch.zeros(()),
        "new": {"y": torch.zeros(1), "z": 1.0},
    }
    with tempfile.TemporaryDirectory() as d:
        fnn.checkpoint.save(d + "/c", saved)
        with pytest.raises(StructureMismatchError) as info:
            fnn.checkpoint.restore(d + "/c", like=like)
    message = str(info.value)
    assert "missing (in like, not in the checkpoint): ['new.y', 'new.z']" in message
    assert "unexpected (in the checkpoint, not in like): ['extra.x', 'params.old']" in message
    assert "'params.w': shape (2, 3) in the checkpoint, (3, 2) in like" in message
    assert "'params.b': dtype torch.float32 in the checkpoint, torch.float64 in like" in message
    assert "'step': a int in the checkpoint, a tensor torch.float32 () in like" in message
    assert "opt" not in message  # the matching parts are not mentioned


def test_like_gives_its_containers_and_restores_classes_it_cannot_import(tmp_path):
    tree = Pair(torch.ones(2), {"n": 3})
    fnn.checkpoint.save(tmp_path / "c", tree)
    _rewrite_manifest(
        tmp_path / "c", lambda m: m["structure"].update(type="not_imported_module_xyz:Pair")
    )
    with pytest.raises(CheckpointError, match=r"not_imported_module_xyz:Pair.*pass like="):
        fnn.checkpoint.restore(tmp_path / "c")
    restored = fnn.checkpoint.restore(tmp_path / "c", like=Pair(torch.zeros(2), {"n": 0}))
    assert_identical(restored, tree)


def _rewrite_manifest(path: Path, edit: Any) -> None:
    """Edit a manifest and give it a valid checksum again (as an attacker could)."""
    file = path / "manifest.json"
    manifest = json.loads(file.read_text())
    manifest.pop("checksum")
    edit(manifest)
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False)
    manifest["checksum"] = hashlib.sha256(canonical.encode()).hexdigest()
    file.write_text(json.dumps(manifest))


def test_a_crafted_manifest_cannot_make_restore_call_anything(tmp_path):
    fnn.checkpoint.save(tmp_path / "c", Box(torch.ones(1)))
    for evil in ("os:system", "subprocess:Popen", "builtins:eval", "collections:OrderedDict"):
        _rewrite_manifest(tmp_path / "c", lambda m, evil=evil: m["structure"].update(type=evil))
        with pytest.raises(CheckpointError, match="cannot rebuild the registered pytree node"):
            fnn.checkpoint.restore(tmp_path / "c")
    _rewrite_manifest(
        tmp_path / "c", lambda m: m["structure"].update(kind="namedtuple", fields=["value"])
    )
    with pytest.raises(CheckpointError, match="cannot rebuild the NamedTuple"):
        fnn.checkpoint.restore(tmp_path / "c")


# --------------------------------------------------------------------------------------------
# Broken checkpoints are refused, naming the file
# --------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    tree = {"w": torch.arange(1000, dtype=torch.float32), "b": torch.ones(3, dtype=torch.bfloat16)}
    fnn.checkpoint.save(tmp_path / "c", tree)
    return tmp_path / "c"


@pytest.mark.parametrize("mmap", [False, True])
def test_a_flipped_byte_in_the_tensor_file_is_a_checksum_error_naming_it(saved, mmap):
    file = saved / "tensors.safetensors"
    data = bytearray(file.read_bytes())
    data[-100] ^= 0x01  # inside the data of "w"
    file.write_bytes(bytes(data))
    with pytest.raises(
        CorruptCheckpointError, match=r"tensors\.safetensors is corrupt: its sha256"
    ):
        fnn.checkpoint.restore(saved, mmap=mmap)


def test_a_flipped_byte_in_the_manifest_is_refused_naming_it(saved):
    file = saved / "manifest.json"
    text = file.read_text()
    file.write_text(text.replace('"shape":[1000]', '"shape":[1001]'))
    with pytest.raises(CorruptCheckpointError, match=r"manifest\.json is corrupt"):
        fnn.checkpoint.restore(saved)


@pytest.mark.parametrize("verify", [True, False])
def test_a_truncated_file_is_refused_naming_it(saved, verify):
    file = saved / "tensors.safetensors"
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(CorruptCheckpointError, match=r"tensors\.safetensors has \d+ bytes but"):
        fnn.checkpoint.restore(saved, verify=verify)


def test_a_deleted_manifest_is_refused_as_incomplete(saved):
    (saved / "manifest.json").unlink()
    with pytest.raises(IncompleteCheckpointError, match=r"has no manifest\.json"):
        fnn.checkpoint.restore(saved)
    with pytest.raises(IncompleteCheckpointError):
        fnn.checkpoint.read_metadata(saved)


@pytest.mark.parametrize("mmap", [False, True])
def test_a_garbage_header_length_is_refused_without_reading_garbage(saved, mmap):
    file = saved / "tensors.safetensors"
    data = bytearray(file.read_bytes())
    data[:8] = struct.pack("<Q", 2**62)
    file.write_bytes(bytes(data))
    # the checksum catches it first; without verification the header check does
    with pytest.raises(CorruptCheckpointError, match="sha256"):
        fnn.checkpoint.restore(saved, mmap=mmap)
    with pytest.raises(CorruptCheckpointError, match="header length field says 4611686018427"):
        fnn.checkpoint.restore(saved, mmap=mmap, verify=False)


def test_a_header_that_disagrees_with_the_manifest_is_refused(saved):
    other = {"w": torch.arange(1000, dtype=torch.float32), "b": torch.ones(3)}  # b is F32 now
    safetensors.torch.save_file(other, str(saved / "tensors.safetensors"))
    with pytest.raises(CorruptCheckpointError):
        fnn.checkpoint.restore(saved, verify=False)


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        fnn.checkpoint.restore(tmp_path / "nothing")


# --------------------------------------------------------------------------------------------
# save: what it refuses, and its options
# --------------------------------------------------------------------------------------------


def test_unsupported_leaves_are_refused_naming_their_path(tmp_path):
    cases = [
        ({"a": {"b": object()}}, "'a.b' is a builtins.object"),
        ({"x": [torch.zeros(2, dtype=torch.complex128)]}, "'x.0' has dtype torch.complex128"),
        ({"m": torch.empty(2, device="meta")}, "'m' is on the meta device"),
        ({"s": torch.zeros(3).to_sparse()}, "'s' has layout torch.sparse_coo"),
        ({"d": {(1, 2): torch.zeros(1)}}, r"'d' has keys \[\(1, 2\)\]"),
        ({"n": np.array(["text"])}, "'n' has dtype <U4"),
        ({"f": collections.defaultdict(lambda: 0)}, "default factory"),
    ]
    for tree, message in cases:
        with pytest.raises(TypeError, match=message):
            fnn.checkpoint.save(tmp_path / "c", tree)
    assert not list(tmp_path.iterdir())  # nothing written, no leftovers
    with pytest.raises(TypeError, match="metadata must be plain JSON"):
        fnn.checkpoint.save(tmp_path / "c", {}, metadata={"x": math.nan})


def test_save_replaces_a_checkpoint_but_never_other_files(tmp_path):
    fnn.checkpoint.save(tmp_path / "c", {"v": 1})
    fnn.checkpoint.save(tmp_path / "c", {"v": 2})
    assert fnn.checkpoint.restore(tmp_path / "c") == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no leftovers
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        fnn.checkpoint.save(tmp_path / "mine", {"v": 1})
    (tmp_path / "file").write_text("precious")
    with pytest.raises(FileExistsError, match="not a checkpoint directory"):
        fnn.checkpoint.save(tmp_path / "file", {"v": 1})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_metadata_is_stored_in_the_manifest(tmp_path):
    meta = {"loss": 0.125, "config": {"lr": 1e-3, "layers": [1, 2]}, "note": "ok"}
    fnn.checkpoint.save(tmp_path / "c", {"w": torch.ones(1)}, metadata=meta)
    assert fnn.checkpoint.read_metadata(tmp_path / "c") == meta
    assert fnn.checkpoint.read_metadata(tmp_path / "c") is not meta


def test_map_location_moves_every_tensor(saved):
    restored = fnn.checkpoint.restore(saved, map_location="meta")
    assert {t.device.type for t in restored.values()} == {"meta"}
    like = {"w": torch.empty(1000, device="meta"), "b": torch.empty(3, dtype=torch.bfloat16)}
    restored = fnn.checkpoint.restore(saved, like=like)  # meta in like: CPU
    assert {t.device.type for t in restored.values()} == {"cpu"}


def test_mmap_restores_copy_on_write_views_that_never_change_the_file(saved):
    restored = fnn.checkpoint.restore(saved, mmap=True)
    expected = fnn.checkpoint.restore(saved)
    assert_identical(restored, expected)
    restored["w"].add_(1.0)  # writable, private to this process
    assert_identical(fnn.checkpoint.restore(saved), expected)  # the file (and checksum) unchanged


# --------------------------------------------------------------------------------------------
# Interop: the safetensors package, torch.save / torch.load(weights_only=True)
# --------------------------------------------------------------------------------------------


def _every_dtype_tree() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    out = {}
    for dtype in TORCH_DTYPES:
        raw = torch.randint(0, 256, (6 * dtype.itemsize,), dtype=torch.uint8, generator=g)
        out[str(dtype)] = raw.view(dtype).reshape(2, 3) if dtype != torch.bool else raw[:6] > 127
    out["zero_d"] = torch.tensor(3, dtype=torch.int64)
    out["empty"] = torch.zeros(0, 4, dtype=torch.bfloat16)
    return out


def test_the_safetensors_package_reads_our_files(tmp_path):
    tree = {"tensors": _every_dtype_tree(), "array": np.arange(5, dtype=np.int32)}
    fnn.checkpoint.save(tmp_path / "c", tree)
    loaded = safetensors.torch.load_file(str(tmp_path / "c" / "tensors.safetensors"))
    expected = {f"tensors.{k}": v for k, v in tree["tensors"].items()}
    expected["array"] = torch.from_numpy(tree["array"])
    assert sorted(loaded) == sorted(expected)
    for name, t in expected.items():
        assert_identical(loaded[name], t, name)
    with safetensors.safe_open(str(tmp_path / "c" / "tensors.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_we_read_files_written_by_the_safetensors_package(tmp_path):
    tree = _every_dtype_tree()
    fnn.checkpoint.save(tmp_path / "c", tree)
    file = tmp_path / "c" / "tensors.safetensors"
    safetensors.torch.save_file(tree, str(file), metadata={"written_by": "safetensors"})
    data = file.read_bytes()  # the package's layout; give the manifest its sha256 and size
    _rewrite_manifest(
        tmp_path / "c",
        lambda m: m["files"]["tensors.safetensors"].update(
            sha256=hashlib.sha256(data).hexdigest(), size=len(data)
        ),
    )
    for mmap in (False, True):
        assert_identical(fnn.checkpoint.restore(tmp_path / "c", mmap=mmap), tree)


def _cnn_and_twin():
    model = nn.Sequential(
        [nn.Conv2d(4, 3, padding=1), nn.BatchNorm2d(), nn.relu, nn.Flatten(), nn.Linear(5)]
    )
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 5),
    )
    return model, twin


def test_export_torch_loads_into_the_torch_twin_with_the_same_outputs(tmp_path):
    model, twin = _cnn_and_twin()
    x = torch.randn(3, 2, 6, 6)
    params, state = model.init(fnn.random.key(0), x)
    _, state = model.apply(params, x, state=state, train=True)  # non-trivial statistics
    fnn.checkpoint.export_torch(tmp_path / "model.pt", params, state)
    state_dict = torch.load(tmp_path / "model.pt", weights_only=True)
    assert list(state_dict) == list(twin.state_dict())
    twin.load_state_dict(state_dict, strict=True)
    twin.eval()
    y = model.apply(params, x, state=state)[0]
    with torch.no_grad():
        assert torch.equal(twin(x), y)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_import_torch_gives_params_and_state_for_the_fnn_model(tmp_path):
    model, twin = _cnn_and_twin()
    x = torch.randn(3, 2, 6, 6)
    twin.train()(x)  # move the BatchNorm statistics
    twin.eval()
    torch.save(twin.state_dict(), tmp_path / "twin.pt")
    params, state = fnn.checkpoint.import_torch(tmp_path / "twin.pt", model, x)
    with torch.no_grad():
        assert torch.equal(model.apply(params, x, state=state)[0], twin(x))
    flat = fnn.checkpoint.import_torch(tmp_path / "twin.pt")
    assert list(flat) == list(twin.state_dict())


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_import_torch_never_unpickles_code_and_refuses_non_state_dicts(tmp_path, capsys):
    torch.save({"w": torch.ones(1), "evil": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        fnn.checkpoint.import_torch(tmp_path / "evil.pt")
    assert "must never run" not in capsys.readouterr().out
    torch.save({"model": {"w": torch.ones(1)}, "step": 3}, tmp_path / "train.pt")
    with pytest.raises(TypeError, match=r"not a state_dict: the entries \['model', 'step'\]"):
        fnn.checkpoint.import_torch(tmp_path / "train.pt")
