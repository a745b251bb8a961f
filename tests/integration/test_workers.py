"""Worker mode with its real parts: `connector worker` processes started by the tests, the
machine's Redis (or a private redis-server the test restarts) as broker, and the machine's
PostgreSQL as the state store all workers share.

Each test ends in the state a single-process `connector run --all` reaches on a twin of
the network (the same key secret, so the same target keys): the same target files and the
same id map. A missing Redis or PostgreSQL fails, never skips. Small data, a short
visibility timeout and retry backoff keep the whole file well under a minute and a half.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from connector_core.sync import queue
from connector_core.sync.state import StateStore
from tests.brokers import PrivateRedis, machine_redis
from tests.integration.test_cli import run
from tests.postgres import _admin, new_schema

ENV = {
    "CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests",
    "CONNECTOR_SECRET_NETWORK_LEDGER_KEY": "ledger-key-for-the-worker-tests",
    "CONNECTOR_TEST_KEY_SECRET": "key-secret-shared-by-both-twins",
}
JOBS = ("organizers-north", "partner-housing")

#: `connector worker` in a fresh interpreter; with CONNECTOR_TEST_SLOW_WRITE=S each batch
#: written to a CSV target first waits S seconds, so that a test can kill a worker mid-job.
WORKER = textwrap.dedent(
    """
    import os, sys, time
    slow = float(os.environ.get("CONNECTOR_TEST_SLOW_WRITE") or 0)
    if slow:
        from connector_csv.session import CsvWrites
        original = CsvWrites.write
        def write(self, changes):
            time.sleep(slow)
            return original(self, changes)
        CsvWrites.write = write
    from connector_core.cli import main
    main(sys.argv[1:])
    """
)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[dict[str, str]]:
    """The machine's PostgreSQL (fails when unreachable): a database for the queued
    networks and one for their single-process twin (advisory locks, which name jobs, are
    per database: the twin must not share them)."""
    server = _admin("postgres")
    try:
        with server.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {server.url} ({exc.orig}); workers need it")
    names = {kind: f"connector_workers_{secrets.token_hex(4)}" for kind in ("queued", "single")}
    with server.connect() as conn:
        for name in names.values():
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield {
        kind: server.url.set(database=name).render_as_string(hide_password=False)
        for kind, name in names.items()
    }
    with server.connect() as conn:
        for name in names.values():
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


def pg_schema(database_url: str) -> str:
    """A fresh schema in the module's database, as a state store URL."""
    return new_schema(database_url, "w")[1]


class Network:
    """A copy of the demo network on PostgreSQL, with a queue on `broker`."""

    def __init__(self, folder: Path, state_url: str, broker: str | None, **queue: Any) -> None:
        self.folder = folder
        self.config = folder / "connector.yaml"
        self.state_url = state_url
        doc = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        doc["state"] = {"url": state_url}
        doc["network"]["key_secret"] = {"env": "CONNECTOR_TEST_KEY_SECRET"}
        for job in doc["jobs"].values():
            job["options"] = {"batch_size": 2}
        if broker is not None:
            doc["queue"] = {
                "broker": broker,
                "queue": f"test-{secrets.token_hex(4)}",
                "visibility_timeout": 2,
                "retry_backoff": 0.5,
                "backoff_max": 2,
                "max_retries": 3,
                **queue,
            }
        self.doc = doc
        self.save()
        self.workers: list[Worker] = []

    def save(self) -> None:
        self.config.write_text(yaml.safe_dump(self.doc, sort_keys=False), encoding="utf-8")

    def connector(self, runner: CliRunner, *args: str) -> Any:
        return run(runner, "--config", str(self.config), *args, cwd=self.folder, env=ENV)

    def worker(self, *, slow: float = 0) -> Worker:
        """Start a worker (call its ready() before counting on it)."""
        started = Worker(self, len(self.workers), slow)
        self.workers.append(started)
        return started

    def settings(self) -> queue.QueueSettings:
        return queue.QueueSettings(
            url=self.doc["queue"]["broker"],
            shown=self.doc["queue"]["broker"],
            queue=self.doc["queue"]["queue"],
            visibility_timeout=2,
        )

    def drain(self, timeout: float = 40) -> None:
        assert queue.wait_drained(self.settings(), timeout, poll=0.3), self.logs()

    def logs(self) -> str:
        return "\n".join(w.log() for w in self.workers)

    def outcome(self) -> dict[str, Any]:
        """What the targets hold (rows, any order) and each job's id map."""
        files = {
            p.name: sorted(p.read_text(encoding="utf-8").splitlines())
            for p in sorted((self.folder / "out").glob("*.csv"))
        }
        store = StateStore.open(self.state_url)
        try:
            mapped = {
                job: {  # (projection hashes are keyed by each store's own secret)
                    sid: m.target_key
                    for sid, m in store.mapped(job, list(store.source_ids(job))).items()
                }
                for job in JOBS
            }
            runs = {job: [r["status"] for r in store.runs(job)] for job in JOBS}
        finally:
            store.close()
        return {"files": files, "mapped": mapped, "runs": runs}


