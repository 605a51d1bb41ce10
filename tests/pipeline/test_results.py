"""Results files: one reader and writer each; missing, corrupt or foreign files say what to do."""

import json

import numpy as np
import pytest
from cases import write_synthetic_results
from safetensors.numpy import save_file

from perturbative.pipeline.results import (
    append_metrics,
    finished_steps,
    load_results,
    read_metrics,
    results_dir_of,
    write_meta,
    write_metrics,
)
from perturbative.report import load_report_data, write_report


def test_missing_results_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `perturbative brackets`"):
        write_report(tmp_path / "nowhere")
    written = write_synthetic_results(tmp_path / "run")
    (written["dir"] / "step_000200.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing; rerun `perturbative brackets`"):
        load_report_data(written["dir"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "meta.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "meta.json").write_text('{"format_version": 1}'), "lacks"),
        (
            lambda d: (d / "meta.json").write_text(
                json.dumps({**json.loads((d / "meta.json").read_text()), "format_version": 9})
            ),
            "format_version 9",
        ),
        (lambda d: (d / "step_000100.safetensors").write_bytes(b"\x00" * 12), "corrupt"),
        (
            lambda d: save_file(
                {"outputs": np.zeros((2, 2), np.float32)}, str(d / "step_000100.safetensors")
            ),
            r"lacks \['output_shift'",
        ),
    ],
)
def test_corrupt_results_say_what_to_do(tmp_path, damage, message):
    written = write_synthetic_results(tmp_path / "run", thumbnails=False, metrics=False)
    damage(written["dir"])
    with pytest.raises(ValueError, match=message) as error:
        load_report_data(written["dir"])
    assert "perturbative" in str(error.value)


def test_empty_sweep_is_refused(tmp_path):
    written = write_synthetic_results(tmp_path / "run", thumbnails=False, metrics=False)
    meta = json.loads((written["dir"] / "meta.json").read_text())
    (written["dir"] / "meta.json").write_text(json.dumps({**meta, "steps": []}))
    with pytest.raises(ValueError, match="no finished checkpoint"):
        write_report(written["dir"])


def test_meta_and_metrics_are_strict_json_and_round_trip(tmp_path):
    write_meta(tmp_path, {"steps": [0], "value": float("nan"), "attribute_names": ["a"]})
    text = (tmp_path / "meta.json").read_text()
    assert "NaN" not in text and json.loads(text)["value"] is None
    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics, [{"step": 0, "train_loss": None}])
    append_metrics(metrics, {"step": 5, "train_loss": 0.5})
    with metrics.open("a") as handle:
        handle.write('{"step": 10, "train_')  # a line still being written
    assert [r["step"] for r in read_metrics(metrics)] == [0, 5]
    with pytest.raises(ValueError):
        append_metrics(metrics, {"step": 6, "train_loss": float("nan")})


def test_step_files_share_one_name_pattern_with_checkpoints(tmp_path):
    written = write_synthetic_results(tmp_path / "run")
    assert finished_steps(written["dir"], {"steps": [0, 100, 999]}) == [0, 100]
    meta, steps = load_results(tmp_path / "run", framework="numpy")
    assert list(steps) == [0, 100, 200, 300] and meta["bracket_examples"] == 4
    assert results_dir_of(tmp_path / "run") == written["dir"]
