"""``Task`` and ``load_task``: how a run is rebuilt from its folder, by an importable name."""

import pytest
import torch

import perturbative as pt
from perturbative._core.errors import InputError
from perturbative.pipeline.task import default_collate, load_task


def test_a_task_is_found_by_module_and_attribute_or_by_file(tmp_path):
    task = load_task("recorded_task:task")
    assert isinstance(task, pt.Task) and len(task.train) == 160
    script = tmp_path / "my_loop.py"
    script.write_text(
        "import torch\nimport perturbative as pt\n"
        "def task():\n"
        "    return pt.Task(model=lambda: torch.nn.Linear(2, 1), loss_fn=None, train=[0])\n"
    )
    assert isinstance(load_task(f"{script}:task"), pt.Task)  # a function returning a task


@pytest.mark.parametrize(
    "spec, message",
    [
        ("recorded_task", "not of the form 'module:attribute'"),
        ("no_such_module:task", "cannot import the task's module 'no_such_module'"),
        ("recorded_task:nothing", "has no attribute 'nothing'"),
        ("recorded_task:INPUTS", "is a Tensor, not a perturbative Task"),
    ],
)
def test_a_task_that_cannot_be_loaded_says_what_was_tried(spec, message):
    with pytest.raises(InputError, match=message):
        load_task(spec)


def test_batches_collate_tuples_and_keyword_examples_and_refuse_foreign_indices():
    tuples = default_collate([(torch.zeros(3), torch.tensor(1)), (torch.ones(3), torch.tensor(0))])
    assert tuples[0].shape == (2, 3) and tuples[1].tolist() == [1, 0]
    keywords = default_collate([{"input_ids": torch.arange(4)}, {"input_ids": torch.arange(4)}])
    assert keywords["input_ids"].shape == (2, 4)
    task = load_task("recorded_task:task")
    with pytest.raises(InputError, match="outside the task's train set of 160 examples"):
        task.batch([3, 160])


def test_the_default_observable_is_the_held_out_mean_loss_in_the_models_dtype():
    task = load_task("recorded_task:task")
    model = task.model().double()
    observable = task.build_observable(model)
    x, y = task.batch(range(40), "heldout")
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x.double()), y)
    assert observable.value(model) == pytest.approx(float(expected), rel=1e-12)
    bare = pt.Task(model=task.model, loss_fn=task.loss_fn, train=task.train)
    with pytest.raises(InputError, match="neither held-out examples nor an observable"):
        bare.build_observable(model)


def test_a_task_factory_of_one_argument_is_given_the_run_folder(tmp_path):
    """A task that reads its run's own files (``perturbative train``'s reads the config) is a
    function of the run folder; without a folder, a factory of no arguments is called."""
    script = tmp_path / "folder_task.py"
    script.write_text(
        "import torch\nimport perturbative as pt\n"
        "def task(run_dir):\n"
        "    size = int((run_dir / 'size.txt').read_text())\n"
        "    return pt.Task(model=lambda: torch.nn.Linear(2, 1), loss_fn=None, train=[0] * size)\n"
    )
    (tmp_path / "size.txt").write_text("7")
    assert len(load_task(f"{script}:task", run_dir=tmp_path).train) == 7
