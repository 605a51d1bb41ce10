"""Acting on the order predictions: ``OrderSampler``, a batch sampler that orders minibatches.

Each epoch the sampler cuts a permutation of the training set into minibatches of the run's
size and orders them by a *policy*. For ``N`` minibatches an epoch, the policies and what each
costs (one "gradient" is a forward and backward pass on one minibatch, what a training step
costs):

=============  ===========================================================  ====================
policy         order of the epoch's minibatches                             cost
=============  ===========================================================  ====================
``random``     random reshuffling: a fresh permutation each epoch           none
``once``       shuffle once: the first epoch's permutation every epoch      none
``reversal``   paired reversal: odd epochs replay the epoch before in       none
               reverse, which cancels the bracket (``lr^2``) term of the
               order over the two epochs
``alignment``  first-order baseline: by ``u . g_B`` (the batch's gradient    ``N + 1`` gradients
               against ``u = grad O``), the most aligned first              per refresh
``scores``     by the optimizer-aware score ``O(B first) - O(B last)`` of    ``2 N`` gradients +
               each batch in a window of ``W`` of the epoch's batches,      ``W`` unrolled steps
               with the optimizer's real state                              and one backward
               (:func:`optimizer_batch_scores`), lowest first                pass, per refresh
``windows``    within consecutive windows of ``k`` batches, the predicted   per window: ``k``
               best of the ``k!`` orders (:func:`best_order`) at the          gradients, at most
               window's start, with the optimizer's real state               ``k! (k - 1)`` HVPs
=============  ===========================================================  ====================

``u`` is the gradient of the observable ``O`` (usually the loss of a held-out batch) at the
parameters when the epoch starts. Under plain SGD the first-order effect of an order on ``O``
cancels (the steps commute to first order) and what remains is the bracket; under Adam or SGD
with momentum a batch's place also matters at first order (its gradient is still in the moments
when ``O`` is read), which ``scores`` and ``windows`` include and ``alignment`` leaves out:
``alignment`` is there so that what the order gains is not credited to the bracket when a
first-order rule would have gained it too.

``alignment`` and ``scores`` score every batch of the epoch when it starts, at the parameters
and optimizer state of that moment; with ``refresh=R`` they score every ``R``-th epoch only and
replay that epoch's batches, in the same order, in the ``R - 1`` epochs after it (the cost is
then ``1/R`` per epoch). With ``scoring="observed"`` they reuse the loop's own gradients,
as GraB does: the batches are the same every epoch (one permutation), the loop calls
:meth:`OrderSampler.observe` after each ``backward()``, which dots the gradient the loop just
computed with a direction (``u`` for ``alignment``; ``lambda_1 - lambda_W`` of the
optimizer-aware score for ``scores``, the batch's gradient taken where the loop took it rather
than at the window's two ends), and each epoch is ordered by the scores of the epoch before
(the first as drawn). Per ``refresh`` epochs: one gradient of ``O`` (``alignment``), or ``W``
unrolled steps and one backward pass (``scores``); per step, one dot product.

``windows`` decides each window when the loader asks for its first batch: with
``DataLoader(num_workers=0)`` that is right after the previous step, so the prediction starts
from the real state; with worker processes the loader asks a few batches
ahead and the state the decision sees is that many steps old.

**Usage.** ``DataLoader(dataset, batch_sampler=sampler)``; policies that predict need the run:
``sampler.attach(model, loss_fn, optimizer, observable, dataset)`` (the loss of ONE example, as
everywhere in the library; batches are built from ``dataset`` with the loader's collate
function, :func:`torch.utils.data.default_collate` by default).

**Epochs and state.** An epoch's minibatches are a pure function of ``(seed, epoch)`` (for
``once``, of the seed; for ``reversal``, of ``(seed, epoch // 2)``); their order depends on the
model only under the predicting policies. ``__iter__`` continues the current epoch from the
batch reached (the next epoch if every batch of this one was drawn, as by a loader that stops
at ``len()``) and then moves to the next; ``set_epoch`` jumps. ``state_dict()`` holds the epoch,
the position and the epoch's order as decided so far, so a resumed run draws the same batches in
the same order as an uninterrupted one (with the model and optimizer restored too, later epochs'
predictions are the same as well).

**Distributed.** Every rank cuts the same permutation into the same minibatches; rank ``r`` of
``world_size`` takes batches ``r, r + world_size, ...`` (every rank the same number) and orders
its own shard by the policy, at its own parameters (the same on every rank under
``DistributedDataParallel``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler, default_collate

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.engines import differentiable_kernels
from perturbative._core.epochs import EpochPosition
from perturbative.brackets._expansion import Expansion
from perturbative.brackets._gradients import mean_gradient
from perturbative.brackets._observable import Observable
from perturbative.brackets._optimizers import functional_optimizer
from perturbative.brackets._predictions import FreshOptimizerWarning, best_order
from perturbative.brackets._scores import window_adjoints
from perturbative.brackets._step import TrainingStep
from perturbative.brackets._swap import trained_names

#: The sampler's policies, in the order of the module docstring's table.
ORDER_POLICIES = ("random", "once", "reversal", "alignment", "scores", "windows")
_SCORED = ("alignment", "scores")  # the policies that score every batch of an epoch


def batch_alignments(
    model: nn.Module, loss_fn: LossFn, batches: Sequence[Any], observable: Observable
) -> Tensor:
    """``u . g_B`` for every minibatch ``B``, with ``u = grad O`` and ``g_B`` the gradient of
    the batch's mean loss at the model's parameters: how much a plain gradient step on ``B``
    lowers ``O``, per unit of ``lr``, to first order.

    Args:
        model: the model at ``theta`` (BatchNorm in train mode: each batch by its own
            statistics, as its training step).
        loss_fn: the per-example loss (a batch of one).
        batches: ``N`` minibatches (data tuples or keyword batches).
        observable: ``O``.

    Returns:
        ``(N,)`` float64.
    """
    params = {
        k: v.detach().clone().requires_grad_()
        for k, v in model.named_parameters()
        if v.requires_grad
    }
    u = observable.gradient(model, params)
    out = []
    for batch in checks.check_batches(model, batches):
        with differentiable_kernels():
            g = mean_gradient(model, loss_fn, params, batch)
        out.append(_dot(g, u))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def optimizer_batch_scores(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    batches: Sequence[Any],
    observable: Observable,
    window: Sequence[Any],
) -> Tensor:
    """``O(B first) - O(B last)`` for each minibatch ``B``: its gradient added to the first or
    to the last of the ``W`` steps of ``window``, taken with the optimizer's own update from its
    real state (:func:`perturbative.brackets.optimizer_order_scores` for a whole batch).

    With ``lambda_t = dO(theta_W)/de_t`` the adjoint of the window's trajectory,

        score_B = lambda_1 . g_B(theta_0) - lambda_W . g_B(theta_{W-1}),

    which for a batch of the window's size is the sum of the optimizer-aware scores of its
    examples. Negative: ``B`` early lowers ``O``.

    Args:
        model: the model at ``theta_0``; not modified.
        loss_fn: the per-example loss (a batch of one).
        step: the loop's :class:`~perturbative.TrainingStep` (``SGD``, ``Adam`` or ``AdamW`` on
            the model, in the run's state, its clipping and schedule), or the optimizer alone.
        batches: ``N`` minibatches to score.
        observable: ``O``.
        window: ``W >= 2`` minibatches, the steps the run takes next.

    Returns:
        ``(N,)`` float64.
    """
    if len(window) < 2:
        raise ValueError(f"the window needs at least 2 minibatches, not {len(window)}")
    names = trained_names(model, step)
    by_name = dict(model.named_parameters())
    window = checks.check_batches(model, window)
    batches = checks.check_batches(model, batches)
    theta = {k: by_name[k].detach() for k in names}
    state = calls.fixed_state(model, theta)
    read = functional_optimizer(step, {k: by_name[k] for k in names})
    with differentiable_kernels():
        first, last, before_last = window_adjoints(
            model, loss_fn, observable, read, theta, state, window, frozen=False
        )
        scores = []
        for batch in batches:
            at_first = mean_gradient(model, loss_fn, _leaf(theta), batch)
            at_last = mean_gradient(model, loss_fn, _leaf(before_last), batch)
            scores.append(_dot(at_first, first) - _dot(at_last, last))
    out = torch.stack(scores) if scores else torch.zeros(0, dtype=torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError(
            "the batch scores are not finite: the window's trajectory or the observable is NaN "
            "or inf here (check the loss, or use float64)"
        )
    return out


def _leaf(params: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone().requires_grad_() for k, v in params.items()}


def _dot(a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
    return sum((a[k].double() * b[k].double()).sum() for k in b)


class OrderSampler(Sampler[list[int]]):
    """Batch sampler that orders each epoch's minibatches by a policy (module docstring).

    Args:
        num_examples: size of the training set.
        batch_size: examples per minibatch (every batch full: an epoch's remainder is left out
            and lands in a batch of a later epoch's permutation).
        policy: one of :data:`ORDER_POLICIES`.
        seed: seed of the permutations.
        window: ``k`` for ``windows`` (``k!`` orders predicted per window; 2 to 4), and ``W``
            for ``scores``: the adjoint's window is the first ``W`` of the epoch's batches as
            drawn, the steps the run would take next in a random order.
        refresh: score every ``refresh``-th epoch (``alignment``, ``scores``) and replay it
            between; with ``scoring="observed"``, take the direction every ``refresh``-th
            epoch (the order still follows each epoch's observations).
        scoring: ``"pass"``: ``alignment`` and ``scores`` score the epoch's batches in one pass
            when it starts; ``"observed"``: from the gradients the loop computes anyway, read by
            :meth:`observe` after each ``backward()`` (module docstring).
        expansion: how ``windows`` expands each gradient (default: to second order, the
            bracket; ``Expansion()`` adds the third).
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of ranks.

    Attributes:
        seconds: time spent on predictions so far (the policy's overhead).
        epoch: the current epoch.

    Raises:
        ValueError: on an unknown policy, or sizes, window or ranks out of range.

    Example:
        >>> sampler = OrderSampler(10, 3, policy="reversal", seed=0)
        >>> first, second = list(sampler), list(sampler)
        >>> second == [b[::-1] for b in first[::-1]]
        True
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        *,
        policy: str = "random",
        seed: int = 0,
        window: int = 3,
        refresh: int = 1,
        scoring: str = "pass",
        expansion: Expansion | int = 2,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if policy not in ORDER_POLICIES:
            raise ValueError(f"policy must be one of {ORDER_POLICIES}, not {policy!r}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if num_examples // batch_size < world_size:
            raise ValueError(
                f"{num_examples} examples make {num_examples // batch_size} full batches of "
                f"{batch_size}, fewer than the {world_size} ranks: use smaller batches"
            )
        if not (isinstance(window, int) and 2 <= window <= (4 if policy == "windows" else 64)):
            raise ValueError(
                f"window must be an integer in [2, 4] for 'windows' (k! orders are predicted) "
                f"and in [2, 64] for 'scores', got {window!r}"
            )
        if not (isinstance(refresh, int) and refresh >= 1):
            raise ValueError(f"refresh must be a positive integer, got {refresh!r}")
        if scoring not in ("pass", "observed"):
            raise ValueError(f"scoring must be 'pass' or 'observed', not {scoring!r}")
        if scoring == "observed" and policy not in _SCORED:
            raise ValueError(
                f"scoring='observed' scores batches for 'alignment' and 'scores', not {policy!r}"
            )
        self.num_examples = int(num_examples)
        self.batch_size = batch_size
        self.policy = policy
        self.seed = int(seed)
        self.window = window
        self.refresh = refresh
        self.scoring = scoring
        self.expansion = expansion
        self.rank = rank
        self.world_size = world_size
        self.seconds = 0.0
        self._epochs = EpochPosition()  # the epoch, and the batches of it already emitted
        self._order: list[list[int]] | None = None  # the current epoch's order, as decided
        self._order_epoch: int | None = None  # the epoch the order was made for (refresh)
        self._decided = 0  # windows: positions of the current order already decided
        self._run: dict[str, Any] | None = None
        self._direction: dict[str, Tensor] | None = None  # observed: u, or lambda_1 - lambda_W
        self._observed: dict[tuple[int, ...], float] = {}  # observed: batch -> its score

    def attach(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        observable: Observable,
        dataset: Any,
        collate_fn: Callable[[list[Any]], Any] = default_collate,
        *,
        scheduler: Any = None,
        max_grad_norm: float | None = None,
    ) -> OrderSampler:
        """Give the predicting policies the run: the model and optimizer (read, never
        modified), the per-example loss, ``O``, the dataset the loader reads, and the rest of
        the loop's step: its lr ``scheduler`` (read on a copy each time a policy predicts) and
        its gradient clipping. Returns the sampler."""
        if len(dataset) != self.num_examples:
            raise ValueError(
                f"the dataset has {len(dataset)} examples but the sampler was built for "
                f"{self.num_examples}"
            )
        if not isinstance(observable, Observable):
            raise TypeError(
                "observable must be a perturbative.Observable, e.g. "
                "Observable.mean_loss(loss_fn, heldout_batch)"
            )
        self._run = dict(
            model=model,
            loss_fn=loss_fn,
            optimizer=optimizer,
            observable=observable,
            dataset=dataset,
            collate_fn=collate_fn,
            scheduler=scheduler,
            max_grad_norm=max_grad_norm,
        )
        self._step()  # a scheduler of another optimizer, or one not modelled, is refused now
        return self

    def _step(self) -> TrainingStep:
        """The loop's step as it stands now (the optimizer's state, the schedule from here)."""
        run = self._require_run()
        return TrainingStep(run["optimizer"], run["max_grad_norm"], scheduler=run["scheduler"])

    # the epoch's minibatches -----------------------------------------------------------------

    def _permutation(self, seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + seed)
        return torch.randperm(self.num_examples, generator=generator).tolist()

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's minibatches of ``epoch`` (default: the current one) before the policy
        orders them: for ``random``, ``once`` and ``reversal`` also their order."""
        epoch = self.epoch if epoch is None else epoch
        if self.policy == "once" or self.scoring == "observed":
            perm = self._permutation(0)
        elif self.policy == "reversal":
            perm = self._permutation(epoch // 2)
        else:
            perm = self._permutation(epoch)
        count = self.num_examples // self.batch_size
        used = perm[: count * self.batch_size]
        if self.policy == "reversal" and epoch % 2 == 1:
            used = used[::-1]
        batches = [used[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]
        per_rank = count // self.world_size
        return batches[self.rank :: self.world_size][:per_rank]

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._epochs.epoch

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch at the next ``__iter__``."""
        if epoch != self.epoch:
            self._epochs.set_epoch(epoch)
            if self._order_epoch is None or self._scores_epoch(epoch) != self._order_epoch:
                self._order = None

    def _scores_epoch(self, epoch: int) -> int:
        if self.policy in _SCORED and self.scoring == "pass":
            return epoch - epoch % self.refresh
        return epoch

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return (self.num_examples // self.batch_size) // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        if self._order is not None and self._epochs.start(len(self._order)):
            self._follow_epoch()  # the last loop stopped at the epoch's end without asking past it
        if self._order is None:
            self._order = self._ordered(self.epoch)
            self._order_epoch = self._scores_epoch(self.epoch)
            self._decided = 0
        while self._epochs.position < len(self._order):
            if self.policy == "windows" and self._epochs.position >= self._decided:
                self._decide_window(self._epochs.position)
            # counted before yielding: state_dict() after a step includes it
            yield list(self._order[self._epochs.take()])
        self._epochs.next_epoch()
        self._follow_epoch()

    def _follow_epoch(self) -> None:
        """The epoch just begun replays the order until the next refresh, else orders anew."""
        if self._scores_epoch(self.epoch) != self._order_epoch:
            self._order = None
        else:  # replayed until the next refresh
            self._decided = len(self._order)

    # the policies ------------------------------------------------------------------------------

    def _ordered(self, epoch: int) -> list[list[int]]:
        batches = self.epoch_batches(epoch)
        if self.policy not in _SCORED:
            return batches
        if self.scoring == "observed":
            return self._observed_order(batches, epoch)
        run = self._require_run()
        start = time.perf_counter()
        data = [self._collate(b) for b in batches]
        if self.policy == "alignment":
            values = batch_alignments(run["model"], run["loss_fn"], data, run["observable"])
            key = -values  # the most aligned first
        else:
            key = optimizer_batch_scores(
                run["model"],
                run["loss_fn"],
                self._step(),
                data,
                run["observable"],
                data[: self.window],
            )
        order = torch.sort(key, stable=True).indices.tolist()
        self.seconds += time.perf_counter() - start
        return [batches[i] for i in order]

    def _observed_order(self, batches: list[list[int]], epoch: int) -> list[list[int]]:
        """Order by the scores observed in the epoch before (the first epoch as drawn), then
        take the direction at the parameters and state reached (every ``refresh`` epochs)."""
        if all(tuple(b) in self._observed for b in batches):
            key = torch.tensor([self._observed[tuple(b)] for b in batches], dtype=torch.float64)
            order = torch.sort(-key if self.policy == "alignment" else key, stable=True).indices
            batches = [batches[i] for i in order.tolist()]
        if self._direction is not None and epoch % self.refresh:
            return batches
        run = self._require_run()
        start = time.perf_counter()
        model = run["model"]
        names = trained_names(model, run["optimizer"])
        by_name = dict(model.named_parameters())
        theta = {k: by_name[k].detach() for k in names}
        if self.policy == "alignment":
            # a first derivative: torch's fused kernels are right, and faster
            params = _leaf(theta)
            value = run["observable"].evaluate(model, params, calls.fixed_state(model, params))
            grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
            self._direction = {
                k: torch.zeros_like(theta[k]) if g is None else g
                for k, g in zip(params, grads, strict=True)
            }
        else:
            read = functional_optimizer(self._step(), {k: by_name[k] for k in names})
            window = checks.check_batches(model, [self._collate(b) for b in batches[: self.window]])
            with differentiable_kernels(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FreshOptimizerWarning)
                first, last, _ = window_adjoints(
                    model,
                    run["loss_fn"],
                    run["observable"],
                    read,
                    theta,
                    calls.fixed_state(model, theta),
                    window,
                    frozen=False,
                )
            self._direction = {k: first[k] - last[k] for k in first}
        self.seconds += time.perf_counter() - start
        return batches

    def observe(self) -> None:
        """Record the score of the batch just trained from the gradient the loop computed: call
        it after ``loss.backward()`` and before ``optimizer.step()`` (and before clipping). A
        no-op unless ``scoring="observed"``, so a loop may call it under every policy.

        The score is ``d . g_B``, ``g_B`` the batch's gradient in the parameters' ``.grad``
        and ``d`` the epoch's direction: ``u = grad O`` (``alignment``) or ``lambda_1 -
        lambda_W`` of a window of the epoch's first steps (``scores``: the optimizer-aware score
        with ``g_B`` taken where the loop took it). Under ``DistributedDataParallel`` the
        ``.grad`` is the mean over ranks, not this rank's batch: use ``scoring="pass"`` there.

        Raises:
            RuntimeError: if no batch of this epoch was drawn yet, or the gradients are missing.
        """
        if self.scoring != "observed":
            return
        if self._order is None or self._epochs.position == 0 or self._direction is None:
            raise RuntimeError(
                "observe() reads the gradient of the batch just drawn: call it after the loop's "
                "backward() on a batch from this sampler"
            )
        by_name = dict(self._require_run()["model"].named_parameters())
        missing = [k for k in self._direction if by_name[k].grad is None]
        if missing:
            raise RuntimeError(
                f"no gradient in .grad of {missing[:3]}: call observe() after loss.backward() "
                "and before optimizer.zero_grad()"
            )
        score = sum(
            float(torch.dot(by_name[k].grad.flatten(), d.flatten()))
            for k, d in self._direction.items()
        )
        self._observed[tuple(self._order[self._epochs.position - 1])] = float(score)

    def _decide_window(self, position: int) -> None:
        run = self._require_run()
        start = time.perf_counter()
        chunk = self._order[position : position + self.window]
        if len(chunk) >= 2:
            with warnings.catch_warnings():
                # the sampler holds the run's own optimizer: without state, the run is starting
                warnings.simplefilter("ignore", FreshOptimizerWarning)
                prediction = best_order(
                    run["model"],
                    run["loss_fn"],
                    self._step(),
                    [self._collate(b) for b in chunk],
                    run["observable"],
                    expansion=self.expansion,
                )
            self._order[position : position + len(chunk)] = [chunk[i] for i in prediction.best]
        self._decided = position + len(chunk)
        self.seconds += time.perf_counter() - start

    def _collate(self, indices: list[int]) -> Any:
        run = self._require_run()
        batch = run["collate_fn"]([run["dataset"][i] for i in indices])
        return tuple(batch) if isinstance(batch, list) else batch

    def _require_run(self) -> dict[str, Any]:
        if self._run is None:
            raise RuntimeError(
                f"policy {self.policy!r} predicts from the run: call sampler.attach(model, "
                "loss_fn, optimizer, observable, dataset) before iterating"
            )
        return self._run

    # state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "batch", "order", "order_epoch", "decided", "seconds", "observed",
        "direction"}`` (the last a dict of tensors or ``None``: save it with ``torch.save``) and
        the settings a resumed sampler must share (``"policy", "seed", "num_examples",
        "batch_size", "window", "refresh", "scoring", "rank", "world_size"``)."""
        return {
            **self._epochs.state_dict(),
            "order": None if self._order is None else [list(b) for b in self._order],
            "order_epoch": self._order_epoch,
            "decided": self._decided,
            "seconds": self.seconds,
            "observed": [[list(b), v] for b, v in self._observed.items()],
            "direction": self._direction,
            **self._settings(),
        }

    def _settings(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "seed": self.seed,
            "num_examples": self.num_examples,
            "batch_size": self.batch_size,
            "window": self.window,
            "refresh": self.refresh,
            "scoring": self.scoring,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where ``state`` was saved; the next ``__iter__`` continues from there.

        Raises:
            ValueError: if ``state`` comes from a sampler with other settings.
        """
        for key, value in self._settings().items():
            if key in state and state[key] != value:
                raise ValueError(
                    f"state has {key}={state[key]!r} but this sampler has {value!r}; build the "
                    "sampler with the settings of the run it resumes"
                )
        self._epochs.load_state_dict(state)
        self._order = None if state["order"] is None else [list(b) for b in state["order"]]
        self._order_epoch = state["order_epoch"]
        self._decided = int(state["decided"])
        self.seconds = float(state.get("seconds", 0.0))
        self._observed = {tuple(b): float(v) for b, v in state.get("observed", [])}
        self._direction = state.get("direction")
