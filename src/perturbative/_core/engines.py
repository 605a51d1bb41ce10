"""Engine dispatch, in one place: which engine runs, and what happens when forward mode cannot.

Two engines compute every derivative in the package, equal up to rounding:

* ``"forward"``: ``torch.func`` transforms (``vmap`` over examples or pairs of ``grad`` and
  forward-over-reverse ``jvp(grad(L))``); batched, fast on GPUs;
* ``"double_backward"``: ``torch.autograd.grad`` with ``create_graph=True``, one example at a time,
  reusing each example's gradient graph; fast on CPUs, where batching buys little.

``engine="auto"`` picks ``"forward"`` when the parameters live on a CUDA device and
``"double_backward"`` otherwise. Both run inside :func:`differentiable_kernels`: PyTorch's
default attention kernels (flash attention on CPU, ``nn.TransformerEncoder``'s fused fast path)
have no second derivative, so attention runs on the math kernel there, and the user's settings
are restored afterwards. :func:`run_engine` is the one dispatcher every public function
calls: it runs the forward computation and, when torch cannot differentiate an op of the model in
forward mode, raises :class:`ForwardADUnsupportedError` naming the op (``engine="forward"``) or
warns and runs the double-backward computation instead (``engine="auto"``).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from perturbative._core.checks import Params

ENGINES = ("auto", "forward", "double_backward")

T = TypeVar("T")


def resolve_engine(
    engine: str,
    params: Params,
    batch_context: Tensor | None = None,
    batch_statistics: bool = False,
) -> str:
    """Turn ``"auto"`` into a concrete engine; validate the name.

    The double-backward engine is used whenever a ``batch_context`` is given or the model's
    BatchNorm runs on ``batch_statistics`` (train mode): train-mode BatchNorm writes its running
    statistics in place, which ``vmap`` and forward mode cannot carry.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if batch_context is not None or batch_statistics:
        return "double_backward"
    if engine == "auto":
        on_cuda = any(p.is_cuda for p in params.values())
        return "forward" if on_cuda else "double_backward"
    return engine


@contextlib.contextmanager
def differentiable_kernels() -> Iterator[None]:
    """Run the block with attention kernels that support every derivative the engines take.

    ``scaled_dot_product_attention`` is limited to its math kernel (the CPU flash kernel has no
    double backward and no forward-mode derivative) and the fused fast path of
    ``nn.TransformerEncoder`` / ``nn.MultiheadAttention`` in eval mode is switched off; both
    settings are restored on exit, also after an error.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class _ElementaryNormalization(torch.overrides.TorchFunctionMode):
    """Layer, batch and instance normalisation written out in elementary ops (see
    :func:`elementary_normalization`)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.layer_norm:
            return _layer_norm(*args, **kwargs)
        if func is F.batch_norm:
            return _batch_norm(*args, **kwargs)
        if func is F.instance_norm:
            return _instance_norm(*args, **kwargs)
        return func(*args, **kwargs)


