"""RNN, LSTM, GRU and their cells equal their torch.nn twins (float64).

Every comparison loads the fnn parameters into the torch twin by name
(``load_state_dict(to_state_dict(params, state), strict=True)``), then compares outputs, final
states and gradients with respect to the parameters, the input and the initial state. Variable
lengths (``lengths=`` / ``mask=``) are compared with torch's ``pack_padded_sequence`` +
``pad_packed_sequence``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn as tnn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fnn
from fnn import nn
from fnn.testing import assert_trees_all_close, assert_trees_all_equal

F64 = torch.float64
KEY = fnn.random.key(0)
MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
TWIN = {nn.RNN: tnn.RNN, nn.LSTM: tnn.LSTM, nn.GRU: tnn.GRU}
CELL_TWIN = {nn.RNNCell: tnn.RNNCell, nn.LSTMCell: tnn.LSTMCell, nn.GRUCell: tnn.GRUCell}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, dtype=F64, generator=_gen(seed))


def _config(mode: str, **kw) -> tuple[type[nn.Module], dict]:
    """The fnn class and its keyword config for ``mode`` (torch's ``mode`` names)."""
    if mode.startswith("RNN"):
        kw["nonlinearity"] = mode[4:].lower()
        cls = nn.RNN
    else:
        cls = {"LSTM": nn.LSTM, "GRU": nn.GRU}[mode]
    if cls is not nn.LSTM:
        kw.pop("proj_size", None)
    return cls, kw


def _build(mode: str, x: torch.Tensor, **kw):
    """``(model, params, state, twin)`` with the twin holding fnn's parameters."""
    cls, kw = _config(mode, **kw)
    model = cls(**kw)
    params, state = model.init(KEY, x)
    twin = TWIN[cls](x.shape[-1], dtype=F64, **kw)
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    return model, params, state, twin


def _zeros_hx(model: nn.Module, n: int | None, unbatched: bool = False):
    d = 2 if model.bidirectional else 1
    num = model.num_layers * d
    out = getattr(model, "proj_size", 0) or model.hidden_size
    lead = (num,) if unbatched else (num, n)
    h = _randn(*lead, out, seed=7)
    if isinstance(model, nn.LSTM):
        return (h, _randn(*lead, model.hidden_size, seed=8))
    return h


def _loss(out) -> torch.Tensor:
    """A scalar with a different random cotangent for every output element."""
    leaves = fnn.tree.leaves(out)
    return sum((t * _randn(*t.shape, seed=100 + i)).sum() for i, t in enumerate(leaves))


def _fnn_grads(model, params, x, hx, **kw):
    """fnn's outputs and the gradients w.r.t. (params, x, hx), by torch.autograd."""
    p_leaves, p_def = fnn.tree.flatten(params)
    h_leaves, h_def = fnn.tree.flatten(hx)
    p_leaves = [t.detach().requires_grad_(True) for t in p_leaves]
    h_leaves = [t.detach().requires_grad_(True) for t in h_leaves]
    x = x.detach().requires_grad_(True)
    hx = None if hx is None else fnn.tree.unflatten(h_def, h_leaves)
    out = model.apply(fnn.tree.unflatten(p_def, p_leaves), x, hx, **kw)
    grads = torch.autograd.grad(_loss(out), [*p_leaves, x, *h_leaves])
    k = len(p_leaves)
    gp = fnn.tree.unflatten(p_def, list(grads[:k]))
    gh = fnn.tree.unflatten(h_def, list(grads[k + 1 :]))
    return out, gp, grads[k], gh


def _torch_grads(twin, x, hx, lengths=None):
    """The twin's outputs and gradients (packing when ``lengths`` is given)."""
    twin.zero_grad()
    x = x.detach().requires_grad_(True)
    h_leaves, h_def = fnn.tree.flatten(hx)
    h_leaves = [t.detach().requires_grad_(True) for t in h_leaves]
    hx = None if hx is None else fnn.tree.unflatten(h_def, h_leaves)
    if lengths is None:
        out = twin(x, hx)
    else:
        packed = pack_padded_sequence(x, lengths, twin.batch_first, enforce_sorted=False)
        y, state = twin(packed, hx)
        total = x.shape[1] if twin.batch_first else x.shape[0]
        y, _ = pad_packed_sequence(y, twin.batch_first, total_length=total)
        out = (y, state)
    _loss(out).backward()
    gp = _nest({k: p.grad for k, p in twin.named_parameters()})
    gh = fnn.tree.unflatten(h_def, [t.grad for t in h_leaves])
    return fnn.tree.map(torch.detach, out), gp, x.grad, gh


def _nest(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        node = out
        *ps, leaf = k.split(".")
        for p in ps:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _assert_same(fnn_result, torch_result) -> None:
    out, gp, gx, gh = fnn_result
    tout, tgp, tgx, tgh = torch_result
    assert_trees_all_close(fnn.tree.map(torch.detach, out), tout)
    assert_trees_all_close(gp, tgp)
    assert_trees_all_close(gx, tgx)
    assert_trees_all_close(gh, tgh)


# --------------------------------------------------------------------------------------------
# Full sequences
# --------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    bias=st.booleans(),
    hidden=st.integers(1, 5),
    proj=st.integers(0, 3),
    in_size=st.integers(1, 4),
    batch=st.integers(1, 3),
    length=st.integers(1, 5),
    with_hx=st.booleans(),
    unbatched=st.booleans(),
    train=st.booleans(),
)
def test_rnn_lstm_gru_match_torch_in_values_and_grads(
    mode,
    num_layers,
    bidirectional,
    batch_first,
    bias,
    hidden,
    proj,
    in_size,
    batch,
    length,
    with_hx,
    unbatched,
    train,
):
    proj = proj if proj < hidden else 0
    if unbatched:
        x = _randn(length, in_size)
    else:
        x = _randn(batch, length, in_size) if batch_first else _randn(length, batch, in_size)
    model, params, state, twin = _build(
        mode,
        x,
        hidden_size=hidden,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        proj_size=proj,
    )
    assert state == {}
    assert list(nn.to_state_dict(params)) == list(twin.state_dict())  # names in torch's order
    hx = _zeros_hx(model, batch, unbatched) if with_hx else None
    twin.train(train)
    got = _fnn_grads(model, params, x, hx)
    _assert_same(got, _torch_grads(twin, x, hx))
    assert model.apply(params, x, hx, train=train)[0].shape == got[0][0].shape


def test_outputs_and_state_shapes_are_torchs():
    x = _randn(4, 3, 5)  # (L, N, H_in)
    model, params, _, twin = _build(
        "LSTM", x, hidden_size=6, num_layers=2, bidirectional=True, proj_size=2
    )
    y, (h, c) = model.apply(params, x)
    ty, (th, tc) = twin(x)
    assert y.shape == ty.shape == (4, 3, 4)
    assert h.shape == th.shape == (4, 3, 2)
    assert c.shape == tc.shape == (4, 3, 6)
    assert params["weight_hr_l1_reverse"].shape == (2, 6)
    assert params["weight_ih_l1"].shape == (24, 4)


# --------------------------------------------------------------------------------------------
# Variable lengths: lengths= and mask= equal packed sequences
# --------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    num_layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    proj=st.integers(0, 1),
    lengths=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    pad=st.integers(0, 2),
    use_mask=st.booleans(),
    with_hx=st.booleans(),
)
def test_variable_lengths_match_torchs_packed_sequences(
    mode, num_layers, bidirectional, batch_first, proj, lengths, pad, use_mask, with_hx
):
    n, total = len(lengths), max(lengths) + pad  # padding past the longest sequence too
    x = _randn(n, total, 3) if batch_first else _randn(total, n, 3)
    model, params, _, twin = _build(
        mode,
        x,
        hidden_size=4,
        num_layers=num_layers,
        batch_first=batch_first,
        bidirectional=bidirectional,
        proj_size=proj,
    )
    lens = torch.tensor(lengths)
    hx = _zeros_hx(model, n) if with_hx else None
    if use_mask:
        mask = torch.arange(total).unsqueeze(1) < lens  # (L, N)
        kw = {"mask": mask.t() if batch_first else mask}
    else:
        kw = {"lengths": lens}
    got = _fnn_grads(model, params, x, hx, **kw)
    _assert_same(got, _torch_grads(twin, x, hx, lengths=lens))
    y = got[0][0]
    for i, k in enumerate(lengths):  # padding is exactly zero
        pad_part = y[i, k:] if batch_first else y[k:, i]
        assert torch.equal(pad_part, torch.zeros_like(pad_part))


