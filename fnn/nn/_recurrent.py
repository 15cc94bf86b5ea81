"""Recurrent layers ``RNN``, ``LSTM``, ``GRU`` and cells ``RNNCell``, ``LSTMCell``, ``GRUCell``.

Each is the twin of the ``torch.nn`` layer of the same name: torch's parameter names and
layouts (``weight_ih_l0``, ``weight_hh_l0_reverse``, ``weight_hr_l0`` ...), gate orders (LSTM
``i, f, g, o``; GRU ``r, z, n``), defaults and formulas, with the input size inferred from the
input. Pure functions of their inputs: the initial state ``hx`` is an argument and the final
state is returned, never kept.

How the time loop runs: the input projections ``x_t @ W_ih.T + b_ih`` of every time step are
one matrix product over the whole sequence (as torch does on CPU), and only the recurrent part
runs step by step in :func:`fnn.scan`, so the layers work under ``fnn.grad``, ``fnn.vmap`` and
``fnn.jit``. The loop is unrolled: under ``fnn.jit`` compile time grows with the sequence
length, and a new length compiles again.

Variable-length batches take ``lengths=`` (or ``mask=``) instead of torch's
``pack_padded_sequence``: positions past a sequence's length give zeros in ``output`` and leave
the state unchanged, so ``h_n`` is the state after each sequence's last real step and the
reverse direction of a bidirectional layer starts at each sequence's own last real step --
the results of ``pack_padded_sequence`` + ``pad_packed_sequence`` with padded tensors of a
fixed shape (which ``vmap`` and ``jit`` need).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from fnn._src.control_flow import scan
from fnn._src.initializers import Initializer
from fnn._src.prng import fold_in
from fnn._src.samplers import bernoulli
from fnn.nn._defaults import symmetric_uniform
from fnn.nn._dropout import _dropout, _key
from fnn.nn._module import Module, Scope, _where

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell"]

Tensor = torch.Tensor
_META = torch.device("meta")

# --------------------------------------------------------------------------------------------
# One time step of each cell (torch's aten/src/ATen/native/RNN.cpp, op for op).
# ``gi`` is the input projection ``x @ w_ih.T + b_ih`` of this step, computed outside the loop.
# --------------------------------------------------------------------------------------------


def _rnn_step(act: Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
    def step(h: Tensor, gi: Tensor, w_hh: Tensor, b_hh: Tensor | None, w_hr=None) -> Tensor:
        return act(F.linear(h, w_hh, b_hh) + gi)

    return step


def _lstm_step(
    state: tuple[Tensor, Tensor],
    gi: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    h, c = state
    i, f, g, o = (F.linear(h, w_hh, b_hh) + gi).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w_hr is not None:
        h = torch.matmul(h, w_hr.t())
    return h, c


def _gru_step(
    h: Tensor, gi: Tensor, w_hh: Tensor, b_hh: Tensor | None, w_hr: Tensor | None = None
) -> Tensor:
    gh = F.linear(h, w_hh, b_hh)
    size = gh.shape[-1] // 3
    # r and z from views with the strides of torch's chunks: CPU kernels round differently on
    # strided rows (scalar tail loops) than on contiguous blocks, and this matches torch's bits.
    rz = gh[..., : 2 * size] + gi[..., : 2 * size]
    r = torch.sigmoid(rz[..., :size])
    z = torch.sigmoid(rz[..., size:])
    n = torch.tanh(gi[..., 2 * size :] + gh[..., 2 * size :] * r)
    return (h - n) * z + n


_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}
_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}


# --------------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------------


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def _check_positive_int(module: Module, name: str) -> None:
    value = getattr(module, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"fnn.nn.{type(module).__name__}: {name} must be a positive int, got {value!r}."
        )


def _check_nonlinearity(module: Module) -> None:
    if module.nonlinearity not in _ACTIVATIONS:
        raise ValueError(
            f"fnn.nn.{type(module).__name__}: unknown nonlinearity {module.nonlinearity!r}; "
            "expected 'tanh' or 'relu'."
        )


def _check_hidden(
    module: Module, scope: Scope, name: str, h: object, shape: tuple[int, ...], dtype
) -> Tensor:
    if not isinstance(h, torch.Tensor) or tuple(h.shape) != shape:
        raise ValueError(
            f"{_where(module, scope.path)}: expected `{name}` of shape {shape}, got {_describe(h)}."
        )
    if h.dtype != dtype:
        raise TypeError(
            f"{_where(module, scope.path)}: `{name}` has dtype {h.dtype}, but the input has "
            f"{dtype}; they must match (as in torch)."
        )
    return h


def _weight_init(module: Module) -> Initializer:
    return module.weight_init or symmetric_uniform(1.0 / math.sqrt(module.hidden_size))


def _bias_init(module: Module) -> Initializer:
    return module.bias_init or symmetric_uniform(1.0 / math.sqrt(module.hidden_size))


# --------------------------------------------------------------------------------------------
# The multi-layer recurrent layers
# --------------------------------------------------------------------------------------------


class _RNNBase(Module):
    """The shared implementation of ``RNN``, ``LSTM`` and ``GRU`` (not public).

    Subclasses set the class attribute ``_mode`` and declare the fields.
    """

    _mode = ""

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_positive_int(self, "hidden_size")
        _check_positive_int(self, "num_layers")
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ValueError(
                f"fnn.nn.{name}: dropout must be a number in [0, 1] (the probability of zeroing "
                f"an element of each layer's output but the last), got {p!r}."
            )
        if p > 0 and self.num_layers == 1:
            warnings.warn(
                f"fnn.nn.{name}: dropout={p} and num_layers=1; dropout is applied between "
                "layers only (after every layer but the last), so it has no effect here "
                "(torch warns the same).",
                UserWarning,
                stacklevel=3,
            )
        proj = self._proj_size
        if isinstance(proj, bool) or not isinstance(proj, int) or proj < 0:
            raise ValueError(f"fnn.nn.{name}: proj_size must be an int >= 0, got {proj!r}.")
        if proj >= self.hidden_size:
            raise ValueError(
                f"fnn.nn.{name}: proj_size must be smaller than hidden_size, got "
                f"proj_size={proj} and hidden_size={self.hidden_size}."
            )
        if self._mode == "RNN":
            _check_nonlinearity(self)

    @property
    def _proj_size(self) -> int:
        return getattr(self, "proj_size", 0)

    @property
    def _out_size(self) -> int:
        return self._proj_size or self.hidden_size

    def _step(self) -> Callable[..., object]:
        if self._mode == "LSTM":
            return _lstm_step
        if self._mode == "GRU":
            return _gru_step
        return _rnn_step(_ACTIVATIONS[self.nonlinearity])

    def _params(self, scope: Scope, layer: int, reverse: bool, in_size: int) -> tuple:
        """Declare/read one direction of one layer's parameters, in torch's order."""
        sfx = f"_l{layer}_reverse" if reverse else f"_l{layer}"
        gates = _GATES[self._mode] * self.hidden_size
        w_init, b_init = _weight_init(self), _bias_init(self)
        w_ih = scope.param("weight_ih" + sfx, (gates, in_size), w_init)
        w_hh = scope.param("weight_hh" + sfx, (gates, self._out_size), w_init)
        b_ih = b_hh = w_hr = None
        if self.bias:
            b_ih = scope.param("bias_ih" + sfx, (gates,), b_init)
            b_hh = scope.param("bias_hh" + sfx, (gates,), b_init)
        if self._proj_size:
            w_hr = scope.param("weight_hr" + sfx, (self._proj_size, self.hidden_size), w_init)
        return w_ih, w_hh, b_ih, b_hh, w_hr

    def _input_error(self, scope: Scope, x: object) -> ValueError:
        layout = "(N, L, H_in)" if self.batch_first else "(L, N, H_in)"
        return ValueError(
            f"{_where(self, scope.path)}: expected `input` of shape {layout} (batched) or "
            f"(L, H_in) (unbatched), got {_describe(x)}."
        )

    def _hidden(self, scope: Scope, hx: object, n: int, batched: bool, x: Tensor):
        """``hx`` as (num_layers * D, N, H_out) tensor(s), checked; zeros when ``None``."""
        num = self.num_layers * (2 if self.bidirectional else 1)
        out, hid = self._out_size, self.hidden_size
        lstm = self._mode == "LSTM"
        if hx is None:
            h0 = x.new_zeros((num, n, out))
            return (h0, x.new_zeros((num, n, hid))) if lstm else h0
        shape_h = (num, n, out) if batched else (num, out)
        shape_c = (num, n, hid) if batched else (num, hid)
        if lstm:
            if not (isinstance(hx, tuple | list) and len(hx) == 2):
                raise ValueError(
                    f"{_where(self, scope.path)}: expected `hx` to be a pair (h_0, c_0) of "
                    f"shapes {shape_h} and {shape_c}, got {type(hx).__name__}"
                    + (f" of length {len(hx)}." if isinstance(hx, tuple | list) else ".")
                )
            h0 = _check_hidden(self, scope, "h_0", hx[0], shape_h, x.dtype)
            c0 = _check_hidden(self, scope, "c_0", hx[1], shape_c, x.dtype)
            return (h0, c0) if batched else (h0.unsqueeze(1), c0.unsqueeze(1))
        h0 = _check_hidden(self, scope, "hx", hx, shape_h, x.dtype)
        return h0 if batched else h0.unsqueeze(1)

    def _valid(
        self, scope: Scope, lengths: object, mask: object, length: int, n: int, batched: bool, x
    ) -> Tensor | None:
        """The (L, N, 1) boolean tensor of real steps, or ``None`` when all steps are real."""
        if lengths is None and mask is None:
            return None
        where = _where(self, scope.path)
        if lengths is not None and mask is not None:
            raise ValueError(f"{where}: pass either `lengths` or `mask`, not both.")
        if lengths is not None:
            if not isinstance(lengths, torch.Tensor):
                lengths = torch.as_tensor(lengths, device=x.device)
            shape = (n,) if batched else ()
            bad_dtype = lengths.dtype.is_floating_point or lengths.dtype.is_complex
            if tuple(lengths.shape) != shape or bad_dtype or lengths.dtype == torch.bool:
                raise ValueError(
                    f"{where}: expected `lengths` to be an integer tensor of shape {shape} "
                    f"(one length per sequence), got {_describe(lengths)} of dtype "
                    f"{lengths.dtype}."
                )
            steps = torch.arange(length, device=x.device)
            valid = steps.unsqueeze(1) < lengths.to(x.device).reshape(1, -1)
        else:
            if batched:
                shape = (n, length) if self.batch_first else (length, n)
            else:
                shape = (length,)
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != shape:
                raise ValueError(
                    f"{where}: expected `mask` of shape {shape} (True at real steps), got "
                    f"{_describe(mask)}."
                )
            if mask.dtype != torch.bool:
                raise TypeError(f"{where}: `mask` must be a bool tensor, got {mask.dtype}.")
            valid = mask.to(x.device)
            if not batched:
                valid = valid.unsqueeze(1)
            elif self.batch_first:
                valid = valid.t()
        return valid.unsqueeze(-1)

    def _direction(self, step, gi: Tensor, h0, valid: Tensor | None, w: tuple, reverse: bool):
        """Run one direction of one layer over time; ``(outputs (L, N, H_out), final state)``."""
        _, w_hh, _, b_hh, w_hr = w
        lstm = self._mode == "LSTM"
        if valid is None:

            def body(carry, g):
                new = step(carry, g, w_hh, b_hh, w_hr)
                return new, (new[0] if lstm else new)

            last, ys = scan(body, h0, gi, reverse=reverse)
        else:

            def body(carry, xs):
                g, v = xs
                new = step(carry, g, w_hh, b_hh, w_hr)
                if lstm:
                    new = (torch.where(v, new[0], carry[0]), torch.where(v, new[1], carry[1]))
                    return new, torch.where(v, new[0], 0.0)
                return torch.where(v, new, carry), torch.where(v, new, 0.0)

            last, ys = scan(body, h0, (gi, valid), reverse=reverse)
        return ys, last

    def forward(
        self,
        scope: Scope,
        input: Tensor,
        hx: Tensor | tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | Sequence[int] | None = None,
        mask: Tensor | None = None,
    ):
        x = input
        if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3):
            raise self._input_error(scope, x)
        batched = x.ndim == 3
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        length, n, in_size = x.shape
        h0 = self._hidden(scope, hx, n, batched, x)
        valid = self._valid(scope, lengths, mask, length, n, batched, x)
        dirs = 2 if self.bidirectional else 1
        lstm = self._mode == "LSTM"
        out_size = self._out_size
        rate = self.dropout
        drop = scope.train and rate > 0 and self.num_layers > 1
        key = _key(self, scope) if drop else None
        weights = []
        for layer in range(self.num_layers):
            size = in_size if layer == 0 else dirs * out_size
            weights.append([self._params(scope, layer, d == 1, size) for d in range(dirs)])
        if x.device == _META:  # init's shape pass: parameters declared, nothing to compute
            y = torch.empty((length, n, dirs * out_size), dtype=x.dtype, device=_META)
            h_n = torch.empty((dirs * self.num_layers, n, out_size), dtype=x.dtype, device=_META)
            state = (h_n, h0[1]) if lstm else h_n
        else:
            step = self._step()
            finals = []
            for layer in range(self.num_layers):
                if layer > 0 and drop:
                    keep = bernoulli(fold_in(key, layer), 1.0 - rate, tuple(x.shape))
                    x = x * 0.0 if rate == 1 else _dropout(x, keep, rate)
                outs = []
                for d in range(dirs):
                    w = weights[layer][d]
                    gi = F.linear(x, w[0], w[2])  # every step's input projection at once
                    k = layer * dirs + d
                    init = (h0[0][k], h0[1][k]) if lstm else h0[k]
                    ys, last = self._direction(step, gi, init, valid, w, reverse=d == 1)
                    outs.append(ys)
                    finals.append(last)
                x = outs[0] if dirs == 1 else torch.cat(outs, dim=-1)
            y = x
            if lstm:
                state = (torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals]))
            else:
                state = torch.stack(finals)
        if not batched:
            y = y.squeeze(1)
            state = (state[0].squeeze(1), state[1].squeeze(1)) if lstm else state.squeeze(1)
        elif self.batch_first:
            y = y.transpose(0, 1)
        return y, state


_FORWARD_DOC = """
    Call: ``model.apply(params, input, hx=None, lengths=None, mask=None)``.

    - ``input``: ``(L, N, H_in)``, or ``(N, L, H_in)`` with ``batch_first``, or unbatched
      ``(L, H_in)``.
    - ``lengths``: the length of each sequence, an integer tensor (or list) of shape ``(N,)``
      (``()`` unbatched); steps ``t >= lengths[n]`` are padding. Or ``mask``: a bool tensor
      ``(N, L)`` with ``batch_first``, else ``(L, N)`` (``(L,)`` unbatched), ``True`` at real
      steps. Padding gives zeros in ``output`` and leaves the state unchanged, so ``h_n`` is
      each sequence's state after its last real step and the reverse direction starts at it:
      torch's ``pack_padded_sequence(..., enforce_sorted=False)`` +
      ``pad_packed_sequence(..., total_length=L)``, without the packing (a length of 0 gives
      ``h_n = h_0``; with a ``mask`` that is not a prefix, masked steps are skipped).

