"""Can the predictions choose a better order? OrderSampler's policies against random reshuffling,
shuffle-once, paired reversal and GraB, with seeds and 95% intervals, side by side in one run.

    python benchmarks/ordering.py                    # both tasks, 5 seeds (about 70 min, 2 cores)
    python benchmarks/ordering.py --tasks digits --seeds 2 --steps 60 --arms random,windows
    python benchmarks/ordering.py --arms random,alignment-observed/4 --tag refresh
                                                     # "/R": score every R epochs
    python benchmarks/ordering.py --summary-only     # print the saved results again
    python benchmarks/ordering.py --summary-only --markdown    # as docs/ordering.md's tables

Tasks: ``digits``, the run of ``perturbative demo`` (quarter-width MXResNet-18 with BatchNorm in
train mode, Adam lr 5e-3 betas (0.8, 0.999), batch 32, 600 steps: 13 epochs of 44 batches), and
``language-model``, the GPT-2 of ``examples/own_loop.py`` (AdamW lr 3e-3, warm-up and cosine
decay, clipping 1.0) on 2,048 of its sequences (64 batches an epoch, 600 steps: 9 epochs). The
predicting policies steer by the loss of a fixed held-out batch (``O``); every arm is judged on
the rest of the held-out split, which no policy sees. Seed ``s`` gives every arm the same
initial model; the sampler's permutations are seeded with ``s`` too.

GraB: the authors' ``grab-sampler`` (``GraBSampler``, mean balance) with one ``step`` per batch
on the batch's per-example gradients, whose mean is the step's gradient (as the authors' examples
train). Per-example gradients do not exist under BatchNorm in train mode, so on digits GraB runs
on a BatchNorm-free twin (every BatchNorm replaced by a GroupNorm of the same channels) beside
random reshuffling on the same twin. ``grab-sampler`` declares ``torch-sparse`` as a dependency,
a compiled package with no wheel for this torch that only its sparse random projection uses; we
install it without dependencies (``python3 dev.py grab``) and give that import an empty
module, so every line of GraB that runs is the authors'.

Prints and writes ``benchmarks/results/ordering.json``, and draws
``docs/ordering-<task>.png``: held-out loss against steps and against wall time (training and
the policy's predictions, not the evaluations) with 95% intervals over seeds; per arm the final
held-out loss (mean, standard error, 95% interval), its paired difference from random
reshuffling (same seeds), the steps to reach random reshuffling's final mean loss, and the wall
time against random reshuffling's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/ordering.json"
ARMS = (
    "random", "once", "reversal", "alignment", "scores", "windows",
    "alignment-observed", "scores-observed",
)  # fmt: skip
# Student's t quantile t_{0.975, n-1} for the 95% interval of a mean over n seeds
T975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


@dataclass
class Setting:
    """One task: how to build its model and optimizer and how to train and judge it."""

    name: str
    train: Dataset
    observable_batch: Any
    evaluation_batches: list[Any]
    model: Any  # seed -> nn.Module
    loss_fn: Any  # per-example loss of the library's call shape
    batch_loss: Any  # (model, batch) -> the training loss of a batch
    optimizer: Any  # model -> (optimizer, scheduler or None)
    max_grad_norm: float | None
    window: int
    steps: int
    eval_every: int
    notes: dict = field(default_factory=dict)


# the tasks -------------------------------------------------------------------------------------


def bce(outputs, targets):
    return F.binary_cross_entropy_with_logits(outputs, targets)


def without_batchnorm(model: nn.Module) -> nn.Module:
    """The same network with every BatchNorm2d replaced by a GroupNorm (8 groups, or one per
    channel below 8) with the BatchNorm's initial scale and shift: per-example losses exist."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            norm = nn.GroupNorm(8 if c % 8 == 0 else c, c)
            with torch.no_grad():
                norm.weight.copy_(child.weight)
                norm.bias.copy_(child.bias)
            setattr(model, name, norm)
        else:
            without_batchnorm(child)
    return model