def test_full_lengths_equal_no_lengths_and_zero_length_keeps_hx():
    x = _randn(4, 2, 3)
    model, params, _, _ = _build("GRU", x, hidden_size=5, bidirectional=True)
    hx = _zeros_hx(model, 2)
    assert_trees_all_equal(
        model.apply(params, x, hx, lengths=torch.tensor([4, 4])), model.apply(params, x, hx)
    )
    y, h = model.apply(params, x, hx, lengths=[0, 4])  # a list works too
    assert torch.equal(y[:, 0], torch.zeros(4, 10, dtype=F64))
    assert torch.equal(h[:, 0], hx[:, 0])


def test_unbatched_lengths_and_mask_equal_truncation():
    x = _randn(6, 3)
    model, params, _, _ = _build("LSTM", x, hidden_size=4, bidirectional=True, num_layers=2)
    y3, s3 = model.apply(params, x[:3])
    for kw in ({"lengths": torch.tensor(3)}, {"mask": torch.arange(6) < 3}):
        y, s = model.apply(params, x, **kw)
        assert_trees_all_close((y[:3], s), (y3, s3))
        assert torch.equal(y[3:], torch.zeros(3, 8, dtype=F64))


# --------------------------------------------------------------------------------------------
# Dropout between layers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_dropout_eval_equals_torch_and_train_is_keyed(mode):
    x = _randn(5, 2, 3)
    model, params, _, twin = _build(mode, x, hidden_size=4, num_layers=3, dropout=0.4)
    twin.eval()
    assert_trees_all_close(model.apply(params, x), fnn.tree.map(torch.detach, twin(x)))
    k1, k2 = fnn.random.split(fnn.random.key(3))
    a = model.apply(params, x, key=k1, train=True)
    assert_trees_all_equal(a, model.apply(params, x, key=k1, train=True))  # reproducible
    assert not torch.allclose(a[0], model.apply(params, x)[0])  # differs from eval
    assert not torch.allclose(a[0], model.apply(params, x, key=k2, train=True)[0])
    grads = fnn.grad(lambda p: _loss(model.apply(p, x, key=k1, train=True)))(params)
    assert_trees_all_equal(
        grads, fnn.grad(lambda p: _loss(model.apply(p, x, key=k1, train=True)))(params)
    )


