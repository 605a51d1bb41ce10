"""Engines on models as researchers bring them: attention and recurrent layers.

PyTorch's default CPU attention kernel has no double backward and the encoder's fused fast
path no forward-mode derivative; ``nn.LSTM`` has neither a forward-mode derivative nor full
``vmap`` support on CPU. Every public function must still give the one answer, checked engine
against engine and against real swapped SGD steps.
"""

import warnings

import pytest
import torch
from cases import assert_dicts_close, lstm_ce, transformer_ce
from torch.nn.attention import SDPBackend

import perturbative as pt
from perturbative._core.engines import differentiable_kernels


@pytest.fixture(params=[transformer_ce, lstm_ce], ids=["transformer", "lstm"])
def case(request):
    return request.param()


def _quiet(fn, *args, **kwargs):
    """Call with forward-engine fallbacks and vmap performance notes allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def test_every_function_agrees_across_engines(case):
    x, y, z = case.example(0), case.example(1), case.example(2)
    results = {}
    for engine in ("auto", "double_backward", "forward"):
        try:
            results[engine] = {
                "bracket": _quiet(
                    pt.bracket, case.model, case.loss_fn, case.params, x, y, engine=engine
                ),
                "matrix": _quiet(
                    pt.bracket_matrix,
                    case.model,
                    case.loss_fn,
                    case.params,
                    case.data,
                    engine=engine,
                ),
                "hvp": _quiet(
                    pt.hvp,
                    case.model,
                    case.loss_fn,
                    case.params,
                    case.data,
                    pt.mean_gradient(case.model, case.loss_fn, case.params, z),
                    engine=engine,
                ),
            }
        except pt.ForwardADUnsupportedError as error:
            assert engine == "forward" and case.name == "lstm_ce"  # named, not a raw error
            assert "LSTM" in str(error) or "rnn" in str(error)
    reference = results["double_backward"]
    for got in results.values():
        for key in got:
            assert_dicts_close(got[key], reference[key], rtol=1e-9, atol=1e-12)


def test_bracket_predicts_real_swapped_sgd_steps(case):
    """The swap residual shrinks like lr^3: halving lr cuts it about 8x. (The encoder's default
    ReLU is piecewise linear: above lr ~ 3e-3 a step flips units of this tiny model and the
    expansion, which assumes smoothness along the step, stops holding.)"""
    x, y = case.example(0), case.example(3)
    residuals = []
    for lr in (0.0016, 0.0008, 0.0004):
        optimizer = torch.optim.SGD(case.model.parameters(), lr=lr)
        check = _quiet(pt.swap_check, case.model, case.loss_fn, optimizer, x, y)
        residuals.append(check.residual_norm)
    ratios = [residuals[i] / residuals[i + 1] for i in range(2)]
    assert all(6 < r < 10 for r in ratios), ratios


def test_output_shift_needs_no_forward_mode(case):
    """The double-backward engine's J d is pure reverse mode (nn.LSTM has no forward AD)."""
    matrix = _quiet(pt.bracket_matrix, case.model, case.loss_fn, case.params, case.data)
    directions = pt.upper_pairs(matrix)
    shift = _quiet(
        pt.output_shift, case.model, case.params, directions, case.data[0], engine="double_backward"
    )
    eps = 1e-6
    d0 = {k: v[0] for k, v in directions.items()}
    with torch.no_grad():
        plus = torch.func.functional_call(
            case.model, {k: p + eps * d0[k] for k, p in case.params.items()}, case.data[0]
        )
        minus = torch.func.functional_call(
            case.model, {k: p - eps * d0[k] for k, p in case.params.items()}, case.data[0]
        )
    torch.testing.assert_close(shift[0], (plus - minus) / (2 * eps), rtol=1e-5, atol=1e-8)


def test_user_attention_settings_are_restored():
    case = transformer_ce()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with differentiable_kernels():
        assert not torch.backends.mha.get_fastpath_enabled()
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    with torch.nn.attention.sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
        before = torch._C._get_flash_sdp_enabled()
        _quiet(pt.bracket, case.model, case.loss_fn, case.params, case.example(0), case.example(1))
        assert torch._C._get_flash_sdp_enabled() == before


def test_dropout_in_train_mode_is_refused_everywhere():
    case = transformer_ce()
    case.model.train()  # the encoder layers hold Dropout(p=0.1)
    x, y = case.example(0), case.example(1)
    calls = [
        lambda: pt.bracket(case.model, case.loss_fn, case.params, x, y),
        lambda: pt.per_example_gradients(case.model, case.loss_fn, case.params, case.data),
        lambda: pt.hvp(case.model, case.loss_fn, case.params, x, case.params),
        lambda: pt.output_shift(
            case.model, case.params, {k: v[None] for k, v in case.params.items()}, x[0]
        ),
        lambda: pt.swap_check(
            case.model, case.loss_fn, torch.optim.SGD(case.model.parameters(), lr=0.1), x, y
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="dropout layers .* are in train mode"):
            call()