def digits(steps: int, window: int, twin: bool = False) -> Setting:
    from perturbative.pipeline.config import TrainConfig
    from perturbative.pipeline.train import build_dataset, build_model

    config = TrainConfig.demo()
    data = build_dataset(config)
    train_indices = data.train_indices[: len(data.train_indices) // 32 * 32]
    heldout = data.heldout_indices
    inputs, targets = data.batch(heldout)

    def model(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        built = build_model(config, data.num_attributes, data.images.shape[1])
        return without_batchnorm(built) if twin else built

    def optimizer(m):
        return torch.optim.Adam(
            m.parameters(), lr=config.lr, betas=(config.beta1, config.beta2)
        ), None

    return Setting(
        name="digits (no BatchNorm)" if twin else "digits",
        train=Subset(data, train_indices.tolist()),
        observable_batch=(inputs[:128], targets[:128]),
        evaluation_batches=[(inputs[128:], targets[128:])],
        model=model,
        loss_fn=bce,
        batch_loss=lambda m, b: bce(m(b[0]), b[1]),
        optimizer=optimizer,
        max_grad_norm=None,
        window=window,
        steps=steps,
        eval_every=50,
        notes={
            "model": "quarter-width MXResNet-18"
            + (", GroupNorm in place of BatchNorm" if twin else ", BatchNorm in train mode"),
            "optimizer": "Adam lr 5e-3 betas (0.8, 0.999)",
            "train examples": len(train_indices),
            "observable examples": 128,
            "evaluation examples": len(heldout) - 128,
        },
    )


def language_model(steps: int, window: int) -> Setting:
    sys.path.insert(0, str(ROOT / "examples"))
    import own_loop

    train, heldout, _ = own_loop.sequences()
    train = own_loop.Sequences(train[:2048])

    def model(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return own_loop.build_model()

    def optimizer(m):
        opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.01)
        warmup = 50
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: (
                min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
            ),
        )
        return opt, schedule

    def batch_of(rows):
        return {"input_ids": rows, "labels": rows}

    return Setting(
        name="language model",
        train=train,
        observable_batch=batch_of(heldout[:64]),
        evaluation_batches=[batch_of(heldout[64 + 64 * i : 128 + 64 * i]) for i in range(3)],
        model=model,
        loss_fn=own_loop.next_token,
        batch_loss=lambda m, b: m(**b).loss,
        optimizer=optimizer,
        max_grad_norm=1.0,
        window=window,
        steps=steps,
        eval_every=50,
        notes={
            "model": "GPT-2, 2 layers, 64 wide, characters (examples/own_loop.py)",
            "optimizer": "AdamW lr 3e-3, weight decay 0.01, 50 warm-up steps, cosine decay, "
            "clipping 1.0",
            "train examples": 2048,
            "observable examples": 64,
            "evaluation examples": 192,
        },
    )


# one arm, one seed -----------------------------------------------------------------------------


def held_out_loss(setting: Setting, model: nn.Module) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        losses = [float(setting.batch_loss(model, b)) for b in setting.evaluation_batches]
    model.train(was)
    return sum(losses) / len(losses)


def grab_sampler(setting: Setting, params: dict[str, torch.Tensor]):
    sys.modules.setdefault("torch_sparse", types.ModuleType("torch_sparse"))
    sys.modules["torch_sparse"].SparseTensor = None  # only its sparse projection uses it
    from grabsampler import GraBSampler

    # grab-sampler 0.1.3 calls Sampler.__init__(data_source), an argument torch no longer takes
    base = torch.utils.data.Sampler.__init__
    torch.utils.data.Sampler.__init__ = lambda self, *_: None
    try:
        return GraBSampler(setting.train, params, balance_type="mean", device="cpu")
    finally:
        torch.utils.data.Sampler.__init__ = base


def forever(loader: DataLoader):
    """The loader's batches, epoch after epoch (the sampler's work at an epoch's start is
    inside ``next``, so it is timed with the steps)."""
    while True:
        yield from loader


def train_arm(setting: Setting, arm: str, seed: int) -> dict:
    """Train one arm from seed ``seed``; the held-out loss every ``eval_every`` steps with the
    wall time spent training until then (evaluations excluded)."""
    import perturbative as pt

    model = setting.model(seed)
    optimizer, schedule = setting.optimizer(model)
    n = len(setting.train)
    if arm == "grab":
        torch.manual_seed(seed)  # GraB's first epoch is torch.randperm from the global RNG
        params = {k: v for k, v in model.named_parameters() if v.requires_grad}
        sampler = grab_sampler(setting, params)
        loader = DataLoader(setting.train, batch_size=32, sampler=sampler, drop_last=False)
    else:
        name, _, refresh = arm.partition("/")  # "alignment-observed/4": refresh every 4 epochs
        policy, _, scoring = name.partition("-")
        sampler = pt.OrderSampler(
            n, 32, policy=policy, seed=seed, window=setting.window, scoring=scoring or "pass",
            refresh=int(refresh or 1),
        )  # fmt: skip
        if policy in ("alignment", "scores", "windows"):
            observable = pt.Observable.mean_loss(setting.loss_fn, setting.observable_batch)
            sampler.attach(
                model, setting.loss_fn, optimizer, observable, setting.train,
                max_grad_norm=setting.max_grad_norm,
            )  # fmt: skip
        loader = DataLoader(setting.train, batch_sampler=sampler)
    curve = {"step": [0], "loss": [held_out_loss(setting, model)], "seconds": [0.0]}
    model.train()
    seconds, start = 0.0, time.perf_counter()
    for step, batch in zip(range(1, setting.steps + 1), forever(loader), strict=False):
        batch = tuple(batch) if isinstance(batch, list) else batch
        optimizer.zero_grad()
        if arm == "grab":
            leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
            each = pt.per_example_gradients(model, setting.loss_fn, leaves, batch)
            sampler.step(each)
            for k, p in params.items():
                p.grad = each[k].mean(0)  # the step's gradient, as the authors' examples train
        else:
            setting.batch_loss(model, batch).backward()
            sampler.observe()  # reads .grad under scoring="observed", else nothing
        if setting.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), setting.max_grad_norm)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if step % setting.eval_every == 0 or step == setting.steps:
            seconds += time.perf_counter() - start
            curve["step"].append(step)
            curve["loss"].append(held_out_loss(setting, model))
            curve["seconds"].append(seconds)
            start = time.perf_counter()
    curve["policy_seconds"] = getattr(sampler, "seconds", None)
    return curve


