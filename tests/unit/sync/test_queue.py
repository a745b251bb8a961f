"""The pure parts of worker mode (connector_core.sync.queue): task groups, backoff, which
failures are retried, idempotent tasks, the queue settings and what status reads from a
message. Real workers and a real broker: tests/integration/test_workers.py."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_core.config import QueueConfig, load_config
from connector_core.credentials import KeyringSecrets, SecretRef
from connector_core.errors import (
    AdapterUnavailable,
    AuthenticationFailed,
    ConfigError,
    ConnectorError,
    PolicyError,
)
from connector_core.sync import queue
from connector_core.sync.database import StateStoreError
from connector_core.sync.locks import JobLocked, LockLost, TargetLocked
from connector_core.sync.model import JobState
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
SETTINGS = queue.QueueSettings(url="redis://x/0", shown="redis://x/0", retry_backoff=2)


def test_jobs_sharing_a_source_share_a_task_up_to_the_limit() -> None:
    jobs = {"a1": "a", "b1": "b", "a2": "a", "a3": "a", "b2": "b", "c1": "c"}
    assert queue.task_groups(jobs, 2) == [["a1", "a2"], ["b1", "b2"], ["a3"], ["c1"]]
    assert queue.task_groups(jobs, 32) == [["a1", "a2", "a3"], ["b1", "b2"], ["c1"]]
    assert queue.task_groups({}, 5) == []


@given(count=st.integers(0, 3000), limit=st.integers(1, 300), other=st.integers(0, 40))
def test_tasks_are_as_few_and_as_even_as_the_limit_allows(
    count: int, limit: int, other: int
) -> None:
    """However many jobs a source has: the fewest tasks of at most `limit` jobs, their sizes
    at most one apart (257 jobs at 256 a task: 129 + 128, not 256 + 1), in order."""
    jobs = {f"a{i}": "a" for i in range(count)} | {f"b{i}": "b" for i in range(other)}
    tasks = queue.task_groups(jobs, limit)
    for source, n in (("a", count), ("b", other)):
        sizes = [len(t) for t in tasks if t[0].startswith(source)]
        assert len(sizes) == -(-n // limit)
        assert all(size <= limit for size in sizes)
        assert not sizes or max(sizes) - min(sizes) <= 1
    assert sorted(j for t in tasks for j in t) == sorted(jobs)
    assert [j for t in tasks for j in t if j[0] == "a"] == [j for j in jobs if j[0] == "a"]


def test_15000_partner_jobs_spread_over_bounded_tasks() -> None:
    jobs = {f"partners.p{i}": "national" for i in range(15_000)}
    tasks = queue.task_groups(jobs, 32)
    assert len(tasks) == 469
    assert max(len(t) for t in tasks) == 32
    assert [j for t in tasks for j in t] == list(jobs)


def test_backoff_doubles_up_to_the_cap() -> None:
    settings = dataclasses.replace(SETTINGS, retry_backoff=30, backoff_max=100)
    assert [queue.backoff(n, settings) for n in range(4)] == [30, 60, 100, 100]
    assert queue.backoff(500, settings) == 100  # no overflow


@pytest.mark.parametrize(
    ("err", "transient"),
    [
        (JobLocked("j", None), True),
        (TargetLocked("t", "other", None), True),
        (LockLost("job 'j'", None), True),
        (AdapterUnavailable("crm: no answer"), True),
        (AuthenticationFailed("crm: 401"), False),
        (ConfigError("connector.yaml:3: bad"), False),
        (PolicyError("p.yaml:1: bad"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_only_passing_failures_are_retried(err: ConnectorError, transient: bool) -> None:
    assert queue.is_transient(err) is transient


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[StateStore]:
    opened = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", ledger_key=TEST_LEDGER_KEY)
    yield opened
    opened.close()


@dataclasses.dataclass
class FakeRunner:
    """Runs nothing: answers each job with the error given (None: it ran), and notes the
    run in the store as a finished run would."""

    opened: StateStore
    errors: dict[str, ConnectorError | None]
    asked: list[list[str]] = dataclasses.field(default_factory=list)
    now: dt.datetime = T0

    @contextlib.contextmanager
    def store(self) -> Iterator[StateStore]:
        yield self.opened

    def run(self, store: StateStore, jobs: Sequence[str]) -> dict[str, ConnectorError | None]:
        self.asked.append(list(jobs))
        for name in jobs:
            if self.errors.get(name) is None:
                store.set_job_state(JobState(name, last_run_at=self.now, last_success_at=self.now))
        return {name: self.errors.get(name) for name in jobs}


def test_a_task_runs_its_jobs_once_then_does_nothing(sqlite_store: StateStore) -> None:
    runner = FakeRunner(sqlite_store, {})
    asked = [("a", T0 - dt.timedelta(seconds=1)), ("b", T0 - dt.timedelta(seconds=1))]
    first = queue.run_task(runner, asked)
    assert (first.ran, first.skipped, first.retry, first.failed) == (["a", "b"], [], [], {})
    again = queue.run_task(runner, asked)  # redelivered
    assert (again.ran, again.skipped) == ([], ["a", "b"])
    assert runner.asked == [["a", "b"]]
    later = queue.run_task(runner, [("a", T0 + dt.timedelta(seconds=1))])  # asked again
    assert later.ran == ["a"]


def test_a_failing_job_fails_alone_and_a_passing_failure_is_retried(
    sqlite_store: StateStore,
) -> None:
    since = T0 - dt.timedelta(seconds=5)
    errors: dict[str, ConnectorError | None] = {
        "broken": PolicyError("p.yaml:3: no such field"),
        "down": AdapterUnavailable("crm: 503"),
        "busy": JobLocked("busy", "pid 1 on host h"),
    }
    runner = FakeRunner(sqlite_store, errors)
    out = queue.run_task(runner, [(n, since) for n in ("ok", "broken", "down", "busy")])
    assert out.ran == ["ok"]
    assert out.failed == {"broken": "p.yaml:3: no such field"}
    assert out.retry == [("down", since), ("busy", since)]


class BrokenStore(FakeRunner):
    @contextlib.contextmanager
    def store(self) -> Iterator[StateStore]:
        raise StateStoreError("the state store at postgresql://db/x failed: gone")
        yield self.opened


def test_a_state_store_down_retries_every_job(sqlite_store: StateStore) -> None:
    out = queue.run_task(BrokenStore(sqlite_store, {}), [("a", T0), ("b", T0)])
    assert out.retry == [("a", T0), ("b", T0)]
    assert (out.ran, out.failed) == ([], {})


def test_a_run_that_stopped_does_not_count_as_done(sqlite_store: StateStore) -> None:
    sqlite_store.set_job_state(JobState("j", last_run_at=T0, last_success_at=T0 - dt.timedelta(1)))
    assert not queue.ran_since(sqlite_store, "j", T0 - dt.timedelta(seconds=1))
    assert queue.ran_since(sqlite_store, "j", T0 - dt.timedelta(days=1))
    assert not queue.ran_since(sqlite_store, "never", T0)


def test_broker_credentials_come_from_the_keyring_or_the_environment() -> None:
    block = QueueConfig(
        broker="amqp://rabbit.example.org:5672/connector",
        username={"env": "BROKER_USER"},  # type: ignore[arg-type]
        password=SecretRef(env="BROKER_PASSWORD"),
    )
    secrets = KeyringSecrets(
        "net", "network", {"BROKER_USER": "connector user", "BROKER_PASSWORD": "p@ss/word:1234"}
    )
    url = queue.broker_url(block, secrets)
    assert url == "amqp://connector%20user:p%40ss%2Fword%3A1234@rabbit.example.org:5672/connector"
    plain = QueueConfig(broker="redis://127.0.0.1:6379/3")
    assert queue.broker_url(plain, secrets) == "redis://127.0.0.1:6379/3"
    settings = queue.QueueSettings(url=url, shown=block.broker)
    assert "p@ss" not in repr(settings)


@pytest.mark.parametrize(
    ("broker", "says"),
    [
        ("redis://user:pw@127.0.0.1:6379/0", "must not hold a user name, password"),
        ("redis://127.0.0.1:6379/0?password=x", "must not hold a user name, password"),
        ("http://127.0.0.1:6379/0", "must be a redis://"),
        ("localhost:6379", "must be a redis://"),
    ],
)
def test_a_broker_url_is_checked(broker: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        QueueConfig(broker=broker)


def test_the_report_says_queued_running_and_drained() -> None:
    report = queue.QueueReport(queued={"a": 1}, reserved={"b": 1}, active={"c": "w1"})
    assert [report.state(j) for j in "abcd"] == ["queued", "queued", "running", None]
    assert not report.drained
    assert queue.QueueReport().drained
    assert not queue.QueueReport(unacked=1).drained


class FakeRedis:
    """The two Redis reads `connector status` makes of a kombu queue."""

    def __init__(self, waiting: list[list[str]], taken: list[tuple[list[str], str]]) -> None:
        self.waiting = [json.dumps({"headers": {queue.JOBS_HEADER: j}}) for j in waiting]
        self.taken = [json.dumps([{"headers": {queue.JOBS_HEADER: j}}, "", q]) for j, q in taken]

    def lrange(self, name: str, start: int, end: int) -> list[str]:
        return self.waiting

    def hvals(self, name: str) -> list[str]:
        return self.taken


def test_queued_jobs_are_read_from_the_messages_headers() -> None:
    client = FakeRedis([["a", "b"], ["a"]], [(["c"], "connector"), (["z"], "other-network")])
    counts, unacked = queue._redis_jobs(client, "connector")
    assert counts == {"a": 2, "b": 1, "c": 1}
    assert unacked == 1
    task = {"args": [[["a", T0.isoformat()], ["b", T0.isoformat()]]]}
    assert queue._task_jobs(task) == ["a", "b"]
    assert queue._task_jobs({"args": []}) == []


def test_a_dead_worker_s_task_is_looked_for_often_enough() -> None:
    quick = dataclasses.replace(SETTINGS, visibility_timeout=2)
    assert queue.transport_options(quick) == {
        "visibility_timeout": 2,
        "unacked_restore_interval": 1.0,
        "unacked_restore_throttle": 1,
    }
    assert queue.transport_options(SETTINGS)["unacked_restore_interval"] == 60


def test_a_password_in_the_queue_block_is_refused_with_its_line_and_never_shown(
    tmp_path: Path,
) -> None:
    from tests.unit.test_config import ADAPTERS, VALID, write

    text = VALID + (
        "queue:\n  broker: redis://user:hunter2-secret@127.0.0.1:6379/0\n"
        "  password: hunter3-secret\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), ADAPTERS)
    message = str(caught.value)
    assert "queue.broker: must not hold a user name, password" in message
    assert "queue.password: secrets never live in connector.yaml" in message
    assert "hunter" not in message
    lines = len(VALID.splitlines())
    assert f"connector.yaml:{lines + 2}:" in message
    assert f"connector.yaml:{lines + 3}:" in message


def test_settings_need_a_queue_block(tmp_path: Path) -> None:
    from tests.unit.test_config import ADAPTERS, VALID, write

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "north.yaml").write_text("rules: []\n")
    config = load_config(write(tmp_path, VALID), ADAPTERS)
    with pytest.raises(ConfigError, match="there is no `queue:` block"):
        queue.settings_for(config)
    config = load_config(
        write(tmp_path, VALID + "queue:\n  broker: redis://127.0.0.1:6379/4\n  queue: n1\n"),
        ADAPTERS,
    )
    settings = queue.settings_for(config)
    assert (settings.url, settings.queue, settings.group_limit) == (
        "redis://127.0.0.1:6379/4",
        "n1",
        32,
    )


def test_a_task_may_hold_more_jobs_than_a_group(tmp_path: Path) -> None:
    """group_limit is bounded by what a task's one read serves (its groups of 256 hold
    their locks in turn), not by a group: 1,875 is taken, 100,001 is refused with its line."""
    from tests.unit.test_config import ADAPTERS, VALID, write

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "north.yaml").write_text("rules: []\n")
    block = "queue:\n  broker: redis://127.0.0.1:6379/4\n  group_limit: %d\n"
    config = load_config(write(tmp_path, VALID + block % 1875), ADAPTERS)
    assert queue.settings_for(config).group_limit == 1875
    assert [
        len(t) for t in queue.task_groups(dict.fromkeys(map(str, range(15000)), "m"), 1875)
    ] == [1875] * 8
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, VALID + block % 100_001), ADAPTERS)
    lines = len(VALID.splitlines())
    assert f"connector.yaml:{lines + 3}:" in str(caught.value)
    assert "queue.group_limit" in str(caught.value)
