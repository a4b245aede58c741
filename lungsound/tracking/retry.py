"""MLflow store calls that lose a race with another process are tried again, a bounded number of times.

Several processes writing to one store at once (trainings started together, a sweep's seeds, an evaluation logging to
a run that is training) can collide in two ways, and both only mean "try again":

- sqlite's "database is locked" (an `OperationalError`): another connection held the write lock longer than the
  driver waits;
- a UNIQUE key violation (an `IntegrityError`) from MLflow's look-up-then-insert writes: two processes that log the
  same dataset into one experiment both find it missing and both insert it (the `datasets` key: experiment, name,
  digest); the same holds for an experiment's tags and a run's params. On the next try the row is there and MLflow uses
  it, so the write ends as if the processes had taken turns.

`retry_store(call, ...)` makes up to `ATTEMPTS` tries, waiting 50 ms, 100 ms, 200 ms, ... (with up to 100% random
jitter, from a generator of its own: the training's random streams are not touched) between them, and raises the last
error when every try failed or the error is of any other kind. `RetryingClient` wraps an `MlflowClient` so that each of
its methods is called that way: `lungsound.tracking.client()` returns one, so every read and write of the toolkit
goes through here. A write that a UNIQUE violation rejects for good (creating an experiment whose name exists) fails
again in the same way and is raised after the last try.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable

ATTEMPTS = 6
FIRST_WAIT = 0.05  # seconds; doubled after each failed try
TRANSIENT_TEXT = ("database is locked", "database table is locked", "UNIQUE constraint failed",
                  "duplicate key value violates unique constraint")
TRANSIENT_TYPES = ("IntegrityError", "OperationalError")  # sqlalchemy's and the DB-API drivers' names

_jitter = random.Random()


def is_transient(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from or during (MLflow wraps the driver's), is a lost race: an
    integrity error, or a message saying the database was locked or a unique key was taken."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if any(t in text for t in TRANSIENT_TEXT):
            return True
        if type(exc).__name__ == "IntegrityError":
            return True
        if type(exc).__name__ in TRANSIENT_TYPES and "locked" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_store(call: Callable[..., Any], *args, attempts: int = ATTEMPTS, **kwargs) -> Any:
    """`call(*args, **kwargs)`, tried again after a lost race (`is_transient`) up to `attempts` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            time.sleep(FIRST_WAIT * 2 ** (attempt - 1) * (1 + _jitter.random()))
    raise AssertionError("unreachable")  # pragma: no cover


class RetryingClient:
    """An `MlflowClient` whose every method call goes through `retry_store`; other attributes pass through."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name: str):
        if name == "_client" or name.startswith("__"):  # not set yet (a copy being unpickled): no recursion
            raise AttributeError(name)
        value = getattr(self._client, name)
        if not callable(value):
            return value

        def retried(*args, **kwargs):
            return retry_store(value, *args, **kwargs)

        retried.__name__ = name
        return retried
