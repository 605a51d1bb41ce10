"""``RecorderCallback`` (integrations/huggingface.py) with a real ``transformers.Trainer``: it logs
the indices each step really trained on, without touching the dataset, and the recorded run's
order predictions hold against really reordering it."""

import pytest
import torch
from cases import logged_pairs_check

from perturbative._core.io import read_json_lines
from perturbative.pipeline.checkpoints import list_checkpoints
from perturbative.pipeline.recorded_run import read_run, run_task
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.replay import replay_gap

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install -e '.[hf]')"
)
pytest.importorskip("accelerate", reason="accelerate is not installed (pip install -e '.[hf]')")


def train(run_dir, steps=12, accumulation=1, mean_of_micro_batches=False):
    from recorded_task import SEQUENCES, bert_model

    from perturbative.integrations.huggingface import RecorderCallback

    train_set = SEQUENCES[:64]
    position = {tuple(e["input_ids"].tolist()): i for i, e in enumerate(train_set)}
    assert len(position) == len(train_set)  # each example known by its tokens
    seen = []

    def collate(examples):  # the test's witness of what each forward pass really got
        seen.append([position[tuple(e["input_ids"].tolist())] for e in examples])
        return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}

    args = transformers.TrainingArguments(
        output_dir=str(run_dir.parent / "trainer"),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=1e-2,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=bert_model(),
        args=args,
        train_dataset=train_set,
        data_collator=collate,
        callbacks=[RecorderCallback(run_dir, task="recorded_task:bert_task", save_at=4)],
    )
    if mean_of_micro_batches:  # the model ignores num_items_in_batch: let the Trainer average
        trainer.model_accepts_loss_kwargs = False
    trainer.train()
    return seen


@pytest.mark.parametrize("accumulation", [1, 2])
def test_the_callback_logs_the_batches_each_step_trained_on(tmp_path, accumulation):
    run = tmp_path / "run"
    seen = train(run, steps=6, accumulation=accumulation)
    log = read_json_lines(run / "order.jsonl")
    assert len(log) == 6
    for step, record in enumerate(log):
        batches = seen[step * accumulation : (step + 1) * accumulation]
        assert record["indices"] == [i for b in batches for i in b]
    assert [s for s, _ in list_checkpoints(run)] == [0, 4]
    assert log[0]["lr"][0] > log[-1]["lr"][0]  # the linear schedule, as each step used it
    gap = replay_gap(run, 4, run_task(run), read_run(run), read_order_log(run))
    if accumulation == 1:
        assert gap.passed, gap
        return
    assert all(r["micro"] == [len(b) for b in seen[:accumulation]] for r in log)
    # The Trainer sums the micro-batches' mean losses when the model takes num_items_in_batch
    # (BERT's classifier takes it and does not use it): a step of twice the mean gradient,
    # which under clipping is another step. The gate sees it and names it.
    assert not gap.passed and any("summed" in cause for cause in gap.causes), gap
    averaged = run.parent / "averaged"
    train(averaged, steps=6, accumulation=accumulation, mean_of_micro_batches=True)
    gap = replay_gap(averaged, 4, run_task(averaged), read_run(averaged), read_order_log(averaged))
    assert gap.passed, gap


def test_order_predictions_on_a_trainer_run(tmp_path):
    run = tmp_path / "run"
    train(run)
    rows = logged_pairs_check(run, checkpoints=2, pairs=4)
    assert [r.pairs for r in rows] == [4, 4] and all(r.accuracy == 1.0 for r in rows), rows
