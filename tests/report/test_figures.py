"""The report's pictures: PNG data URIs of the figures and of the bracketed examples."""

import base64

import numpy as np

from perturbative.report.figures import image_uri, plain_text, report_figures
from perturbative.report.statistics import (
    attribute_comovement,
    bracket_gradient_correlation,
    load_report_data,
    top_attribute_pairs,
)

PNG = b"\x89PNG\r\n\x1a\n"


def decoded(uri: str) -> bytes:
    assert uri.startswith("data:image/png;base64,")
    return base64.b64decode(uri.split(",", 1)[1])


def test_every_figure_is_a_png(synthetic):
    written, _ = synthetic
    data = load_report_data(written["dir"])
    fit = bracket_gradient_correlation(data.grad_norm, data.bracket_norm, data.pairs)
    corr = attribute_comovement(data.output_shift)
    figures = report_figures(data, fit, corr, top_attribute_pairs(corr))
    expected = {"norms", "norms_steps", "comovement", "comovement_matrix", "metrics", "layers"}
    assert set(figures) == expected
    assert all(decoded(uri).startswith(PNG) for uri in figures.values())


def test_images_grey_and_colour_and_dollar_signs():
    assert decoded(image_uri(np.random.default_rng(0).random((1, 4, 4)))).startswith(PNG)
    assert decoded(image_uri(np.random.default_rng(1).random((3, 4, 4)))).startswith(PNG)
    assert plain_text("a$b") == "a\\$b"
