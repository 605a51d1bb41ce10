"""Bracket engines against slow twins, closed forms and defining properties; bad input."""

from cases import assert_dicts_close

from perturbative.brackets import (
    bracket,
)
from perturbative.reference import (
    reference_bracket,
)


def test_reference_bracket_matches_single_bracket_on_a_pair(case):
    x, y = case.example(0), case.example(1)
    got = bracket(case.model, case.loss_fn, case.params, x, y)
    assert_dicts_close(
        got, reference_bracket(case.model, case.loss_fn, case.params, x, y), rtol=1e-9, atol=1e-12
    )