class Worker:
    """A `connector worker` process (in a session of its own, so it dies with its pool)."""

    def __init__(self, network: Network, n: int, slow: float) -> None:
        self.path = network.folder / f"worker-{n}.log"
        env = {**os.environ, **ENV, "CONNECTOR_TEST_SLOW_WRITE": str(slow)}
        args = ["--config", str(network.config), "-v", "worker", "-c", "1", "-n", f"test-{n}@%h"]
        with self.path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", WORKER, *args],
                cwd=network.folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> Worker:
        """Wait until the worker takes tasks."""
        deadline = time.monotonic() + 30
        while b" ready." not in self.path.read_bytes():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)
        return self

    def log(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)


@pytest.fixture
def make_network(demo: Path, tmp_path: Path, pg_server: dict[str, str]) -> Iterator[Any]:
    """Make a network `name` (``single`` for the twin) in a folder of its own."""
    made: list[Network] = []

    def make(name: str, broker: str | None, **queue: Any) -> Network:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "data").symlink_to(demo / "data")
        (folder / "out").mkdir()
        text = (demo / "connector.yaml").read_text(encoding="utf-8")
        (folder / "connector.yaml").write_text(
            text.replace("../../policies/", str(demo.parent.parent / "policies") + "/"),
            encoding="utf-8",
        )
        database = pg_server["single" if name == "single" else "queued"]
        made.append(Network(folder, pg_schema(database), broker, **queue))
        return made[-1]

    yield make
    for network in made:
        for worker in network.workers:
            worker.kill()


_REFERENCE: dict[str, Any] = {}


def reference(make_network: Any, runner: CliRunner) -> dict[str, Any]:
    """The end state of a single-process `connector run --all` on a twin network (made
    once: it does not depend on where the twin lives)."""
    if not _REFERENCE:
        twin = make_network("single", None)
        result = twin.connector(runner, "run", "--all")
        assert result.exit_code == 0, result.output
        _REFERENCE.update(twin.outcome())
    return _REFERENCE


def wait_for_running(network: Network, timeout: float = 20) -> None:
    """Until a run is under way: a run row says running, a batch is being written."""
    engine = sa.create_engine(network.state_url, poolclass=sa.NullPool)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                running = conn.execute(
                    sa.text("SELECT count(*) FROM runs WHERE status = 'running'")
                ).scalar_one()
                # a batch is in the intent log before it is written (a CSV target's
                # batches are recorded together when its file is committed)
                sent = conn.execute(sa.text("SELECT count(*) FROM intents")).scalar_one()
            if running and sent:
                return
            time.sleep(0.05)
    finally:
        engine.dispose()
    pytest.fail("no run started: " + network.logs())