def test_dropout_one_equals_torch_in_train_mode():
    """With rate 1 every layer but the first sees zeros: deterministic, so torch's train output
    (and gradients) can be compared directly."""
    x = _randn(4, 2, 3)
    model, params, _, twin = _build("LSTM", x, hidden_size=3, num_layers=2, dropout=1.0)
    twin.train()
    got = model.apply(params, x, key=KEY, train=True)
    assert_trees_all_close(got, fnn.tree.map(torch.detach, twin(x)))


def test_dropout_needs_a_key_in_train_mode_and_warns_for_one_layer():
    x = _randn(5, 2, 3)
    model = Wrap(nn.GRU(4, num_layers=2, dropout=0.5))
    params, _ = model.init(KEY, x)
    with pytest.raises(ValueError, match=r"GRU at 'rnn' needs a PRNG key in train mode"):
        model.apply(params, x, train=True)
    model.apply(params, x, train=True, key=KEY)
    with pytest.warns(UserWarning, match="dropout=0.5 and num_layers=1"):
        single = nn.LSTM(4, dropout=0.5)
    single.apply(single.init(KEY, x)[0], x, train=True)  # no dropout, no key needed


# --------------------------------------------------------------------------------------------
# Transforms: vmap, grad, per-example grads
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_RELU"])
def test_vmap_over_independent_sequences_equals_a_loop(mode):
    xs = _randn(4, 5, 3)  # 4 unbatched sequences (L, H_in)
    lens = torch.tensor([5, 2, 3, 1])
    model, params, _, _ = _build(mode, xs[0], hidden_size=4, bidirectional=True, num_layers=2)

    def run(x, n):
        return model.apply(params, x, lengths=n)

    got = fnn.vmap(run)(xs, lens)
    want = [run(x, n) for x, n in zip(xs, lens, strict=True)]
    assert_trees_all_close(got, fnn.tree.map(lambda *t: torch.stack(t), *want))

    # and batched sequences along an extra ensemble-like axis
    xb = _randn(3, 5, 2, 3)
    got = fnn.vmap(lambda x: model.apply(params, x))(xb)
    want = [model.apply(params, x) for x in xb]
    assert_trees_all_close(got, fnn.tree.map(lambda *t: torch.stack(t), *want))


