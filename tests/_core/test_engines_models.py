"""Engines on models as researchers bring them: attention, recurrent and Hugging Face models.

PyTorch's default CPU attention kernel has no double backward and the encoder's fused fast
path no forward-mode derivative; ``nn.LSTM`` has neither a forward-mode derivative nor full
``vmap`` support on CPU; Hugging Face models take keyword batches, return ``ModelOutput``s, tie
weights and test attention masks in Python. Every public function must give the one answer on
each, checked engine against engine, against the slow twin, and against real swapped SGD steps,
in float64. The Hugging Face cases are tiny random-init configurations (nothing downloaded) and
skip when ``transformers`` is not installed.
"""

import contextlib
import warnings

import pytest
import torch
from cases import (
    assert_dicts_close,
    hf_bert,
    hf_gpt2,
    hf_vit,
    lstm_ce,
    transformer_ce,
)
from torch.nn.attention import SDPBackend

import perturbative as pt
from perturbative._core.calls import call_model, output_values
from perturbative._core.engines import differentiable_kernels
from perturbative.reference import reference_bracket

CASES = [transformer_ce, lstm_ce, hf_gpt2, hf_bert, hf_vit]


@pytest.fixture(params=CASES, ids=[c.__name__ for c in CASES])
def case(request):
    return request.param()