def lock_holders(network: Network) -> set[int]:
    """The worker processes (the parents of the pool processes) holding a job's lock: the
    lock connections name their process (locks.py), and /proc names its parent."""
    engine = sa.create_engine(network.state_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        names = conn.execute(
            sa.text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND a.datname = current_database()"
            )
        ).scalars()
        pids = {int(n.split()[1].split("@")[0]) for n in names if n.startswith("connector ")}
    engine.dispose()
    parents = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):  # a process that ended meanwhile
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
            parents.add(int(stat.rsplit(")", 1)[1].split()[1]))
    return parents


def test_a_worker_killed_mid_job_leaves_it_to_another(make_network: Any, runner: CliRunner) -> None:
    network = make_network("queued", machine_redis())
    workers = [network.worker(slow=0.5), network.worker(slow=0.5)]
    expected = reference(make_network, runner)  # meanwhile the workers start
    for worker in workers:
        worker.ready()
    queued = network.connector(runner, "run", "--all", "--queue")
    assert queued.exit_code == 0, queued.output
    assert "queued 2 job(s) in 1 task(s)" in queued.stderr
    wait_for_running(network)
    out = network.connector(runner, "status", "--json")
    status = json.loads(out.stdout)
    assert {entry["state"] for entry in status} == {"running"}, out.output  # one task, both
    assert all(entry["worker"].startswith("test-") for entry in status)
    (doomed,) = [w for w in workers if w.proc.pid in lock_holders(network)]
    doomed.kill(signal.SIGKILL)  # the other takes the task after the visibility timeout
    network.drain()
    got = network.outcome()
    assert got["files"] == expected["files"]
    assert got["mapped"] == expected["mapped"]
    # the killed run shows as killed or stopped; the job ran to its end once afterwards
    for job in JOBS:
        assert got["runs"][job][0] == "ok", network.logs()
        assert got["runs"][job].count("ok") == 1
    verify = network.connector(runner, "ledger", "verify")
    assert verify.exit_code == 0, verify.output


def test_the_broker_restarted_mid_run(make_network: Any, runner: CliRunner, tmp_path: Path) -> None:
    broker = PrivateRedis(tmp_path / "redis")
    broker.start()
    try:
        network = make_network("queued", broker.url, group_limit=1)  # two tasks
        started = network.worker(slow=0.3)
        expected = reference(make_network, runner)
        started.ready()
        queued = network.connector(runner, "run", "--all", "--queue")
        assert queued.exit_code == 0, queued.output
        assert "in 2 task(s)" in queued.stderr
        wait_for_running(network)
        broker.stop()
        time.sleep(1)
        broker.start()
        network.drain(timeout=45)
    finally:
        broker.stop()
    got = network.outcome()
    assert got["files"] == expected["files"]
    assert got["mapped"] == expected["mapped"]
    assert all("ok" in got["runs"][job] for job in JOBS), network.logs()