def test_fnn_grad_and_per_example_grads_equal_torch():
    x = _randn(5, 3, 2)
    model, params, _, twin = _build("LSTM", x, hidden_size=4, num_layers=2, proj_size=2)
    lens = torch.tensor([5, 3, 1])

    def loss(p, x, n):
        y, (h, c) = model.apply(p, x, lengths=n)
        return (y**2).sum() + h.sum() + c.sum()

    y, (h, c) = twin(pack_padded_sequence(x, lens, enforce_sorted=False))
    y, _ = pad_packed_sequence(y, total_length=5)
    ((y**2).sum() + h.sum() + c.sum()).backward()
    grads = fnn.grad(loss)(params, x, lens)
    assert_trees_all_close(grads, _nest({k: p.grad for k, p in twin.named_parameters()}))

    # per-example gradients: vmap over the batch axis of (L, N, H_in) and over lengths
    per_example = fnn.vmap(fnn.grad(loss), in_axes=(None, 1, 0))(
        params, x.unsqueeze(2), lens.unsqueeze(1)
    )
    for i in range(3):
        one = fnn.grad(loss)(params, x[:, i : i + 1], lens[i : i + 1])
        assert_trees_all_close(fnn.tree.map(lambda t, i=i: t[i], per_example), one)


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    cls=st.sampled_from(list(CELL_TWIN)),
    relu=st.booleans(),
    bias=st.booleans(),
    hidden=st.integers(1, 5),
    in_size=st.integers(1, 4),
    batch=st.integers(1, 3),
    unbatched=st.booleans(),
    with_hx=st.booleans(),
)
def test_cells_match_torch_in_values_and_grads(
    cls, relu, bias, hidden, in_size, batch, unbatched, with_hx
):
    kw = {"bias": bias}
    if cls is nn.RNNCell:
        kw["nonlinearity"] = "relu" if relu else "tanh"
    x = _randn(in_size) if unbatched else _randn(batch, in_size)
    model = cls(hidden, **kw)
    params, state = model.init(KEY, x)
    assert state == {}
    twin = CELL_TWIN[cls](in_size, hidden, dtype=F64, **kw)
    twin.load_state_dict(nn.to_state_dict(params, state), strict=True)
    hx = None
    if with_hx:
        shape = (hidden,) if unbatched else (batch, hidden)
        hx = _randn(*shape, seed=3)
        hx = (hx, _randn(*shape, seed=4)) if cls is nn.LSTMCell else hx
    _assert_same(_fnn_grads(model, params, x, hx), _torch_grads(twin, x, hx))


def test_cell_shape_errors_name_the_path():
    model = Wrap(nn.LSTMCell(4))
    params, _ = model.init(KEY, _randn(2, 3))
    with pytest.raises(ValueError, match=r"LSTMCell at 'rnn': expected `input` of shape \(N, H"):
        model.apply(params, _randn(1, 2, 3))
    with pytest.raises(ValueError, match=r"LSTMCell at 'rnn': expected `c` of shape \(2, 4\), got"):
        model.apply(params, _randn(2, 3), (_randn(2, 4), _randn(2, 5)))
    with pytest.raises(ValueError, match=r"'rnn.weight_ih' has shape \(16, 3\), expected \(16, 5"):
        model.apply(params, _randn(2, 5))


# --------------------------------------------------------------------------------------------
# Init, errors, purity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_default_init_is_torchs_uniform_bound(cls):
    hidden = 64
    kw = {} if cls in CELL_TWIN else {"num_layers": 2, "bidirectional": True}
    x = torch.zeros(3, 2, 10) if cls in TWIN else torch.zeros(2, 10)
    params, state = cls(hidden, **kw).init(KEY, x)
    assert state == {}
    bound = 1 / math.sqrt(hidden)
    for name, t in nn.to_state_dict(params).items():
        assert t.abs().max() <= bound, name
        assert t.abs().max() > 0.9 * bound, name
        assert t.dtype == torch.float32
    assert not torch.equal(
        params["weight_hh_l0" if cls in TWIN else "weight_hh"][0],
        params["weight_hh_l0" if cls in TWIN else "weight_hh"][1],
    )