def _normalize(x: Tensor, dims: list[int], eps: float) -> Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).square().mean(dim=dims, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


def _affine(x: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple[int, ...]):
    if weight is not None:
        x = x * weight.reshape(shape)
    if bias is not None:
        x = x + bias.reshape(shape)
    return x


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    return _affine(_normalize(x, dims, eps), weight, bias, tuple(normalized_shape))


def _channel_shape(x: Tensor) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def _batch_norm(
    x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
):
    shape = _channel_shape(x)
    if training or running_mean is None:
        y = _normalize(x, [0, *range(2, x.dim())], eps)
    else:
        y = (x - running_mean.reshape(shape)) * torch.rsqrt(running_var.reshape(shape) + eps)
    return _affine(y, weight, bias, shape)


def _instance_norm(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
):
    if not use_input_stats:
        return _batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    shape = _channel_shape(x)
    return _affine(_normalize(x, list(range(2, x.dim())), eps), weight, bias, shape)


@contextlib.contextmanager
def elementary_normalization() -> Iterator[None]:
    """Run the block with layer, batch and instance normalisation written out in elementary ops.

    Torch's fused normalisation kernels have right first and second derivatives, but their third
    derivatives are wrong, in both reverse and forward mode (torch 2.13, float64, against a central
    difference of exact Hessian-vector products, for ``LayerNorm``, ``InstanceNorm`` and train-mode
    ``BatchNorm``: ``tests/brackets/test_hvp.py`` fails with the fused kernels; ``GroupNorm`` and
    ``RMSNorm`` are already elementary and right). Written out, every derivative is right. Running
    statistics are not updated inside the block (the package evaluates on copies of them anyway).
    """
    with _ElementaryNormalization():
        yield


class ForwardADUnsupportedError(RuntimeError):
    """An op in the model has no forward-mode derivative or no ``torch.func`` support.

    Raised by ``engine="forward"``; ``engine="auto"`` warns and uses ``"double_backward"``.
    """


def run_engine(
    engine: str,
    params: Params,
    *,
    forward: Callable[[], T],
    double_backward: Callable[[], T],
    batch_context: Tensor | None = None,
    batch_statistics: bool = False,
) -> T:
    """Run ``forward()`` or ``double_backward()`` as ``engine`` says, falling back when needed.

    Args:
        engine: ``"auto"``, ``"forward"`` or ``"double_backward"``.
        params: the parameters (their device decides ``"auto"``).
        forward: the computation with the forward engine.
        double_backward: the same computation with the double-backward engine.
        batch_context: given, the double-backward engine is used (see :func:`resolve_engine`).
        batch_statistics: the model's BatchNorm is in train mode; likewise.

    Raises:
        ForwardADUnsupportedError: ``engine="forward"`` and an op has no forward-mode derivative
            or no ``torch.func`` support (with ``"auto"`` a ``RuntimeWarning`` names the op and
            ``double_backward()`` runs instead).
    """
    chosen = resolve_engine(engine, params, batch_context, batch_statistics)
    if chosen == "double_backward":
        with differentiable_kernels():
            return double_backward()
    try:
        with differentiable_kernels():
            return forward()
    except (RuntimeError, NotImplementedError) as err:
        op = forward_ad_failure(err)
        if op is None:
            raise
        reason = str(err).strip().splitlines()[0][:200]
        if engine == "forward":
            raise ForwardADUnsupportedError(
                f"engine='forward' cannot differentiate {op}, which the model uses, in forward "
                f"mode under torch.func ({reason}). Pass engine='double_backward' (or "
                "engine='auto', which falls back to it), or give the op a forward-mode "
                "derivative (an autograd.Function needs jvp and vmap support)"
            ) from err
        warnings.warn(
            f"engine='forward' cannot differentiate {op}, which the model uses, in forward mode "
            f"under torch.func ({reason}); falling back to engine='double_backward'",
            RuntimeWarning,
            stacklevel=3,
        )
    with differentiable_kernels():
        return double_backward()


def forward_ad_failure(err: BaseException) -> str | None:
    """The op named by a forward-mode AD / torch.func failure, or ``None`` for other errors."""
    text = str(err)
    low = text.lower()
    custom = "autograd.function" in low and ("jvp" in low or "functorch" in low)
    custom = custom or ("vmap over" in low and "vmap support" in low)
    aten = "forward ad" in low and ("not been implemented" in low or "not support" in low)
    aten = aten or ("forward" in low and "not implemented" in low)
    zero_tensor = "zerotensors are immutable" in low
    # torch.func's own limits: an in-place op on an unbatched tensor inside vmap (nn.LSTM's
    # cell writes into its state this way), or an op with no batching rule
    vmap_limit = "doesn't match the broadcast shape" in low or "batching rule" in low
    vmap_limit = vmap_limit or ("vmap" in low and ("in-place" in low or "inplace" in low))
    # data-dependent Python control flow on a batched tensor (Hugging Face's attention-mask
    # shortcuts test `padding_mask.all()`)
    vmap_limit = vmap_limit or ("vmap" in low and "data-dependent control flow" in low)
    if not (custom or aten or zero_tensor or vmap_limit):
        return None
    if vmap_limit and not (custom or aten):
        module = _module_in_traceback(err)
        where = f"the module {module}" if module else "an op"
        return f"{where} (torch.func's vmap cannot batch it)"
    if zero_tensor:
        return (
            "an op whose derivative writes into a ZeroTensor under forward AD (e.g. torch's "
            "F.mse_loss; ((outputs - targets) ** 2).mean() works in both engines)"
        )
    function = _autograd_function_in_traceback(err)
    if function is not None:
        return f"the autograd.Function {function}"
    match = re.search(r"forward AD with (\S+)", text)
    if match:
        return f"the op {match.group(1)}"
    for token in text.replace("'", " ").replace('"', " ").split():
        if token.startswith("aten::") or token.startswith("torch."):
            return f"the op {token.rstrip('.,:')}"
    return "an operation (" + text.splitlines()[0][:120] + ")"


def _module_in_traceback(err: BaseException) -> str | None:
    """Class name of the innermost ``nn.Module`` whose ``forward`` raised ``err``."""
    module = _innermost_local(err, "forward", "self", lambda v: isinstance(v, torch.nn.Module))
    return None if module is None else type(module).__name__


def _autograd_function_in_traceback(err: BaseException) -> str | None:
    """Name of the innermost ``torch.autograd.Function`` whose ``apply`` raised ``err``."""

    def is_function(value) -> bool:
        return isinstance(value, type) and issubclass(value, torch.autograd.Function)

    cls = _innermost_local(err, "apply", "cls", is_function)
    return None if cls is None else cls.__qualname__


def _innermost_local(err: BaseException, function: str, name: str, accept) -> object | None:
    """The local ``name`` of the innermost frame of ``function`` in ``err``'s traceback whose
    value ``accept`` takes, or ``None``."""
    found = None
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        value = frame.f_locals.get(name) if frame.f_code.co_name == function else None
        if accept(value):
            found = value
        tb = tb.tb_next
    return found
