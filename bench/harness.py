"""The measured work: engines run over the same records, outputs checked identical, timed.

Every runner returns what it shared as ``[(record id, projection), ...]`` in input order, so
outputs compare with ``==``. Timings are the best of several runs (the least disturbed by
the machine), with runs of the compared engines interleaved.
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.baseline import organizers_north
from bench.peers import Peer, PeerUnavailable, Record, Shared, make_peer
from bench.recipients import load_compiled, write_family


class OutputMismatch(AssertionError):
    """Two engines shared different records or projections."""


@dataclasses.dataclass
class Timing:
    """Best wall time of ``runs`` over ``records`` records."""

    name: str
    records: int
    runs: list[float] = dataclasses.field(default_factory=list)

    @property
    def best(self) -> float:
        """The fastest run, in seconds."""
        return min(self.runs)

    @property
    def rate(self) -> float:
        """Records per second in the fastest run."""
        return self.records / self.best


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``function`` once after a full collection, with the cyclic garbage collector
    off as :mod:`timeit` does (for every engine alike), so that a collection triggered by
    the data the harness keeps alive is not billed to whichever run it happens to hit;
    return (seconds, result)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = function()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def assert_same(expected: Shared, actual: Shared, what: str) -> None:
    """Raise OutputMismatch naming the first record where ``actual`` differs."""
    if actual == expected:
        return
    got = dict(actual)
    for record_id, projection in expected:
        if got.get(record_id) != projection:
            raise OutputMismatch(
                f"{what}: record {record_id}: expected {projection}, got {got.get(record_id)}"
            )
    extra = sorted(set(got) - {record_id for record_id, _ in expected})
    raise OutputMismatch(
        f"{what}: shared {len(actual)} records, expected {len(expected)}; "
        f"unexpected ids {extra[:5]}"
    )


def run_apply(compiled: Any, records: Iterable[Record]) -> Shared:
    """Our engine's streaming API: ``compiled.apply``."""
    out: Shared = []
    append = out.append
    for record, _decision, projection in compiled.apply(records):
        if projection is not None:
            append((record["id"], projection))
    return out


def run_evaluate(compiled: Any, records: Iterable[Record]) -> Shared:
    """Our engine one record at a time: ``compiled.evaluate`` in the caller's loop."""
    out: Shared = []
    append = out.append
    evaluate = compiled.evaluate
    for record in records:
        _decision, projection = evaluate(record)
        if projection is not None:
            append((record["id"], projection))
    return out


def run_handwritten(records: Iterable[Record]) -> Shared:
    """The hand-written function, in the same loop as :func:`run_evaluate`."""
    out: Shared = []
    append = out.append
    decide = organizers_north
    for record in records:
        projection = decide(record)
        if projection is not None:
            append((record["id"], projection))
    return out


def throughput(records: Sequence[Record], repeats: int) -> dict[str, Timing]:
    """Our engine (both APIs) and the hand-written function, interleaved, outputs checked."""
    compiled = load_compiled()
    runners: dict[str, Callable[[], Shared]] = {
        "compiled.apply": lambda: run_apply(compiled, records),
        "compiled.evaluate": lambda: run_evaluate(compiled, records),
        "hand-written": lambda: run_handwritten(records),
    }
    timings = {name: Timing(name, len(records)) for name in runners}
    reference: Shared | None = None
    for _ in range(repeats):
        for name, runner in runners.items():
            seconds, shared = timed(runner)
            timings[name].runs.append(seconds)
            if reference is None:
                reference = shared
            assert_same(reference, shared, name)
            del shared
    return timings


@dataclasses.dataclass
class PeerResult:
    """One peer's timing, or why it could not be measured."""

    name: str
    description: str
    timing: Timing | None = None
    startup: float | None = None
    error: str | None = None


def measure_peer(
    name: str, records: Sequence[Record], reference: Shared, repeats: int, *, strict: bool
) -> PeerResult:
    """Start one peer, check its output against ``reference``, time it, stop it."""
    peer = make_peer(name)
    result = PeerResult(name, peer.description)
    try:
        result.startup, _ = timed(peer.start)
    except PeerUnavailable as err:
        peer.close()
        if strict:
            raise
        result.error = str(err)
        return result
    try:
        _time_peer(peer, records, reference, repeats, result)
    finally:
        peer.close()
    return result


def _time_peer(
    peer: Peer, records: Sequence[Record], reference: Shared, repeats: int, result: PeerResult
) -> None:
    peer.run(records[:200])  # warm up: connections, caches, prepared queries
    result.timing = Timing(peer.name, len(records))
    for _ in range(repeats):
        seconds, shared = timed(lambda: peer.run(records))
        assert_same(reference, shared, peer.name)
        result.timing.runs.append(seconds)


def measure_peers(
    names: Sequence[str], records: Sequence[Record], repeats: int, *, strict: bool
) -> list[PeerResult]:
    """Every named peer over ``records``, each checked against our engine's output."""
    reference = run_apply(load_compiled(), records)
    assert_same(reference, run_handwritten(records), "hand-written")
    return [measure_peer(n, records, reference, repeats, strict=strict) for n in names]


@dataclasses.dataclass
class FanoutResult:
    """One policy vs a PolicySet of ``policies`` recipients, over the same records."""

    policies: int
    compile_seconds: float
    one_policy: Timing
    policy_set: Timing
    naive: Timing
    shares: int

    @property
    def ratio(self) -> float:
        """PolicySet time over one policy's time (the target is at most 5)."""
        return self.policy_set.best / self.one_policy.best


def run_policy_set(policy_set: Any, records: Iterable[Record]) -> list[tuple[str, str, Record]]:
    """``PolicySet.shared`` over every record: (record id, policy name, projection)."""
    out: list[tuple[str, str, Record]] = []
    append = out.append
    shared = policy_set.shared
    for record in records:
        for compiled, projection in shared(record):
            append((record["id"], compiled.name, projection))
    return out


def run_naive(policies: Sequence[Any], records: Iterable[Record]) -> list[tuple[str, str, Record]]:
    """Every policy's ``evaluate`` on every record: what the PolicySet must equal."""
    out: list[tuple[str, str, Record]] = []
    for record in records:
        for compiled in policies:
            _decision, projection = compiled.evaluate(record)
            if projection is not None:
                out.append((record["id"], compiled.name, projection))
    return out


def fanout(records: Sequence[Record], count: int, repeats: int, naive_records: int) -> FanoutResult:
    """Time ``count`` recipients through PolicySet.shared against policy (a) alone."""
    from connector_core.policy.fanout import PolicySet

    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        compile_seconds, policies = timed(
            lambda: [load_compiled(p) for p in write_family(Path(tmp), count)]
        )
    policy_set = PolicySet(policies)
    sample = records[:naive_records]
    naive_seconds, expected = timed(lambda: run_naive(policies, sample))
    if run_policy_set(policy_set, sample) != expected:
        raise OutputMismatch(f"PolicySet of {count} differs from evaluating every policy")
    one = Timing("one policy (compiled.apply)", len(records))
    many = Timing(f"PolicySet.shared, {count} policies", len(records))
    shares = 0
    for _ in range(repeats):
        one.runs.append(timed(lambda: run_apply(policies[0], records))[0])
        seconds, out = timed(lambda: run_policy_set(policy_set, records))
        many.runs.append(seconds)
        shares = len(out)
        del out  # so that the next runs start from the same heap
    naive = Timing(f"every policy's evaluate, {count} policies", len(sample), [naive_seconds])
    return FanoutResult(count, compile_seconds, one, many, naive, shares)