"""


class RNN(_RNNBase):
    """An Elman RNN, the twin of ``torch.nn.RNN`` (input size inferred from the input).

    For each layer and time step: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``,
    ``act`` = ``tanh`` or ``relu``. Layer ``k > 0`` takes the previous layer's outputs (both
    directions concatenated), after dropout in train mode.

    Args:
        hidden_size: the size ``H`` of the hidden state.
        num_layers: the number of stacked layers.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bias: whether to use the biases ``b_ih`` and ``b_hh``.
        batch_first: inputs and outputs are ``(N, L, *)`` instead of ``(L, N, *)`` (``hx`` and
            ``h_n`` are always ``(num_layers * D, N, H)``, as in torch).
        dropout: the probability of zeroing each output element of every layer but the last
            in train mode (needs ``key=`` in ``apply``; each layer draws from its own key).
        bidirectional: run a second, reversed direction per layer (``D = 2``).
        weight_init, bias_init: initializers of the weights and biases; default
            ``U(-1/sqrt(H), 1/sqrt(H))`` for all, as torch.
    {forward}
    Shapes:
        output ``(L, N, D * H)`` (``(N, L, D * H)`` with ``batch_first``; ``(L, D * H)``
        unbatched); ``hx`` and ``h_n`` ``(num_layers * D, N, H)`` (``(num_layers * D, H)``
        unbatched), ordered ``layer * D + direction``. Returns ``(output, h_n)``. Parameters
        per layer ``k`` (suffix ``_reverse`` for the second direction): ``weight_ih_l{k}
        (H, H_in or D * H)``, ``weight_hh_l{k} (H, H)``, ``bias_ih_l{k} (H,)``,
        ``bias_hh_l{k} (H,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.RNN(4, num_layers=2)
        >>> x = torch.zeros(5, 3, 2)  # (L, N, H_in)
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)  # doctest: +NORMALIZE_WHITESPACE
        {'weight_ih_l0': (4, 2), 'weight_hh_l0': (4, 4), 'bias_ih_l0': (4,), 'bias_hh_l0': (4,),
         'weight_ih_l1': (4, 4), 'weight_hh_l1': (4, 4), 'bias_ih_l1': (4,), 'bias_hh_l1': (4,)}
        >>> output, h_n = model.apply(params, x, lengths=torch.tensor([5, 2, 4]))
        >>> output.shape, h_n.shape
        (torch.Size([5, 3, 4]), torch.Size([2, 3, 4]))
    """

    _mode = "RNN"
    hidden_size: int
    num_layers: int = 1
    nonlinearity: str = "tanh"
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None


class LSTM(_RNNBase):
    """A long short-term memory RNN, the twin of ``torch.nn.LSTM`` (input size inferred).

    For each layer and time step, with gates in torch's order ``i, f, g, o``::

        i, f, g, o = split(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh, 4)
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)            # then h_t = h_t W_hr^T if proj_size > 0

    Args:
        hidden_size: the size ``H`` of the cell state (and of ``h`` without projection).
        num_layers: the number of stacked layers.
        bias: whether to use the biases ``b_ih`` and ``b_hh``.
        batch_first: inputs and outputs are ``(N, L, *)``; ``hx``, ``h_n``, ``c_n`` are not.
        dropout: the probability of zeroing each output element of every layer but the last
            in train mode (needs ``key=`` in ``apply``).
        bidirectional: run a second, reversed direction per layer (``D = 2``).
        proj_size: if ``> 0``, project ``h`` to this size ``P`` with ``weight_hr`` (no bias);
            ``H_out = P``, else ``H_out = H``.
        weight_init, bias_init: initializers; default ``U(-1/sqrt(H), 1/sqrt(H))`` for all.
    {forward}
    ``hx`` is the pair ``(h_0, c_0)``.

    Shapes:
        output ``(L, N, D * H_out)`` (batch-first / unbatched as the input); ``h_0``, ``h_n``
        ``(num_layers * D, N, H_out)``, ``c_0``, ``c_n`` ``(num_layers * D, N, H)`` (without
        ``N`` unbatched). Returns ``(output, (h_n, c_n))``. Parameters per layer ``k``:
        ``weight_ih_l{k} (4H, H_in or D * H_out)``, ``weight_hh_l{k} (4H, H_out)``,
        ``bias_ih_l{k} (4H,)``, ``bias_hh_l{k} (4H,)``, ``weight_hr_l{k} (P, H)``, and the
        same with ``_reverse`` for the second direction.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.LSTM(4, batch_first=True, bidirectional=True, proj_size=2)
        >>> x = torch.zeros(3, 5, 6)  # (N, L, H_in)
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)  # doctest: +NORMALIZE_WHITESPACE
        {'weight_ih_l0': (16, 6), 'weight_hh_l0': (16, 2), 'bias_ih_l0': (16,),
         'bias_hh_l0': (16,), 'weight_hr_l0': (2, 4), 'weight_ih_l0_reverse': (16, 6),
         'weight_hh_l0_reverse': (16, 2), 'bias_ih_l0_reverse': (16,),
         'bias_hh_l0_reverse': (16,), 'weight_hr_l0_reverse': (2, 4)}
        >>> output, (h_n, c_n) = model.apply(params, x)
        >>> output.shape, h_n.shape, c_n.shape
        (torch.Size([3, 5, 4]), torch.Size([2, 3, 2]), torch.Size([2, 3, 4]))
    """

    _mode = "LSTM"
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None


class GRU(_RNNBase):
    """A gated recurrent unit RNN, the twin of ``torch.nn.GRU`` (input size inferred).

    For each layer and time step, with gates in torch's order ``r, z, n``::

        r = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)
        z = sigmoid(x_t W_iz^T + b_iz + h_{t-1} W_hz^T + b_hz)
        n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}

    Args:
        hidden_size: the size ``H`` of the hidden state.
        num_layers: the number of stacked layers.
        bias: whether to use the biases ``b_ih`` and ``b_hh``.
        batch_first: inputs and outputs are ``(N, L, *)``; ``hx`` and ``h_n`` are not.
        dropout: the probability of zeroing each output element of every layer but the last
            in train mode (needs ``key=`` in ``apply``).
        bidirectional: run a second, reversed direction per layer (``D = 2``).
        weight_init, bias_init: initializers; default ``U(-1/sqrt(H), 1/sqrt(H))`` for all.
    {forward}
    Shapes:
        output ``(L, N, D * H)`` (batch-first / unbatched as the input); ``hx``, ``h_n``
        ``(num_layers * D, N, H)``. Returns ``(output, h_n)``. Parameters per layer ``k``:
        ``weight_ih_l{k} (3H, H_in or D * H)``, ``weight_hh_l{k} (3H, H)``,
        ``bias_ih_l{k} (3H,)``, ``bias_hh_l{k} (3H,)``, and ``_reverse`` versions.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.GRU(4)
        >>> x = torch.zeros(5, 2)  # unbatched (L, H_in)
        >>> params, _ = model.init(fnn.random.key(0), x)
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)  # doctest: +NORMALIZE_WHITESPACE
        {'weight_ih_l0': (12, 2), 'weight_hh_l0': (12, 4), 'bias_ih_l0': (12,),
         'bias_hh_l0': (12,)}
        >>> output, h_n = model.apply(params, x)
        >>> output.shape, h_n.shape
        (torch.Size([5, 4]), torch.Size([1, 4]))
    """

    _mode = "GRU"
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None


for _cls in (RNN, LSTM, GRU):
    _cls.__doc__ = _cls.__doc__.replace("    {forward}\n", _FORWARD_DOC)


# --------------------------------------------------------------------------------------------
# Cells: one time step
# --------------------------------------------------------------------------------------------


class _CellBase(Module):
    """The shared implementation of the cells (not public)."""

    _mode = ""

    def __post_init__(self) -> None:
        _check_positive_int(self, "hidden_size")
        if self._mode == "RNN":
            _check_nonlinearity(self)

    def forward(self, scope: Scope, input: Tensor, hx=None):
        x = input
        where = _where(self, scope.path)
        if not isinstance(x, torch.Tensor) or x.ndim not in (1, 2):
            raise ValueError(
                f"{where}: expected `input` of shape (N, H_in) or (H_in,) (unbatched), got "
                f"{_describe(x)}."
            )
        batched = x.ndim == 2
        if not batched:
            x = x.unsqueeze(0)
        n, in_size = x.shape
        hid = self.hidden_size
        gates = _GATES[self._mode] * hid
        w_init, b_init = _weight_init(self), _bias_init(self)
        w_ih = scope.param("weight_ih", (gates, in_size), w_init)
        w_hh = scope.param("weight_hh", (gates, hid), w_init)
        b_ih = b_hh = None
        if self.bias:
            b_ih = scope.param("bias_ih", (gates,), b_init)
            b_hh = scope.param("bias_hh", (gates,), b_init)
        lstm = self._mode == "LSTM"
        shape = (n, hid) if batched else (hid,)
        if hx is None:
            h = x.new_zeros((n, hid))
            h = (h, h) if lstm else h
        elif lstm:
            if not (isinstance(hx, tuple | list) and len(hx) == 2):
                raise ValueError(
                    f"{where}: expected `hx` to be a pair (h, c) of shape {shape} each, got "
                    f"{type(hx).__name__}."
                )
            h = (
                _check_hidden(self, scope, "h", hx[0], shape, x.dtype),
                _check_hidden(self, scope, "c", hx[1], shape, x.dtype),
            )
            h = h if batched else (h[0].unsqueeze(0), h[1].unsqueeze(0))
        else:
            h = _check_hidden(self, scope, "hx", hx, shape, x.dtype)
            h = h if batched else h.unsqueeze(0)
        if x.device == _META:
            out = torch.empty((n, hid), dtype=x.dtype, device=_META)
            out = (out, out) if lstm else out
        else:
            if self._mode == "LSTM":
                step = _lstm_step
            elif self._mode == "GRU":
                step = _gru_step
            else:
                step = _rnn_step(_ACTIVATIONS[self.nonlinearity])
            out = step(h, F.linear(x, w_ih, b_ih), w_hh, b_hh)
        if not batched:
            out = (out[0].squeeze(0), out[1].squeeze(0)) if lstm else out.squeeze(0)
        return out


class RNNCell(_CellBase):
    """One step of an Elman RNN, the twin of ``torch.nn.RNNCell`` (input size inferred).

    ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, ``act`` = ``tanh`` or ``relu``.

    Args:
        hidden_size: the size ``H`` of the hidden state.
        bias: whether to use the biases ``b_ih`` and ``b_hh``.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        weight_init, bias_init: initializers; default ``U(-1/sqrt(H), 1/sqrt(H))`` for all.

    Call: ``model.apply(params, input, hx=None)`` (``hx`` defaults to zeros).

    Shapes:
        input ``(N, H_in)`` or ``(H_in,)``; ``hx`` and the output ``h'`` ``(N, H)`` or
        ``(H,)``. Parameters ``weight_ih (H, H_in)``, ``weight_hh (H, H)``, ``bias_ih (H,)``,
        ``bias_hh (H,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.RNNCell(4)
        >>> params, _ = model.init(fnn.random.key(0), torch.zeros(3, 2))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight_ih': (4, 2), 'weight_hh': (4, 4), 'bias_ih': (4,), 'bias_hh': (4,)}
        >>> model.apply(params, torch.zeros(3, 2)).shape
        torch.Size([3, 4])
    """

    _mode = "RNN"
    hidden_size: int
    bias: bool = True
    nonlinearity: str = "tanh"
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None


class LSTMCell(_CellBase):
    """One step of an LSTM, the twin of ``torch.nn.LSTMCell`` (input size inferred).

    Gates ``i, f, g, o`` (torch's order): ``c' = sigmoid(f) * c + sigmoid(i) * tanh(g)``,
    ``h' = sigmoid(o) * tanh(c')``; see :class:`LSTM`.

    Args:
        hidden_size: the size ``H`` of the hidden and cell states.
        bias: whether to use the biases ``b_ih`` and ``b_hh``.
        weight_init, bias_init: initializers; default ``U(-1/sqrt(H), 1/sqrt(H))`` for all.

    Call: ``model.apply(params, input, hx=None)`` with ``hx = (h, c)`` (default zeros);
    returns ``(h', c')``.

    Shapes:
        input ``(N, H_in)`` or ``(H_in,)``; ``h``, ``c``, ``h'``, ``c'`` ``(N, H)`` or ``(H,)``.
        Parameters ``weight_ih (4H, H_in)``, ``weight_hh (4H, H)``, ``bias_ih (4H,)``,
        ``bias_hh (4H,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.LSTMCell(4)
        >>> params, _ = model.init(fnn.random.key(0), torch.zeros(3, 2))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight_ih': (16, 2), 'weight_hh': (16, 4), 'bias_ih': (16,), 'bias_hh': (16,)}
        >>> h, c = model.apply(params, torch.zeros(3, 2))
        >>> h.shape, c.shape
        (torch.Size([3, 4]), torch.Size([3, 4]))
    """

    _mode = "LSTM"
    hidden_size: int
    bias: bool = True
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None


class GRUCell(_CellBase):
    """One step of a GRU, the twin of ``torch.nn.GRUCell`` (input size inferred).

    Gates ``r, z, n`` (torch's order), ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))``,
    ``h' = (1 - z) * n + z * h``; see :class:`GRU`.

    Args:
        hidden_size: the size ``H`` of the hidden state.
        bias: whether to use the biases ``b_ih`` and ``b_hh``.
        weight_init, bias_init: initializers; default ``U(-1/sqrt(H), 1/sqrt(H))`` for all.

    Call: ``model.apply(params, input, hx=None)`` (``hx`` defaults to zeros).

    Shapes:
        input ``(N, H_in)`` or ``(H_in,)``; ``hx`` and ``h'`` ``(N, H)`` or ``(H,)``.
        Parameters ``weight_ih (3H, H_in)``, ``weight_hh (3H, H)``, ``bias_ih (3H,)``,
        ``bias_hh (3H,)``.

    Example:
        >>> import fnn, torch
        >>> model = fnn.nn.GRUCell(4)
        >>> params, _ = model.init(fnn.random.key(0), torch.zeros(2))
        >>> fnn.tree.map(lambda t: tuple(t.shape), params)
        {'weight_ih': (12, 2), 'weight_hh': (12, 4), 'bias_ih': (12,), 'bias_hh': (12,)}
        >>> model.apply(params, torch.zeros(2)).shape
        torch.Size([4])
    """

    _mode = "GRU"
    hidden_size: int
    bias: bool = True
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None
