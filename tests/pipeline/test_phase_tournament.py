"""One tournament of the phase check (pipeline/phase_tournament.py): every pair from each first
phase trained once, bit for bit as each order from the checkpoint; the earlier version's saved
pairs read back; every method's cost against the same experiment."""

import pytest
import torch
from cases import warm_adam_mlp

import perturbative as pt
from perturbative.pipeline.partial import PartialCheck
from perturbative.pipeline.phase_tournament import Tournament, tournament_record

DTYPE = torch.float64


def squared(outputs, targets):
    return 0.5 * ((outputs - targets) ** 2).mean()


@pytest.fixture
def tournament(tmp_path):
    """Four sources' phases of two batches on a small MLP with Adam in a state, clipping and a
    decaying schedule; the check's progress file in ``tmp_path``."""
    model, optimizer, (x, y), phases = warm_adam_mlp(3)
    step = pt.TrainingStep(optimizer, max_grad_norm=0.5, rates=[(3e-2 * 0.8**t,) for t in range(6)])
    unfinished = PartialCheck.open(tmp_path, {"options": {}}, progress="p.jsonl", finished="f")
    return Tournament(
        step=50,
        lr=3e-2,
        model=model,
        training=step,
        loss_fn=squared,
        folder="run",
        targets={"loss": pt.Observable.mean_loss(squared, (x[40:], y[40:]))},
        chosen=["a", "b", "c", "d"],
        phases=phases,
        triples=[[0, 1, 2]],
        k=2,
        expand=False,
        unfinished=unfinished,
    )


def test_each_first_phase_once_gives_every_order_bit_for_bit(tournament):
    for i in range(4):
        others = [j for j in range(4) if j != i]
        got = tournament.after(i)["values"]
        assert got == [tournament.values((i, j)) for j in others]


def test_the_earlier_versions_pairs_are_read_and_only_the_missing_ones_train(tournament):
    """A unit the earlier version saved holds one pair both ways from the checkpoint; phase 1
    followed by the others reads pair (0, 1) as ``O(1 then 0)`` and trains the rest."""
    saved = {"values": [[10.0], [20.0]], "seconds": 4.0}  # O(0 then 1), O(1 then 0)
    tournament.unfinished.get((50, 2, "pair", 0, 1), lambda: saved)
    got = tournament.after(1)
    assert got["values"][0] == [20.0]
    assert got["values"][1:] == [tournament.values((1, j)) for j in (2, 3)]
    assert got["seconds"] > 2.0  # half the pair's, and the two trained now
    assert tournament.after(0)["values"][0] == [10.0]


def test_every_method_is_costed_against_the_tournament_trained_branched(tournament):
    """``N^2 k`` steps to train every pair both ways, also for the units a resumed check of the
    earlier version saved against ``2 N (N - 1) k``."""
    mixture = [b for p in tournament.phases[:2] for b in p[:1]]
    anchors = {"anchored": (mixture, False), "anchored-alone": (mixture, True)}
    record = tournament_record(tournament, anchors=anchors, earlier=None)
    assert record.cost["anchored"]["gradients"] == 13 * 2
    assert record.cost["anchored-alone"]["gradients"] == 8 * 2
    every = {m: c["gradients_to_train_every_pair_both_ways"] for m, c in record.cost.items()}
    assert set(every.values()) == {16 * 2} and {"composition", "anchored"} <= set(every)
    real = record.real["loss"]
    assert all(real[i][j] == -real[j][i] != 0 for i in range(4) for j in range(4) if i != j)
    done = tournament.unfinished.done  # the units as the earlier version saved them
    for cost in [*done["50/2/predicted"][1].values(), done["50/2/predicted/anchored"]["cost"]]:
        cost["gradients_to_train_every_pair_both_ways"] = 2 * 4 * 3 * 2
    again = tournament_record(tournament, anchors=anchors, earlier=None)
    assert again.real == record.real
    assert {c["gradients_to_train_every_pair_both_ways"] for c in again.cost.values()} == {32}
