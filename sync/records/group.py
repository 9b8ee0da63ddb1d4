"""Group commit: small write steps of many threads committed together.

Every acknowledged chunk needs its row committed durably, and a durable
commit costs a flush of the log (SQLite's WAL fsync, PostgreSQL's WAL
flush) whatever it holds. One commit per chunk made that flush, under the
one writer lock, the limit of the whole server (docs/benchmarks.md). So the
request threads of a process hand their write steps to `GroupCommit.run`:
whichever thread finds no commit under way becomes the combiner, takes
every step waiting (up to `max_steps`), runs them in one transaction, each
in a savepoint of its own, and commits once; the others wait for that
commit. A step's result is returned only after the commit that holds it,
so what an acknowledgement means is unchanged; only the flush is shared.

- A step that raises is rolled back to its savepoint and its caller gets
  the exception; the other steps of the batch go on.
- A commit that fails (the disk full, the database gone) fails every step
  of the batch: each caller gets the exception, and nothing of any of them
  was kept.
- Steps run on the combiner's thread: they must use only the unit they are
  given and plain values (no request context, no thread-locals).

Nothing waits for a batch to fill: an idle server commits each step at
once, and batches grow only while a commit is under way, which is exactly
when sharing it helps.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

from . import Records, Unit

T = TypeVar("T")

_SAVEPOINT = "witness_step"


class _Pending:
    __slots__ = ("step", "value", "error", "done")

    def __init__(self, step: Callable[[Unit], Any]):
        self.step, self.value, self.error, self.done = step, None, None, False


class GroupCommit:
    """Runs write steps of many threads of one process in shared
    transactions of `records` (see the module docstring)."""

    def __init__(self, records: Records, *, max_steps: int = 64):
        self.records = records
        self.max_steps = max_steps
        self._waiting: list[_Pending] = []
        self._committing = False
        self._changed = threading.Condition(threading.Lock())
        self.commits = 0  # how many transactions committed (for tests and metrics)
        self.steps = 0  # how many steps they held

    def run(self, step: Callable[[Unit], T]) -> T:
        """Run `step(unit)` in a write transaction shared with other
        threads' steps; return its result once that transaction has
        committed, or raise what the step (or the commit) raised."""
        mine = _Pending(step)
        with self._changed:
            self._waiting.append(mine)
        while True:
            with self._changed:
                while self._committing and not mine.done:
                    self._changed.wait()
                if mine.done:
                    break
                # No commit under way and ours not done: combine what waits
                # (ours is among the first `max_steps`, or a later turn).
                self._committing = True
                batch, self._waiting = self._waiting[:self.max_steps], self._waiting[self.max_steps:]
            try:
                self._commit(batch)
            finally:
                with self._changed:
                    self._committing = False
                    self._changed.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.value

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with self.records.transaction() as unit:
                for pending in batch:
                    unit.execute(f"SAVEPOINT {_SAVEPOINT}")
                    try:
                        pending.value = pending.step(unit)
                    except Exception as exc:  # this step only: the others go on
                        unit.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                        pending.error = exc
                    unit.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            self.commits += 1
            self.steps += len(batch)
        except BaseException as exc:
            for pending in batch:
                pending.value, pending.error = None, pending.error or exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for pending in batch:
                pending.done = True