def _quiet(fn, *args, **kwargs):
    """Call with forward-engine fallbacks and vmap performance notes allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def _inputs(case):
    """What the model is called on: the keyword batch, or the inputs tensor."""
    return case.data if isinstance(case.data, dict) else case.data[0]


def _every_function(case, engine):
    model, loss_fn, params = case.model, case.loss_fn, case.params
    x, y = case.example(0), case.example(1)
    a, b = case.minibatches()
    u = pt.mean_gradient(model, loss_fn, params, case.example(2))
    matrix = pt.bracket_matrix(model, loss_fn, params, case.data, engine=engine)
    return {
        "bracket": pt.bracket(model, loss_fn, params, x, y, engine=engine),
        "matrix": matrix,
        "minibatch": pt.bracket(model, loss_fn, params, a, b, engine=engine),
        "hvp": pt.hvp(model, loss_fn, params, case.data, u, engine=engine),
        "gradients": pt.per_example_gradients(model, loss_fn, params, case.data, engine=engine),
        "hvps": pt.per_example_hvps(model, loss_fn, params, case.data, u, engine=engine)[1],
        "projected": {
            "M": pt.projected_bracket_matrix(model, loss_fn, params, case.data, u, engine=engine)
        },
        "scores": {"S": pt.order_scores(model, loss_fn, params, case.data, u, engine=engine)},
        "shift": {
            "shift": pt.output_shift(
                model, params, pt.upper_pairs(matrix), _inputs(case), engine=engine
            )
        },
    }


def test_every_function_agrees_across_engines_and_with_the_twin(case):
    results = {}
    for engine in ("double_backward", "auto", "forward"):
        try:
            results[engine] = _quiet(_every_function, case, engine)
        except pt.ForwardADUnsupportedError as error:
            # named, not a raw torch error: nn.LSTM's kernels, or GPT-2's mask shortcuts
            assert engine == "forward" and case.name in ("lstm_ce", "hf_gpt2", "hf_bert"), error
            assert any(name in str(error) for name in ("LSTM", "rnn", "GPT2", "Bert")), error
    reference = results["double_backward"]
    for got in results.values():
        for key in got:
            assert_dicts_close(got[key], reference[key], rtol=1e-9, atol=1e-12)
    twin = reference_bracket(
        case.model, case.loss_fn, case.params, case.example(0), case.example(1)
    )
    assert_dicts_close(reference["bracket"], twin, rtol=1e-9, atol=1e-12)
    row_sums = reference["projected"]["M"].sum(1)
    torch.testing.assert_close(reference["scores"]["S"], row_sums, rtol=1e-9, atol=1e-12)


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


def test_predicted_swap_of_an_observable_matches_real_steps(case):
    """``predict_swap`` of a held-out loss against really training both orders (SGD): at second
    order the relative error is O(lr), so halving lr about halves it."""
    observable = pt.Observable.mean_loss(case.loss_fn, case.example(4))
    x, y = case.example(0), case.example(1)
    errors = []
    for lr in (5e-4, 2.5e-4):
        optimizer = torch.optim.SGD(case.model.parameters(), lr=lr)
        predicted = _quiet(
            pt.predict_swap, case.model, case.loss_fn, optimizer, x, y, observable, expansion=2
        )
        real = [
            pt.brackets.values_along_steps(
                case.model, case.loss_fn, optimizer, order, observable.value, [2]
            )[0]
            for order in ([x, y], [y, x])
        ]
        difference = real[0] - real[1]
        errors.append(abs(predicted.predicted - difference) / abs(difference))
    assert errors[1] < 0.1 and 1.6 < errors[0] / errors[1] < 2.5, errors


def test_output_shift_is_the_jacobian_along_the_bracket(case):
    """Against central differences of the outputs; the CPU engine is pure reverse mode."""
    matrix = _quiet(pt.bracket_matrix, case.model, case.loss_fn, case.params, case.data)
    directions = pt.upper_pairs(matrix)
    shift = _quiet(
        pt.output_shift,
        case.model,
        case.params,
        directions,
        _inputs(case),
        engine="double_backward",
    )
    scale = float(sum(v[0].norm() ** 2 for v in directions.values()) ** 0.5)
    d0 = {k: v[0] / scale for k, v in directions.items()}  # a unit direction
    eps = 1e-5

    def outputs(sign):
        moved = {k: p.detach() + sign * eps * d0[k] for k, p in case.params.items()}
        with torch.no_grad(), differentiable_kernels():
            return output_values(call_model(case.model, moved, {}, _inputs(case)))

    difference = scale * (outputs(1) - outputs(-1)) / (2 * eps)
    torch.testing.assert_close(shift[0], difference, rtol=1e-5, atol=1e-8 * scale)


def test_tied_weights_and_frozen_parameters():
    case = hf_gpt2()
    model = case.model
    assert model.lm_head.weight is model.transformer.wte.weight
    params = case.params
    assert "lm_head.weight" not in params  # a tied weight is one parameter, once
    gradient = pt.mean_gradient(model, case.loss_fn, params, case.example(0))
    model.zero_grad()
    with differentiable_kernels():
        case.loss_fn(model(**case.example(0)), case.example(0)).backward()
    # the embedding's gradient holds both of its uses: input embedding and output head
    torch.testing.assert_close(
        gradient["transformer.wte.weight"], model.transformer.wte.weight.grad
    )

    model.transformer.wpe.weight.requires_grad_(False)  # freeze the position embedding
    with pytest.raises(ValueError, match="leaving it out of params"):
        pt.bracket(
            model, case.loss_fn, dict(model.named_parameters()), case.example(0), case.example(1)
        )
    trainable = {k: v for k, v in model.named_parameters() if v.requires_grad}
    bracket = pt.bracket(model, case.loss_fn, trainable, case.example(0), case.example(1))
    assert "transformer.wpe.weight" not in bracket
    optimizer = torch.optim.Adam(trainable.values(), lr=1e-3)
    model.zero_grad()
    with differentiable_kernels():
        case.loss_fn(model(**case.example(0)), case.example(0)).backward()
    optimizer.step()
    # GPT-2's key biases never get a gradient (softmax ignores a constant per query), so Adam's
    # second moment stays zero there, and adam_preconditioner says so
    with pytest.warns(RuntimeWarning, match="c_attn.bias"):
        preconditioner = pt.adam_preconditioner(optimizer, trainable)
    pt.bracket(
        model,
        case.loss_fn,
        trainable,
        case.example(0),
        case.example(1),
        preconditioner=preconditioner,
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("elementary", [True, False])
def test_order_scores_on_layer_norm_are_right_and_fall_back_loudly_where_needed(
    elementary, dtype, monkeypatch
):
    """torch 2.13's second forward-mode derivative of its fused layer_norm is about 20% off the
    Hessian. Written out in elementary ops (the default) the nested pass is right and runs;
    with the fused kernel (patched back in) order_scores notices on the first example, says
    so, and scores by forward-over-reverse. Either way the scores are the matrix's row sums.
    In float32 the two passes also differ by rounding, judged against the sizes of the products
    the dot products add up (their sum may cancel): that is no reason to fall back, the fused
    kernel's error still is."""
    if not elementary:
        monkeypatch.setattr(
            "perturbative.brackets._scores.elementary_normalization", contextlib.nullcontext
        )
    case, exact = transformer_ce(), transformer_ce()  # the same model twice
    model = case.model.to(dtype)
    params = dict(model.named_parameters())
    data = (case.data[0].to(dtype), case.data[1])
    u = pt.mean_gradient(model, case.loss_fn, params, (data[0][2:3], data[1][2:3]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = pt.order_scores(model, case.loss_fn, params, data, u)
    fallbacks = [w for w in caught if "forward-over-reverse instead" in str(w.message)]
    if elementary:
        assert not fallbacks, [str(w.message) for w in fallbacks]
    elif torch.__version__.startswith("2.13"):
        assert len(fallbacks) == 1, [str(w.message) for w in caught]
    u = pt.mean_gradient(exact.model, exact.loss_fn, exact.params, exact.example(2))
    matrix = _quiet(
        pt.projected_bracket_matrix, exact.model, exact.loss_fn, exact.params, exact.data, u
    )
    if dtype == torch.float64:
        torch.testing.assert_close(scores, matrix.sum(1), rtol=1e-9, atol=1e-12)
    else:
        largest = float(matrix.sum(1).abs().max())
        torch.testing.assert_close(scores.double(), matrix.sum(1), rtol=1e-3, atol=1e-3 * largest)


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


@pytest.mark.parametrize("make", [transformer_ce, hf_gpt2], ids=["transformer", "hf_gpt2"])
def test_dropout_in_train_mode_is_refused_everywhere(make):
    case = make()
    case.model.train()  # both hold Dropout(p=0.1)
    x, y = case.example(0), case.example(1)
    calls = [
        lambda: pt.bracket(case.model, case.loss_fn, case.params, x, y),
        lambda: pt.per_example_gradients(case.model, case.loss_fn, case.params, case.data),
        lambda: pt.hvp(case.model, case.loss_fn, case.params, x, case.params),
        lambda: pt.output_shift(
            case.model, case.params, {k: v[None] for k, v in case.params.items()}, _inputs(case)
        ),
        lambda: pt.swap_check(
            case.model, case.loss_fn, torch.optim.SGD(case.model.parameters(), lr=0.1), x, y
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="dropout layers .* in train mode"):
            call()
