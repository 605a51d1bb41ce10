"""Where a batch sampler stands in its run: ``EpochPosition``, shared by every batch sampler.

A run is a sequence of epochs, each a list of batches. Its place is two numbers: ``epoch`` and
``position``, the batches of that epoch already drawn (counted before a batch is yielded, so a
state saved after a training step includes the step's batch). An iteration draws from
``position`` to the epoch's end and then moves to the next epoch. A loop may also stop on the
epoch's last batch without asking past it (torch's ``DataLoader`` under Lightning takes
``len()`` batches and stops); ``position`` is then the epoch's length, and the rule

    a new iteration starts the next epoch when every batch of this one was drawn

makes that loop's next iteration the next epoch, not an empty one. An epoch of no batches is
never finished by the rule (nothing of it was drawn); the iteration that ends it moves on.
``state_dict()`` holds ``{"epoch", "batch"}`` (``batch`` is the position), the keys every
sampler's saved state has always used.
"""

from __future__ import annotations

from typing import Any


class EpochPosition:
    """The current epoch and the batches of it drawn, with the rule for starting an iteration.

    Example:
        >>> place = EpochPosition()
        >>> place.take(), place.take()  # a loop draws both batches of a 2-batch epoch, stops
        (0, 1)
        >>> place.start(2), place.epoch, place.position  # the next iteration: the next epoch
        (True, 1, 0)
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.position = 0

    def finished(self, length: int) -> bool:
        """Whether every batch of the current epoch, ``length`` of them, was drawn."""
        return 0 < length <= self.position

    def start(self, length: int) -> bool:
        """Begin an iteration over the current epoch of ``length`` batches: move to the next
        epoch if every batch of this one was drawn. Returns whether it moved."""
        if self.finished(length):
            self.next_epoch()
            return True
        return False

    def take(self) -> int:
        """Count one more batch drawn; returns its index in the epoch."""
        self.position += 1
        return self.position - 1

    def next_epoch(self) -> None:
        """Move to the first batch of the next epoch."""
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Move to the first batch of ``epoch``.

        Raises:
            ValueError: if ``epoch`` is negative.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batch"}``: the epoch and the batches of it drawn."""
        return {"epoch": self.epoch, "batch": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stand where ``state`` was saved; other keys of a sampler's state are ignored.

        Raises:
            ValueError: if the epoch or the batch is negative.
        """
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if epoch < 0 or batch < 0:
            raise ValueError(
                f"state has epoch={epoch}, batch={batch}; both must be >= 0 (pass the "
                "state_dict() of a sampler)"
            )
        self.epoch, self.position = epoch, batch
