"""EpochPosition: a loop that stops at len() and one that asks past the end draw the same run."""

import doctest
import itertools

import pytest

from perturbative._core import epochs
from perturbative._core.epochs import EpochPosition


class Epochs:
    """The smallest sampler on the mechanism: epoch ``e`` has ``lengths[e]`` batches, batch
    ``i`` of it is ``(e, i)``; iterated as both samplers iterate."""

    def __init__(self, lengths):
        self.lengths = lengths
        self.place = EpochPosition()

    def __len__(self):
        length = self.lengths[self.place.epoch]
        return self.lengths[self.place.epoch + 1] if self.place.finished(length) else length

    def __iter__(self):
        self.place.start(self.lengths[self.place.epoch])
        while self.place.position < self.lengths[self.place.epoch]:
            yield self.place.epoch, self.place.take()
        self.place.next_epoch()


def whole_run(lengths):
    return [[(e, i) for i in range(n)] for e, n in enumerate(lengths)]


def test_the_docstring_example_runs():
    assert doctest.testmod(epochs).failed == 0


def test_stopping_at_len_and_asking_past_the_end_draw_the_same_epochs():
    lengths = [3, 2, 4, 1, 5]
    past_the_end = Epochs(lengths)
    at_len = Epochs(lengths)
    assert [list(past_the_end) for _ in range(4)] == whole_run(lengths)[:4]
    # len() before iter(): the epoch the next iteration draws, as a DataLoader asks it
    assert [list(itertools.islice(at_len, len(at_len))) for _ in range(4)] == whole_run(lengths)[:4]
    assert at_len.place.state_dict() == {"epoch": 3, "batch": 1}  # on the last batch drawn
    assert past_the_end.place.state_dict() == {"epoch": 4, "batch": 0}
    assert list(at_len) == list(past_the_end) == whole_run(lengths)[4]


def test_a_loop_stopped_mid_epoch_continues_from_the_batch_reached():
    run = Epochs([4, 4])
    assert list(itertools.islice(run, 3)) == [(0, 0), (0, 1), (0, 2)]
    assert not run.place.finished(4)
    assert list(run) == [(0, 3)]
    assert list(run) == whole_run([4, 4])[1]


def test_a_saved_place_resumes_mid_epoch_and_at_an_epoch_end():
    lengths = [3, 3, 3]
    for stop in range(1, 7):
        run = Epochs(lengths)
        drawn = []
        while len(drawn) < stop:  # whole epochs stopped at len(), then part of one
            drawn.extend(itertools.islice(run, min(len(run), stop - len(drawn))))
        resumed = Epochs(lengths)
        resumed.place.load_state_dict({**run.place.state_dict(), "seed": 7})  # extra keys ignored
        first = list(resumed)
        assert first, stop  # saved on an epoch's last batch: the next epoch, not an empty one
        drawn.extend(first)
        while len(drawn) < sum(lengths):
            drawn.extend(resumed)
        assert drawn == list(itertools.chain.from_iterable(whole_run(lengths))), stop


def test_an_empty_epoch_is_passed_once_not_skipped_past():
    run = Epochs([2, 0, 2, 2])
    assert list(run) == whole_run([2])[0]
    assert not run.place.finished(0)  # nothing of it drawn: the rule does not skip the next one
    assert list(run) == []
    assert run.place.epoch == 2 and list(run) == [(2, 0), (2, 1)]


def test_set_epoch_jumps_to_the_first_batch_and_bad_places_are_refused():
    place = EpochPosition()
    place.take()
    assert place.start(1) and place.state_dict() == {"epoch": 1, "batch": 0}
    assert not place.start(1)  # nothing of epoch 1 drawn yet
    place.take()
    place.set_epoch(5)
    assert place.state_dict() == {"epoch": 5, "batch": 0}
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        place.set_epoch(-1)
    with pytest.raises(ValueError, match="state_dict"):
        place.load_state_dict({"epoch": 0, "batch": -2})
    assert place.state_dict() == {"epoch": 5, "batch": 0}