def test_custom_initializers_and_the_inputs_dtype():
    model = nn.LSTM(
        3, proj_size=2, weight_init=nn.initializers.ones, bias_init=nn.initializers.zeros
    )
    params, _ = model.init(KEY, torch.zeros(4, 2, 5, dtype=F64))
    assert params["weight_ih_l0"].dtype == F64
    assert torch.equal(params["weight_hr_l0"], torch.ones(2, 3, dtype=F64))
    assert torch.equal(params["bias_hh_l0"], torch.zeros(12, dtype=F64))
    assert set(nn.GRU(3, bias=False).init(KEY, torch.zeros(4, 5))[0]) == {
        "weight_ih_l0",
        "weight_hh_l0",
    }


class Wrap(nn.Module):
    """A parent, so errors show a non-root path."""

    rnn: nn.Module

    def forward(self, scope, x, hx=None, **kw):
        return scope.rnn(x, hx, **kw)


def test_shape_errors_name_the_module_path_and_both_shapes():
    model = Wrap(nn.LSTM(4, num_layers=2, batch_first=True))
    params, _ = model.init(KEY, _randn(2, 5, 3))
    x = _randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"LSTM at 'rnn': expected `input` of shape \(N, L, H_in"):
        model.apply(params, _randn(1, 2, 5, 3))
    with pytest.raises(
        ValueError, match=r"'rnn.weight_ih_l0' has shape \(16, 3\), expected \(16, 7"
    ):
        model.apply(params, _randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"expected `h_0` of shape \(2, 2, 4\), got shape \(1, 2"):
        model.apply(params, x, (_randn(1, 2, 4), _randn(2, 2, 4)))
    with pytest.raises(ValueError, match=r"expected `hx` to be a pair \(h_0, c_0\)"):
        model.apply(params, x, _randn(2, 2, 4))
    with pytest.raises(
        ValueError, match=r"expected `lengths` to be an integer tensor of shape \(2"
    ):
        model.apply(params, x, lengths=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"LSTM at 'rnn': expected `mask` of shape \(2, 5\)"):
        model.apply(params, x, mask=torch.ones(5, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"`mask` must be a bool tensor"):
        model.apply(params, x, mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="either `lengths` or `mask`"):
        model.apply(params, x, lengths=[1, 2], mask=torch.ones(2, 5, dtype=torch.bool))
    gru = Wrap(nn.GRU(4))
    gparams, _ = gru.init(KEY, _randn(5, 3))  # unbatched: hx is (num_layers * D, H)
    with pytest.raises(ValueError, match=r"GRU at 'rnn': expected `hx` of shape \(1, 4\), got"):
        gru.apply(gparams, _randn(5, 3), _randn(1, 1, 4))


def test_config_errors():
    with pytest.raises(ValueError, match="proj_size must be smaller than hidden_size"):
        nn.LSTM(3, proj_size=3)
    with pytest.raises(ValueError, match="unknown nonlinearity 'gelu'"):
        nn.RNN(3, nonlinearity="gelu")
    with pytest.raises(ValueError, match="unknown nonlinearity 'gelu'"):
        nn.RNNCell(3, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\]"):
        nn.GRU(3, dropout=1.5)
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        nn.GRU(3, num_layers=0)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        nn.GRUCell(0)


def test_apply_does_not_modify_its_inputs():
    x = _randn(4, 2, 3)
    model, params, _, _ = _build("LSTM", x, hidden_size=3, num_layers=2, bidirectional=True)
    hx = _zeros_hx(model, 2)
    before = fnn.tree.map(torch.clone, (params, x, hx))
    model.apply(params, x, hx, lengths=torch.tensor([4, 2]), key=KEY, train=True)
    assert_trees_all_equal((params, x, hx), before)


def test_lstm_with_lengths_works_under_jit_and_compiles_once():
    # dynamo's "eager" backend: the graph capture (one graph, no recompiles) is what is tested
    model = nn.LSTM(4, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 5, 2)
    params, _ = model.init(fnn.random.key(0), x)
    step = fnn.jit(lambda p, x, n: model.apply(p, x, lengths=n)[0], backend="eager")
    for lengths in ([5, 3, 1], [2, 5, 4]):
        n = torch.tensor(lengths)
        torch.testing.assert_close(step(params, x, n), model.apply(params, x, lengths=n)[0])
    assert step.num_compiles == 1
