"""The report in a real headless Chromium: slider, bracket buttons, heatmap, hover, screenshot."""

import io
import shutil

import numpy as np
import pytest
from cases import write_synthetic_results

from perturbative.report import write_report

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="python playwright is not installed (pip install playwright)"
    )
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no `chromium` on PATH (Debian: apt-get install chromium)")
    run = tmp_path_factory.mktemp("browser") / "run"
    names = ["Black_Hair", "Brown_Hair", "<script>alert(1)</script>", "Smiling", "Young"]
    written = write_synthetic_results(
        run, attribute_names=names, bracket_examples=4, test_examples=6, steps=(0, 100, 200)
    )
    path = write_report(written["dir"])
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1300, "height": 900})
        errors = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.on("dialog", lambda dialog: errors.append(f"dialog {dialog.message}"))
        tab.goto(path.as_uri())
        tab.wait_for_selector("#heatmap td.cell")
        yield tab, errors, written
        browser.close()


def _values(tab) -> np.ndarray:
    raw = tab.eval_on_selector_all("#heatmap td.cell", "cells => cells.map(c => c.dataset.value)")
    return np.array([float(v) for v in raw])


def test_slider_and_buttons_change_the_heatmap(page):
    tab, errors, written = page
    steps = sorted(written["steps"])
    shape = (6, 5)
    tab.click("#bracket-0-1")
    last = _values(tab).reshape(shape)
    expected = written["steps"][steps[-1]]["output_shift"][0].astype(np.float64)
    np.testing.assert_allclose(last, expected, rtol=5e-4)

    tab.focus("#step")
    tab.keyboard.press("Home")  # the slider to the first checkpoint, as a user would
    assert "step 0" in tab.inner_text("#step-label")
    first = _values(tab).reshape(shape)
    np.testing.assert_allclose(first, written["steps"][0]["output_shift"][0], rtol=5e-4)
    assert not np.allclose(first, last)

    tab.click("#bracket-1-0")
    np.testing.assert_array_equal(_values(tab).reshape(shape), -first)  # [j, i] = -[i, j]
    assert tab.get_attribute("#bracket-1-0", "aria-pressed") == "true"
    assert tab.get_attribute("#bracket-0-1", "aria-pressed") == "false"

    tab.click("#bracket-2-3")
    pair = written["meta"]["pairs"].index([2, 3])
    np.testing.assert_allclose(
        _values(tab).reshape(shape), written["steps"][0]["output_shift"][pair], rtol=5e-4
    )
    assert errors == []


def test_diagonal_buttons_are_disabled(page):
    tab, _, _ = page
    for i in range(4):
        assert tab.is_disabled(f"#bracket-{i}-{i}")
    assert tab.is_enabled("#bracket-0-3")
    assert tab.locator("#grid button").count() == 16


def test_hover_shows_the_value_and_names_stay_text(page):
    tab, errors, _ = page
    tab.click("#bracket-0-2")
    cell = tab.locator('#heatmap td.cell[data-t="1"][data-k="2"]')
    cell.hover()
    tip = tab.inner_text("#tooltip")
    value = float(cell.get_attribute("data-value"))
    assert tab.is_visible("#tooltip") and "<script>alert(1)</script>" in tip
    shown = float(tip.split("shift: ")[1].split()[0])
    assert shown == pytest.approx(value, rel=1e-3) and value != 0
    assert tab.locator("#heatmap th.attr script").count() == 0
    assert errors == []  # in particular no alert() dialog


def test_screenshot_is_not_blank(page, tmp_path):
    from PIL import Image

    tab, _, _ = page
    shot = tmp_path / "report.png"
    tab.screenshot(path=str(shot), full_page=False)
    image = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"), dtype=float)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.shape[:2] == (900, 1300)
    assert image.std() > 20  # text, buttons and a coloured heatmap, not a blank page
    red = (image[..., 0] > 150) & (image[..., 2] < 120)
    blue = (image[..., 2] > 150) & (image[..., 0] < 120)
    assert red.sum() > 50 and blue.sum() > 50  # both signs of the diverging colour scale


def test_colour_scale_compares_magnitudes_across_views_by_default(page):
    tab, errors, written = page
    everything = max(
        float(np.abs(step["output_shift"]).max()) for step in written["steps"].values()
    )
    tab.click("#bracket-0-1")
    assert tab.input_value("#scale-mode") == "global"
    top = float(tab.inner_text("#cb-max").lstrip("+"))
    assert top == pytest.approx(everything, rel=1e-3)
    assert "compare across views" in tab.inner_text("#cb-scope")
    # the title gives the largest shift of the view shown, not of another step
    here = float(np.abs(_values(tab)).max())
    title = tab.inner_text("#heat-title")
    assert float(title.rsplit(" ", 1)[1]) == pytest.approx(here, rel=1e-3)
    tab.select_option("#scale-mode", "view")
    assert float(tab.inner_text("#cb-max").lstrip("+")) == pytest.approx(here, rel=1e-3)
    assert "do NOT compare" in tab.inner_text("#cb-scope")
    tab.select_option("#scale-mode", "pair")
    assert "this pair over all checkpoints" in tab.inner_text("#cb-scope")
    tab.select_option("#scale-mode", "global")
    assert errors == []


def test_tables_have_one_shown_sort_order_and_separate_columns(page):
    tab, _, _ = page
    header = tab.locator("#pairs-table thead th").all_inner_texts()
    assert header[2].startswith("mean |r|") and "\u25bc" in header[2]
    sort_key = [
        float(t) for t in tab.locator("#pairs-table tbody td:nth-child(3)").all_inner_texts()
    ]
    assert sort_key == sorted(sort_key, reverse=True)
    if tab.locator("#ranking-table").count():
        cells = tab.locator("#ranking-table tbody tr").first.locator("td")
        assert cells.count() >= 4  # step, one column per rank, median, stability
        padding = tab.eval_on_selector("#ranking-table td", "c => getComputedStyle(c).paddingLeft")
        assert float(padding.rstrip("px")) >= 8
