"""Expected failures: a bad value, a missing or corrupt file, an interrupted run.

Each says in one line what is wrong, which file or key, and what to do. The command line prints
them on stderr without a traceback and exits with 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


def describe(err: BaseException) -> str:
    """'Type: first line of the message' (at most 200 characters), for one-line errors that
    name the cause."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0][:200] if lines else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class UserError(Exception):
    """An expected failure whose message is all the user needs."""


class DataError(UserError):
    """A prepared or raw data file that is missing, unreadable or does not match its manifest."""


class CheckpointError(UserError):
    """A checkpoint or model file that cannot be used safely."""


class TrainingInterrupted(UserError):
    """Ctrl-C or SIGTERM during training; the message says from which epoch a rerun resumes."""
