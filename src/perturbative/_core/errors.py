"""The error type of bad user input, which the command line prints as one line."""

from __future__ import annotations


class InputError(ValueError):
    """A value the user gave (a flag, a config entry, a data file, a run folder) is not usable.

    The message says what is wrong and what to do. The command line prints it without a traceback
    and exits with status 2; any other exception is a bug and keeps its traceback.
    """
