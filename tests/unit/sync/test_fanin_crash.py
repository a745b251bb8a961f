"""A fan-in run killed (SIGKILL) at any point and run again ends exactly like an
uninterrupted one: the target, the id map and the contributions (both state stores)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from connector_core.sync.fanin import load_fan_in, run_fan_in
from connector_core.sync.tables import fan_in_contributions
from connector_core.testing import crash
from tests.fanin import FanInNetwork

PEOPLE = 18


def person(n: int, partner: str, version: int) -> dict[str, str]:
    said = "no" if (n + version) % 7 == 0 else ("yes" if (n * 3 + version) % 5 else "")
    return {
        "id": f"{partner}{n}",
        "email": f"p{n}@example.org" if n % 3 else "",
        "phone": f"07700 9{n:05d}",
        "first_name": f"First{n}v{version}",
        "last_name": f"Last{n}",
        "city": f"City{(n + version) % 4}",
        "postal_code": f"PC{n}",
        "national": said,
    }


def state(net: FanInNetwork, version: int) -> None:
    """The partners' sources and the suppression list at `version`."""
    for i, partner in enumerate(("leeds", "york", "hull")):
        net.partner(
            partner,
            [person(n, partner, version + i) for n in range(PEOPLE) if (n + i + version) % 4],
        )
    net.suppress([{"phone": f"+44 7700 9{n:05d}"} for n in range(PEOPLE) if n % 8 == version])


def network(root: Path, state_url: str, name: str = "national") -> FanInNetwork:
    net = FanInNetwork(root, state_url, name=name)
    text = net.config_path.read_text(encoding="utf-8")
    net.config_path.write_text(text.replace("max_delete: 100%", "max_delete: 100%, batch_size: 3"))
    return net


def snapshot(net: FanInNetwork) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The target's rows (without the keys, which differ per store) and the contributions."""
    rows = sorted(tuple(v for k, v in r.items() if k != "id") for r in net.national())
    with net.store() as store, store._transaction() as conn:
        query = sa.select(
            fan_in_contributions.c.partner,
            fan_in_contributions.c.source_id,
            fan_in_contributions.c.fields,
        )
        query = query.where(fan_in_contributions.c.job == net.name)
        contributions = sorted((p, s, str(sorted(f))) for p, s, f in conn.execute(query))
    return rows, contributions


def killed_at(net: FanInNetwork, at: int) -> bool:
    def doomed() -> None:
        loaded = load_fan_in(net.config(), net.name)
        with net.store() as store:
            crash.KillSwitch(at).install(loaded.job, store)
            run_fan_in(loaded, store)

    return crash.killed_in_fork(doomed)


def test_a_killed_fan_in_run_converges_to_an_uninterrupted_one(
    tmp_path: Path, state_url: str
) -> None:
    reference = network(tmp_path / "reference", f"sqlite:///{tmp_path / 'reference.db'}")
    for version in (0, 1):
        state(reference, version)
        assert reference.run().exit_code == 0
    want = snapshot(reference)
    assert want[0]  # somebody went up
    kills = 0
    for at in range(1, 80):  # each kill point a fan-in of its own, in one store
        net = network(tmp_path / f"at{at}", state_url, name=f"national{at}")
        state(net, 0)
        assert net.run().exit_code == 0
        state(net, 1)
        if not killed_at(net, at):
            break
        kills += 1
        result = net.run()
        assert result.exit_code == 0, result
        assert snapshot(net) == want, f"killed at event {at}"
    else:
        raise AssertionError("the run was killed at every point tried")
    assert kills >= 5, kills