def test_a_failing_job_fails_at_once_and_holds_up_no_other(
    make_network: Any, runner: CliRunner
) -> None:
    """A broken job fails at once, a locked one is retried; the others run. Also: status
    shows what is queued at the broker, and a job queued twice runs once."""
    network = make_network("queued", machine_redis())
    broken = network.folder / "broken.yaml"
    housing = network.folder.parent / "policies" / "partner-housing.yaml"
    policy = yaml.safe_load(housing.read_text(encoding="utf-8"))
    policy["fields"]["shoe_size"] = "show"  # no such field: a policy error
    broken.write_text(yaml.safe_dump(policy), encoding="utf-8")
    network.doc["connections"]["partner-broken"] = {
        "adapter": "csv",
        "settings": {"path": "out/broken.csv"},
    }
    network.doc["jobs"]["broken"] = {
        "source": "members",
        "target": "partner-broken",
        "policy": str(broken),
    }
    network.save()
    queued = network.connector(runner, "run", "--all", "--queue")
    assert queued.exit_code == 0, queued.output
    assert "queued 3 job(s) in 1 task(s)" in queued.stderr  # one read for the three
    assert network.connector(runner, "run", "partner-housing", "--queue").exit_code == 0
    status = network.connector(runner, "status", "--json")
    states = {entry["job"]: entry["state"] for entry in json.loads(status.stdout)}
    assert set(states.values()) == {"queued"}
    text = network.connector(runner, "status").stdout
    assert "partner-housing: never run, queued, 0 change(s) outstanding" in text
    assert "3 job(s): 3 queued, 0 running, 0 failed, 0 with changes outstanding" in text
    assert "(2 task(s) waiting at the broker)" in text
    worker = network.worker()
    expected = reference(make_network, runner)
    held = StateStore.open(network.state_url)
    try:
        with held.lock("partner-housing"):  # a passing failure: retried with backoff
            deadline = time.monotonic() + 30
            while "retrying partner-housing" not in worker.log():
                assert time.monotonic() < deadline, worker.log()
                time.sleep(0.1)
    finally:
        held.close()
    network.drain()
    got = network.outcome()
    assert got["files"] == expected["files"]  # no broken.csv either
    assert got["mapped"] == expected["mapped"]
    assert got["runs"] == {job: ["ok"] for job in JOBS}  # queued twice, run once
    status = network.connector(runner, "status", "--json")
    states = {entry["job"]: entry["state"] for entry in json.loads(status.stdout)}
    assert states == {"organizers-north": "ok", "partner-housing": "ok", "broken": "failed"}
    text = network.connector(runner, "status").stdout
    assert "3 job(s): 0 queued, 0 running, 1 failed, 0 with changes outstanding" in text
    log = network.logs()
    assert "job broken failed and is not retried" in log
    assert "retrying broken" not in log
    assert "Traceback" not in log


def test_a_missing_broker_is_exit_4_with_a_clear_message(
    make_network: Any, runner: CliRunner
) -> None:
    from tests.brokers import free_port

    network = make_network("queued", f"redis://127.0.0.1:{free_port()}/0")
    for args in (("run", "--all", "--queue"), ("worker",)):
        result = network.connector(runner, *args)
        assert result.exit_code == 4, result.output
        assert "the queue broker at redis://127.0.0.1:" in result.stderr
        assert "cannot be reached" in result.stderr
        assert "Hint: Start the broker" in result.stderr
        assert "Traceback" not in result.output
    status = network.connector(runner, "status")
    assert status.exit_code == 0
    assert "warning: the queue broker" in status.stderr