# statistics ------------------------------------------------------------------------------------


def mean_interval(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    se = sd / math.sqrt(n) if n > 1 else float("nan")
    half = T975.get(n, 1.96) * se if n > 1 else float("nan")
    return {"mean": mean, "se": se, "ci95": [mean - half, mean + half], "n": n}


def summarize(arms: dict[str, list[dict]], baseline: str) -> dict:
    """Per arm: final loss, paired difference from ``baseline``, steps to reach the baseline's
    final mean loss, and wall time against the baseline's."""
    base_final = [c["loss"][-1] for c in arms[baseline]]
    base_mean = sum(base_final) / len(base_final)
    base_seconds = sum(c["seconds"][-1] for c in arms[baseline]) / len(arms[baseline])
    out = {}
    for arm, curves in arms.items():
        final = [c["loss"][-1] for c in curves]
        paired = [f - b for f, b in zip(final, base_final, strict=False)]
        steps = curves[0]["step"]
        mean_curve = [sum(c["loss"][i] for c in curves) / len(curves) for i in range(len(steps))]
        reach = next((s for s, v in zip(steps, mean_curve, strict=True) if v <= base_mean), None)
        seconds = sum(c["seconds"][-1] for c in curves) / len(curves)
        diff = mean_interval(paired)
        out[arm] = {
            "final": mean_interval(final),
            f"minus_{baseline}": diff,
            "below_by_two_se": bool(diff["mean"] < -2 * diff["se"]) if len(paired) > 1 else False,
            f"steps_to_{baseline}_final": reach,
            "seconds": seconds,
            f"wall_vs_{baseline}": seconds / base_seconds,
            "policy_seconds": (
                None
                if curves[0]["policy_seconds"] is None
                else sum(c["policy_seconds"] for c in curves) / len(curves)
            ),
        }
    return out


def print_table(task: str, summary: dict, baseline: str, markdown: bool = False) -> None:
    """The summary as text, or as the markdown table of ``docs/ordering.md``."""
    if markdown:
        print(f"\n**{task}**\n")
        print(
            f"| arm | final held-out loss | minus {baseline} (paired) | below {baseline} by "
            f"> 2 SE | steps to {baseline}'s final loss | wall time vs {baseline} |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
    else:
        print(
            f"\n{task}: final held-out loss over seeds (mean +- 95% interval), paired vs {baseline}"
        )
        print(
            f"{'arm':<20}{'final loss':>24}{'minus ' + baseline:>28}{'steps to reach':>16}"
            f"{'wall x':>9}"
        )
    for arm, row in summary.items():
        f, d = row["final"], row[f"minus_{baseline}"]
        half = (f["ci95"][1] - f["ci95"][0]) / 2
        dhalf = (d["ci95"][1] - d["ci95"][0]) / 2
        reach = row[f"steps_to_{baseline}_final"]
        reach = "not reached" if reach is None else reach
        wall = row[f"wall_vs_{baseline}"]
        if markdown:
            below = "**yes**" if row["below_by_two_se"] else "no"
            print(
                f"| {arm} | {f['mean']:.4f} +- {half:.4f} | {d['mean']:+.4f} +- {dhalf:.4f} | "
                f"{below} | {reach} | {wall:.2f}x |"
            )
        else:
            print(
                f"{arm:<20}{f['mean']:>14.4f} +- {half:<7.4f}{d['mean']:>+17.4f} +- {dhalf:<7.4f}"
                f"{reach:>16}{wall:>9.2f}"
            )


def draw(task: str, arms: dict[str, list[dict]], path: Path) -> None:
    """Held-out loss against steps and against wall time, and each arm's paired difference from
    random reshuffling against steps: means over seeds with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4))
    base = arms["random"]
    losses = [v for curves in arms.values() for c in curves for v in c["loss"][1:]]
    log = max(losses) > 10 * min(losses)
    floor = min(losses) / 2 if log else -math.inf  # a log axis shows intervals down to here
    for arm, curves in arms.items():
        steps = curves[0]["step"][1:]
        seconds = [
            sum(c["seconds"][i] for c in curves) / len(curves) for i in range(1, len(steps) + 1)
        ]
        loss = [mean_interval([c["loss"][i] for c in curves]) for i in range(1, len(steps) + 1)]
        diff = [
            mean_interval([c["loss"][i] - b["loss"][i] for c, b in zip(curves, base, strict=False)])
            for i in range(1, len(steps) + 1)
        ]
        for ax, xs, stats in (
            (axes[0], steps, loss),
            (axes[1], seconds, loss),
            (axes[2], steps, diff),
        ):
            (line,) = ax.plot(xs, [s["mean"] for s in stats], label=arm, lw=1.4)
            if len(curves) > 1 and not (ax is axes[2] and arm == "random"):
                low = floor if ax is not axes[2] else -math.inf
                ax.fill_between(
                    xs, [max(s["ci95"][0], low) for s in stats],
                    [s["ci95"][1] for s in stats],
                    color=line.get_color(), alpha=0.12,
                )  # fmt: skip
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("wall seconds (training and the policy's predictions)")
    axes[2].set_xlabel("step")
    axes[0].set_ylabel("held-out loss")
    axes[1].set_ylabel("held-out loss")
    axes[2].set_ylabel("minus random reshuffling, same seeds")
    if log:  # digits falls by decades
        axes[0].set_yscale("log")
        axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{task}: means over seeds with 95% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_name(task: str) -> str:
    """``digits (no BatchNorm)`` -> ``digits-no-batchnorm``; ``digits [tag]`` -> ``digits-tag``."""
    for mark in "()[],":
        task = task.replace(mark, " ")
    return "-".join(task.lower().split())


# the run ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="digits,language-model")
    parser.add_argument("--arms", default=",".join(ARMS) + ",grab")
    parser.add_argument(
        "--twin-arms",
        default="random,grab,alignment-observed,scores-observed",
        help="arms on the BatchNorm-free digits twin, where GraB runs",
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--window", type=int, default=2, help="k of 'windows' (k! orders)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--figures", default=str(ROOT / "docs"), help="folder, or none")
    parser.add_argument("--tag", default="", help="save under 'TASK [TAG]', beside other runs")
    parser.add_argument("--summary-only", action="store_true", help="print the saved results")
    parser.add_argument("--markdown", action="store_true", help="with --summary-only: as tables")
    args = parser.parse_args()
    if args.summary_only:
        saved = json.loads(Path(args.out).read_text())
        for task, result in saved["tasks"].items():
            for group, curves in result["curves"].items():
                label = task if group == task.split(" [")[0] else f"{task}, {group}"
                for baseline in ("random", "grab"):
                    if baseline in curves:
                        print_table(label, summarize(curves, baseline), baseline, args.markdown)
                if "[" not in task and "random" in curves and args.figures != "none":
                    draw(label, curves, Path(args.figures) / f"ordering-{figure_name(label)}.png")
        return
    torch.set_num_threads(args.threads)
    policies = args.arms.split(",")
    unknown = {p.partition("/")[0] for p in policies} - set(ARMS) - {"grab"}
    if unknown or "random" not in policies:
        raise SystemExit(f"--arms takes {ARMS} and grab, random among them; not {unknown}")
    if "grab" in policies and importlib.util.find_spec("grabsampler") is None:
        raise SystemExit(
            "GraB's sampler is not installed: run `python3 dev.py grab` (it installs "
            "grab-sampler==0.1.3 without replacing torch), or leave grab out of --arms"
        )
    builders = {"digits": digits, "language-model": language_model}
    command = " ".join(["python benchmarks/ordering.py", *sys.argv[1:]])
    results = {}
    for task in args.tasks.split(","):
        if task not in builders:
            raise SystemExit(f"--tasks takes {tuple(builders)}, not {task!r}")
        groups = {
            task: (builders[task](args.steps, args.window), [p for p in policies if p != "grab"])
        }
        if "grab" in policies:
            if task == "digits":  # GraB needs per-example gradients: a BatchNorm-free twin
                twin = [a for a in args.twin_arms.split(",") if a in policies]
                groups["no BatchNorm"] = (digits(args.steps, args.window, twin=True), twin)
            else:
                groups[task][1].append("grab")
        result = {"summaries": {}, "curves": {}, "settings": {}, "command": command}
        for group, (setting, arms) in groups.items():
            curves = {arm: [] for arm in arms}
            for seed in range(args.seeds):  # seeds outermost: arms side by side in time
                for arm in arms:
                    curve = train_arm(setting, arm, seed)
                    curves[arm].append(curve)
                    print(
                        f"{setting.name:<22} {arm:<18} seed {seed}: held-out "
                        f"{curve['loss'][-1]:.4f} after {curve['step'][-1]} steps, "
                        f"{curve['seconds'][-1]:.1f} s",
                        flush=True,
                    )
            summary = summarize(curves, "random")
            print_table(setting.name, summary, "random")
            result["summaries"][group] = summary
            result["curves"][group] = curves
            result["settings"][group] = {**setting.notes, "steps": args.steps, "seeds": args.seeds}
            if args.figures != "none":
                name = figure_name(f"{setting.name} {args.tag}")
                draw(setting.name, curves, Path(args.figures) / f"ordering-{name}.png")
        results[f"{task} [{args.tag}]" if args.tag else task] = result
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {"tasks": {}}
    saved["tasks"].update(results)
    saved.update(
        command=command,
        torch=torch.__version__,
        threads=args.threads,
    )
    Path(args.out).write_text(json.dumps(saved, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
