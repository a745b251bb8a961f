"""What a deferred target acknowledged provisionally, kept until its commit.

A target whose write session is deferred (:attr:`~connector_core.adapters.WriteSession.deferred`)
answers each batch at once but holds nothing until the run's one commit. The runner cannot
record those batches before then (the state would claim what the target does not hold), and
must not keep the batches' records in memory (a first run may send hundreds of thousands).
So each batch's outcome, already sorted for the state store (id map rows, ledger rows, failed
and resolved changes, its intent and cursor: hashes, field labels and reasons, never a
record's values), is pickled to an anonymous temporary file, and read back in order once the
commit succeeded. The file is owner-only and unlinked from the start: nothing is left behind
when the process dies, and the intents written ahead of each batch say what was sent. Up to
:data:`IN_MEMORY` bytes stay in memory (most partner jobs of a group send a handful of
changes: a file each cost them more than their writes); beyond, they go to the file.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator
from typing import IO, Generic, TypeVar

T = TypeVar("T")

#: the bytes of pickled outcomes a spool keeps in memory before it moves them to its file
IN_MEMORY = 256 * 1024


class Spool(Generic[T]):
    """Items written to a temporary file in order and read back once, in the same order."""

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, item: T) -> None:
        """Append `item`."""
        if self._file is None:
            self._file = tempfile.SpooledTemporaryFile(IN_MEMORY)  # noqa: SIM115 (drain/close)
        pickle.dump(item, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self.count += 1

    def drain(self) -> Iterator[T]:
        """Every item added, oldest first; the spool is empty afterwards."""
        file, count = self._file, self.count
        self._file, self.count = None, 0
        if file is None:
            return
        with file:
            file.seek(0)
            for _ in range(count):
                yield pickle.load(file)

    def close(self) -> None:
        """Forget every item."""
        if self._file is not None:
            self._file.close()
        self._file, self.count = None, 0