def test_schedule_queue_queues_a_due_job_once(
    make_network: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`connector schedule --queue`'s tick: a job queued and not run since is not due.
    Also the API for scripts: enqueue_jobs and purge."""
    from connector_core.cli.app import App
    from connector_core.cli.sync import _enqueue_due

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    network = make_network("queued", machine_redis())
    app = App(network.config)
    asked: dict[str, dt.datetime] = {}
    now = dt.datetime(2026, 12, 4, 10, 5).astimezone()
    assert _enqueue_due(app, asked, now) == list(JOBS)  # never run: due
    assert _enqueue_due(app, asked, now + dt.timedelta(minutes=1)) == []
    assert _enqueue_due(app, asked, now + dt.timedelta(hours=1)) == ["organizers-north"]
    report = queue.queue_report(network.settings(), inspect_timeout=0.2)
    assert report.messages == 2
    assert report.queued == {"organizers-north": 2, "partner-housing": 1}
    sent = queue.enqueue_jobs(network.config, ["partner-housing"])  # the scripts' API
    assert (sent.jobs, sent.tasks) == (1, [["partner-housing"]])
    assert queue.purge(network.config) == 3
    assert queue.queue_report(network.settings(), inspect_timeout=0.2).drained


def test_rabbitmq_as_the_broker(make_network: Any, runner: CliRunner) -> None:
    """The machine's RabbitMQ (its local guest account) takes tasks as Redis does; status
    counts them (RabbitMQ cannot be looked into without taking them)."""
    network = make_network("queued", "amqp://127.0.0.1:5672//")
    queued = network.connector(runner, "run", "--all", "--queue")
    assert queued.exit_code == 0, queued.output
    assert "queued 2 job(s) in 1 task(s) on amqp://127.0.0.1:5672//" in queued.stderr
    text = network.connector(runner, "status").stdout
    assert "(1 task(s) waiting at the broker, for jobs it does not name (RabbitMQ)" in text
    _delete_queue(dataclasses.replace(network.settings(), url="amqp://127.0.0.1:5672//"))


def _delete_queue(settings: queue.QueueSettings) -> None:
    """Delete the test's queue: leave the shared RabbitMQ as it was."""
    app = queue.celery_app(settings)
    try:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(settings.queue)
    finally:
        queue.close_app(app)


def _broker_sockets(port: int) -> int:
    """Open sockets of this process to `port` on the loopback (as Python objects)."""
    import gc
    import socket

    gc.collect()
    found = 0
    for thing in gc.get_objects():
        if isinstance(thing, socket.socket) and thing.fileno() != -1:
            with contextlib.suppress(OSError):
                found += thing.getpeername()[1:2] == (port,)
    return found


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_asking_the_broker_leaves_no_connection_open(broker: str) -> None:
    """`connector status` (queue_report: the queue's length and a broadcast to the
    workers), enqueue and purge close every broker connection they open, on Redis and
    RabbitMQ, and a second call works as the first. Celery's app.close() leaves its pools'
    connections open, and they live in kombu's process-wide registry."""
    url = machine_redis() if broker == "redis" else "amqp://127.0.0.1:5672//"
    port = urllib.parse.urlsplit(url).port or (6379 if broker == "redis" else 5672)
    settings = queue.QueueSettings(url=url, shown=url, queue=f"test-{secrets.token_hex(4)}")
    before = _broker_sockets(port)
    for waiting in (1, 2):  # twice: what the first call closed does not stop the second
        queue.enqueue(settings, {"a": "crm", "b": "crm"})
        assert queue.queue_report(settings, inspect_timeout=0.2).messages == waiting
        assert _broker_sockets(port) == before
    assert queue.purge(settings) == 2
    assert _broker_sockets(port) == before
    if broker == "rabbitmq":
        _delete_queue(settings)


def test_a_fan_in_runs_on_a_worker(
    tmp_path: Path, pg_server: dict[str, str], runner: CliRunner
) -> None:
    """A fan-in (many partners' sources into one national target) is a task of its own;
    a worker runs it to the state a single-process run reaches."""
    from tests.fanin import FanInNetwork, cli

    ann = {"id": "l1", "email": "ann@example.org", "first_name": "Ann", "national": "yes"}
    ann_y = {"id": "y1", "email": "ANN@example.org", "last_name": "Smith", "national": "yes"}
    nets = {}
    for kind in ("single", "queued"):
        net = FanInNetwork(tmp_path / kind, pg_schema(pg_server[kind]))
        net.partner("leeds", [ann])
        net.partner("york", [ann_y])
        nets[kind] = net
    queued = nets["queued"]
    broker = machine_redis()
    with queued.config_path.open("a", encoding="utf-8") as out:
        out.write(f"queue: {{broker: '{broker}', queue: fan-in-test, visibility_timeout: 2}}\n")
    env = {**os.environ, **ENV}
    args = ["--config", str(queued.config_path), "worker", "-n", "fan-in@%h"]
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, *args],
            cwd=queued.root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        single = cli(runner, nets["single"], "run", "--all")
        assert single.exit_code == 0, single.output
        sent = cli(runner, queued, "run", "--all", "--queue")
        assert sent.exit_code == 0, sent.output
        assert "queued 1 job(s) in 1 task(s)" in sent.stderr
        settings = queue.settings_for(queued.config())
        assert queue.wait_drained(settings, 40, poll=0.3), log.read_text(encoding="utf-8")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

    def rows(net: FanInNetwork) -> list[dict[str, str]]:  # keys: each store's own secret
        return [{k: v for k, v in row.items() if k != "id"} for row in net.national()]

    assert rows(queued) == rows(nets["single"]) != []
