"""Batching a run's changes, and holding each read cursor back until what it covers is recorded.

A cursor says "everything up to here is done". A page's cursor may therefore be stored only
with (or after) the batch that records the last change of that page; changes of later pages
may already be in the same batch, which is harmless, since a re-read replans them from the
id map and finds them unchanged.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence

from connector_core.sync.planner import Step

#: Writes one batch to the target and records it; the cursor (None: keep) goes with it.
WriteBatch = Callable[[Sequence[Step], str | None], None]


class Batches:
    """Steps waiting for the target, and the cursors waiting for them to be recorded.

    Args:
        write: writes and records one batch, storing the cursor given (None: keep it).
        size: steps per batch.
        saved: the cursor the state holds now (not stored again).
    """

    def __init__(self, write: WriteBatch, size: int, saved: str | None = None) -> None:
        self.write = write
        self.size = size
        self.saved = saved
        self.pending: list[Step] = []
        self.marks: collections.deque[tuple[int, str]] = collections.deque()
        self.enqueued = 0  # steps ever added
        self.done = 0  # steps written and recorded
        self.blocked = False  # steps were set aside: store no cursor before finish

    def add(self, steps: Sequence[Step]) -> None:
        """Queue steps; write every full batch."""
        self.pending.extend(steps)
        self.enqueued += len(steps)
        while len(self.pending) >= self.size:
            self._flush()

    def mark(self, cursor: str) -> None:
        """`cursor` may be stored once every step queued so far is recorded.

        A cursor covered by the same steps as the mark before it replaces that mark (the
        later cursor is the one stored): a job of a group with nothing to write in most of
        the pages of a long read keeps one mark, not one per page."""
        if self.marks and self.marks[-1][0] == self.enqueued:
            self.marks[-1] = (self.enqueued, cursor)
        else:
            self.marks.append((self.enqueued, cursor))

    def block(self) -> None:
        """Store no cursor until :meth:`unblock`: steps were set aside to be added later,
        and a cursor stored before them would let a killed run forget them."""
        self.blocked = True

    def unblock(self) -> None:
        """The steps set aside are queued (or kept in the state): cursors may be stored."""
        self.blocked = False

    def finish(self, cursor: str | None) -> None:
        """Write what is left, storing `cursor` (the read's last, if any) with the last batch."""
        if cursor is not None:
            self.mark(cursor)
        while self.pending:
            self._flush()
        last = self._cursor_for(self.done)
        if last is not None:  # nothing left to write, but a cursor to store
            self.write([], last)

    def close(self) -> None:
        """Drop the writer: the run is done and writes nothing more. (A run's own method,
        it makes a cycle run -> batches -> run that only the cyclic collector would free.)"""
        self.write = _closed

    def _flush(self) -> None:
        batch, self.pending = self.pending[: self.size], self.pending[self.size :]
        self.write(batch, self._cursor_for(self.done + len(batch)))
        self.done += len(batch)

    def _cursor_for(self, position: int) -> str | None:
        """The latest new cursor covered once the first `position` steps are recorded."""
        cursor = None
        while not self.blocked and self.marks and self.marks[0][0] <= position:
            cursor = self.marks.popleft()[1]
        if cursor is None or cursor == self.saved:
            return None
        self.saved = cursor
        return cursor


def _closed(steps: Sequence[Step], cursor: str | None) -> None:
    raise RuntimeError("a finished run's batches were written")
