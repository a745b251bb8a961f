"""Blocks of rows a job decided at its cursor (:class:`~connector_core.adapters.KnownBlocks`).

A ``row_fingerprints`` source may cut its rows into blocks (:attr:`Page.blocks`); the
engine keeps each block's digest with the ids and fingerprints of its rows, in the state
store with the cursor. The next read names the blocks it found whole and unchanged
(:attr:`Page.unchanged`) instead of listing their rows: their ids count as seen (for
missing-row detection), and the blocks stay kept. What a read found changed is split and
fingerprinted row by row, as before.
"""

from __future__ import annotations

import array
import collections
import itertools
from collections.abc import Callable, Collection, Container, Iterable

from connector_core.adapters import PART_DIGEST, Block, KnownBlocks, Page
from connector_core.sync.state import SavedBlocks, StateStore, StateStoreError, split_ids

__all__ = ["BlockKeeper", "StoredBlocks"]

#: At most this many blocks' parts are read by their digests (else all, in one scan).
_FEW = 1000


class StoredBlocks(KnownBlocks):
    """A job's blocks at its cursor, loaded from the state store on first use.

    Blocks holding an id the read must decode (``decode``: outstanding changes, held
    approval sets) are left out, so that their rows are split and decoded."""

    def __init__(self, store: StateStore, job: str, decode: Container[str]) -> None:
        self._store = store
        self._job = job
        self._decode = decode
        self._digests: set[bytes] | None = None
        self._ids: tuple[frozenset[bytes], list[str]] | None = None

    def _held(self) -> set[bytes]:
        if self._digests is None:
            if isinstance(self._decode, Collection) and not len(self._decode):
                self._digests = self._store.block_digests(self._job)
            else:
                decode = self._decode
                self._digests = {
                    digest
                    for digest, ids in self._store.block_ids(self._job).items()
                    if not any(sid in decode for sid in split_ids(ids))
                }
        return self._digests

    def __contains__(self, digest: object) -> bool:
        return digest in self._held()

    def ids(self, digests: Collection[bytes]) -> list[str]:
        """The ids of the blocks `digests`, as a list (a set of a million ids costs more
        than its few lookups); the last answer is kept (the adapter and the runner both ask
        for those of the read's unchanged blocks)."""
        key = frozenset(digests)
        if self._ids is None or self._ids[0] != key:
            found = self._store.block_ids(self._job, key)
            if len(found) != len(key):
                raise _lost(self._job)
            joined = found.values()
            self._ids = (key, split_ids(b"\n".join(j for j in joined if j)))
        return self._ids[1]

    def rows(self, unchanged: Collection[bytes]) -> Collection[int]:
        skip = frozenset(unchanged)
        others = [d for d in self._store.block_digests(self._job) if d not in skip]
        return frozenset(self._store.block_fingerprints(self._job, others))

    def parts(self, unchanged: Collection[bytes] = ()) -> dict[bytes, tuple[bytes, int]]:
        """The parts of the held blocks that have them, but the blocks `unchanged` (a part
        that two of them hold, or one twice, is left out: it names no one run of rows)."""
        held = self._held().difference(unchanged)
        found: dict[bytes, tuple[bytes, int]] = {}
        names: list[bytes] = []
        size = PART_DIGEST
        few = len(held) <= _FEW  # after a few changed rows: only those blocks' parts read
        for digest, blob in self._store.block_parts(self._job, held if few else None).items():
            if digest in held:
                these = [blob[at : at + size] for at in range(0, len(blob), size)]
                names += these
                places = zip(itertools.repeat(digest), range(len(these)))
                found.update(zip(these, places, strict=True))
        if len(found) != len(names):  # a part found twice: dropped wherever it is
            for part, times in collections.Counter(names).items():
                if times > 1:
                    del found[part]
        return found

    def block_rows(
        self, digests: Collection[bytes]
    ) -> dict[bytes, tuple[list[str], array.array[int]]]:
        found = self._store.block_rows(self._job, digests)
        if len(found) != len(set(digests)):
            raise _lost(self._job)
        return found


def _lost(name: str) -> StateStoreError:
    """A block held at the start of a read is gone from the store: its rows cannot be
    listed, and a row not listed would count as gone from the source. (A shared read's
    blocks are another task's to forget once that task's jobs moved on: see
    :meth:`StateStore.prune_fingerprints`.)"""
    return StateStoreError(
        f"the blocks of rows kept under {name!r} changed while the source was read",
        hint="Run again: the next read starts from what the state store holds then.",
    )


class BlockKeeper:
    """What a read leaves to keep with its last cursor: the fingerprints of rows in no block
    (``loose``) and the blocks (``saved``), but rows the policy could not decide."""

    def __init__(self) -> None:
        self.loose: array.array[int] = array.array("Q")
        self.saved = SavedBlocks()
        self.rejected: set[str] = set()  # this run's, over all pages
        self._digests: set[bytes] = set()

    def keep(self, page: Page, rejected: Iterable[str], ids: Callable[[], int] | None) -> int:
        """Keep the page's fingerprints and blocks; returns how many rows its unchanged
        blocks hold (`ids` counts them), 0 without any."""
        self.rejected.update(rejected)
        refused = self.rejected
        if page.fingerprints:
            self.loose.extend(fp for sid, fp in page.fingerprints.items() if sid not in refused)
        for block in page.blocks:
            self.block(block)
        if not page.unchanged:
            return 0
        self.unchanged(page.unchanged)
        return ids() if ids is not None else 0

    def block(self, block: Block) -> None:
        """Keep a new block whole, or its rows' fingerprints but those of rows rejected when
        one of its rows is (decoded again next time), an id holds a newline (ids are kept
        joined by newlines) or the block was kept already (found twice)."""
        refused = self.rejected
        clean = block.digest not in self._digests and not any(
            sid in refused or "\n" in sid for sid in block.ids
        )
        if clean:
            self._digests.add(block.digest)
            self.saved.add(block.digest, block.ids, block.fingerprints, block.parts)
        else:
            keep = zip(block.ids, block.fingerprints, strict=True)
            self.loose.extend(fp for sid, fp in keep if sid not in refused)

    def unchanged(self, digests: Iterable[bytes]) -> None:
        """Keep the blocks `digests` found unchanged (their stored rows stay)."""
        digests = list(digests)
        self.saved.kept.extend(digests)
        self._digests.update(digests)
