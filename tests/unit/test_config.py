"""connector.yaml: every admin mistake is reported with its file, line, column and a fix."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector_core.adapters import Adapter, AdapterSettings, Capability, ConfigPath, Page
from connector_core.config import (
    CONFIG_ENV,
    Config,
    config_json_schema,
    find_config,
    load_config,
)
from connector_core.credentials import KeyringSecrets, SecretRef
from connector_core.errors import ConfigError, ConfigValidationError
from connector_core.query import Condition


class DemoSettings(AdapterSettings):
    """Settings of the test adapter: a required path and an optional secret."""

    path: ConfigPath
    token: SecretRef | None = None


class DemoAdapter(Adapter):
    """A tiny adapter used only to exercise connector.yaml loading."""

    name = "demo"
    settings_model = DemoSettings
    default_mapping = {"first_name": "First", "email": "Email"}

    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
    ) -> Iterator[Page]:
        yield Page([])


ADAPTERS: dict[str, type[Adapter]] = {"demo": DemoAdapter}

VALID = textwrap.dedent("""\
    version: 1
    network:
      name: Demo Network
    consent:
      purposes:
        contact_me: {description: May be contacted}
        local_organizing: {description: Local organizing}
    connections:
      members:
        adapter: demo
        settings: {path: data/members.csv}
        mapping:
          first_name: "First Name"
          email: null
          consent.local_organizing: "Local OK"
      north:
        adapter: demo
        settings:
          path: /srv/north.csv
          token: {secret: api_token}
    jobs:
      nightly:
        source: members
        target: north
        policy: policies/north.yaml
        schedule: "0 * * * *"
    """)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A config folder holding the one policy file the cases refer to."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "north.yaml").write_text("rules: []\n")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "connector.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigValidationError) as info:
        load_config(path, ADAPTERS)
    return [str(p) for p in info.value.problems]


# (id, connector.yaml, expected "line:col: message" for each problem, in order)
CASES: list[tuple[str, str, list[str]]] = [
    (
        "syntax-error",
        """\
        version: 1
        network:
          name: Demo: Network
        """,
        ["3:13: could not parse YAML: mapping values are not allowed here"],
    ),
    (
        "tab-indentation",
        "version: 1\nnetwork:\n\tname: Demo\n",
        [
            "3:1: could not parse YAML: a tab character is used for indentation; "
            "YAML allows only spaces"
        ],
    ),
    (
        "unclosed-quote",
        """\
        version: 1
        network: {name: 'Demo}
        connections: {}
        """,
        ["2:17: could not parse YAML: a quoted value is never closed"],
    ),
    (
        "duplicate-key",
        """\
        version: 1
        jobs: {}
        network: {name: Demo}
        connections: {}
        jobs: {}
        """,
        ["5:1: duplicate key 'jobs' (first defined on line 2)"],
    ),
    (
        "key-read-as-boolean",
        """\
        version: 1
        network: {name: Demo}
        connections: {}
        yes: 1
        """,
        ["4:1: key yes is read as true, not as text; put it in quotes"],
    ),
    (
        "top-level-list",
        """\
        - version: 1
        - network: {name: Demo}
        """,
        ["1:1: expected a mapping of `key: value` lines at the top level, got a list"],
    ),
    (
        "unknown-top-level-key",
        """\
        version: 1
        network: {name: Demo}
        connections: {}
        jbos: {}
        """,
        ["4:1: unknown key 'jbos' at the top level; did you mean 'jobs'?"],
    ),
    (
        "unknown-key-without-close-match",
        """\
        version: 1
        network: {name: Demo, colour: red}
        connections: {}
        """,
        [
            "2:23: unknown key 'colour' in network; allowed keys: name, floor, hash_key, ledger_key, key_secret"  # noqa: E501
        ],
    ),
    (
        "unknown-key-deep",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members: {adapter: demo, settings: {path: m.csv}}
          north: {adapter: demo, settings: {path: n.csv}}
        jobs:
          nightly:
            source: members
            target: north
            policy: policies/north.yaml
            shedule: "0 * * * *"
        """,
        ["11:5: unknown key 'shedule' in jobs.nightly; did you mean 'schedule'?"],
    ),
    (
        "missing-required-key",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members:
            description: Our members
            settings: {path: m.csv}
        """,
        ["4:3: missing required key 'adapter' in connections.members"],
    ),
    (
        "string-for-mapping",
        """\
        version: 1
        network: Demo Network
        connections: {}
        """,
        ["2:10: network: expected a mapping (indented `key: value` lines), got 'Demo Network'"],
    ),
    (
        "list-for-mapping",
        """\
        version: 1
        network: {name: Demo}
        connections:
          - members
          - north
        """,
        ["4:3: connections: expected a mapping (indented `key: value` lines), got a list"],
    ),
    (
        "number-for-text",
        """\
        version: 1
        network: {name: 2024}
        connections: {}
        """,
        ["2:17: network.name: expected text, got 2024; put it in quotes if you meant text"],
    ),
    (
        "bad-boolean",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members: {adapter: demo, settings: {path: m.csv}}
          north: {adapter: demo, settings: {path: n.csv}}
        jobs:
          nightly:
            source: members
            target: north
            policy: policies/north.yaml
            enabled: maybe
        """,
        ["11:14: jobs.nightly.enabled: expected true or false, got 'maybe'"],
    ),
    (
        "bad-mode-literal",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members: {adapter: demo, settings: {path: m.csv}}
          north: {adapter: demo, settings: {path: n.csv}}
        jobs:
          nightly:
            source: members
            target: north
            policy: policies/north.yaml
            mode: mirorr
        """,
        ["11:11: jobs.nightly.mode: 'mirorr' is not one of 'mirror'; did you mean 'mirror'?"],
    ),
    (
        "unknown-adapter",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members:
            adapter: dmeo
        """,
        ["5:14: connections.members.adapter: unknown adapter 'dmeo'; did you mean 'demo'?"],
    ),
    (
        "adapter-settings-missing-path",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members:
            adapter: demo
            settings:
              page_size: 100
        """,
        ["6:5: missing required key 'path' in connections.members.settings"],
    ),
    (
        "adapter-settings-unknown-key",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members:
            adapter: demo
            settings:
              pth: members.csv
        """,
        [
            "6:5: missing required key 'path' in connections.members.settings",
            "7:7: unknown key 'pth' in connections.members.settings; did you mean 'path'?",
        ],
    ),
    (
        "adapter-settings-out-of-range",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members:
            adapter: demo
            settings: {path: m.csv, page_size: 0}
        """,
        [
            "6:40: connections.members.settings.page_size: "
            "should be greater than or equal to 1, got 0"
        ],
    ),
    (
        "job-unknown-connection",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members: {adapter: demo, settings: {path: m.csv}}
          north: {adapter: demo, settings: {path: n.csv}}
        jobs:
          nightly:
            source: membrs
            target: north
            policy: policies/north.yaml
        """,
        ["8:13: jobs.nightly.source: unknown connection 'membrs'; did you mean 'members'?"],
    ),
    (
        "job-source-is-target",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members: {adapter: demo, settings: {path: m.csv}}
        jobs:
          loop:
            source: members
            target: members
            policy: policies/north.yaml
        """,
        [
            "8:13: jobs.loop: source and target are both 'members'; "
            "a job copies from one connection to another"
        ],
    ),
    (
        "invalid-cron-schedule",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members: {adapter: demo, settings: {path: m.csv}}
          north: {adapter: demo, settings: {path: n.csv}}
        jobs:
          nightly:
            source: members
            target: north
            policy: policies/north.yaml
            schedule: "every night"
        """,
        [
            "11:15: jobs.nightly.schedule: 'every night' is not a valid cron schedule; "
            "write five fields (minute hour day-of-month month day-of-week), "
            "e.g. '0 2 * * *' for 02:00 daily"
        ],
    ),
    (
        "mapping-unknown-field",
        """\
        version: 1
        network: {name: Demo}
        connections:
          members:
            adapter: demo
            settings: {path: m.csv}
            mapping:
              first_nam: First Name
        """,
        [
            "8:7: connections.members.mapping: unknown canonical field 'first_nam'; "
            "did you mean 'first_name'?"
        ],
    ),
    (
        "mapping-undeclared-purpose",
        """\
        version: 1
        network: {name: Demo}
        consent:
          purposes:
            local_organizing: {description: Local organizing}
        connections:
          members:
            adapter: demo
            settings: {path: m.csv}
            mapping:
              consent.local_organising: Local OK
        """,
        [
            "11:7: connections.members.mapping: consent purpose 'local_organising' is not "
            "declared in consent.purposes; did you mean 'local_organizing'?"
        ],
    ),
    (
        "bad-connection-name",
        """\
        version: 1
        network: {name: Demo}
        connections:
          North Chapter: {adapter: demo, settings: {path: n.csv}}
        """,
        [
            "4:3: connection name 'North Chapter' must start with a lowercase letter "
            "and use only a-z, 0-9, '_' and '-'"
        ],
    ),
    (
        "bad-purpose-name",
        """\
        version: 1
        network: {name: Demo}
        consent:
          purposes:
            Contact-Me: {description: May be contacted}
        connections: {}
        """,
        [
            "5:5: consent purpose 'Contact-Me' must start with a lowercase letter "
            "and use only a-z, 0-9 and '_'"
        ],
    ),
    (
        "unsupported-version",
        """\
        version: 2
        network: {name: Demo}
        connections: {}
        """,
        ["1:10: version: 2 is not one of 1"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_config_is_reported_at_its_line(
    folder: Path, text: str, expected: list[str]
) -> None:
    path = write(folder, text)
    assert problems_of(path) == [f"{path}:{line}" for line in expected]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("path: /srv/north.csv", 'path: "/srv/north\\0.csv"'),
        ("name: Demo Network", 'name: "Demo\\0Network"'),
        ("\njobs:", '\nstate: {url: "sqlite:///st\\0ate.db"}\njobs:'),
    ],
    ids=["path", "name", "state-url"],
)
def test_a_nul_anywhere_is_refused_at_its_line(folder: Path, old: str, new: str) -> None:
    """YAML's "\\0" makes a NUL, which no file system, URL or PostgreSQL text takes: an
    error at its line, not a traceback from the first use of the value."""
    assert old in VALID
    path = write(folder, VALID.replace(old, new))
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:")
    assert problem.endswith("a NUL character (\\0) is not allowed in a value")


def test_empty_file(folder: Path) -> None:
    path = write(folder, "# nothing here yet\n")
    assert problems_of(path) == [f"{path}: the file is empty"]


def test_missing_file_has_no_traceback_and_a_hint(folder: Path) -> None:
    with pytest.raises(ConfigValidationError) as info:
        load_config(folder / "nope.yaml", ADAPTERS)
    assert str(info.value) == f"{folder / 'nope.yaml'}: file not found"
    assert info.value.hint
    assert info.value.__suppress_context__


def test_syntax_error_carries_a_hint(folder: Path) -> None:
    path = write(folder, "version: 1\nnetwork:\n  name: Demo: Network\n")
    with pytest.raises(ConfigValidationError) as info:
        load_config(path, ADAPTERS)
    assert info.value.hint == (
        "Check the indentation of this line, or put the value in quotes if it contains ': '."
    )


def test_missing_policy_file_is_located_at_the_value(folder: Path) -> None:
    path = write(
        folder,
        """\
        version: 1
        network: {name: Demo}
        connections:
          members: {adapter: demo, settings: {path: m.csv}}
          north: {adapter: demo, settings: {path: n.csv}}
        jobs:
          nightly:
            source: members
            target: north
            policy: policies/south.yaml
        """,
    )
    missing = folder / "policies" / "south.yaml"
    assert problems_of(path) == [
        f"{path}:10:13: jobs.nightly.policy: policy file {missing} does not exist "
        "(relative paths start at connector.yaml's folder)"
    ]


def test_literal_secret_is_refused_without_echoing_it(folder: Path) -> None:
    path = write(
        folder,
        """\
        version: 1
        network: {name: Demo}
        connections:
          members:
            adapter: demo
            settings:
              path: m.csv
              token: s3cr3t-Value-42
        """,
    )
    with pytest.raises(ConfigValidationError) as info:
        load_config(path, ADAPTERS)
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == (8, 14)
    assert problem.message.startswith(
        "connections.members.settings.token: secrets never live in connector.yaml"
    )
    assert "s3cr3t" not in str(info.value)
    assert "s3cr3t" not in repr(info.value)


def test_secret_like_fields_never_echo_their_value(folder: Path) -> None:
    path = write(
        folder,
        """\
        version: 1
        network: {name: Demo}
        connections:
          members:
            adapter: demo
            settings:
              path: m.csv
              token: {secret: [hunter2]}
        """,
    )
    assert problems_of(path) == [
        f"{path}:8:23: connections.members.settings.token.secret: expected text, got a list"
    ]
    path = write(folder, "version: 1\nnetwork: {name: Demo, api_token: hunter2}\nconnections: {}\n")
    assert "hunter2" not in "\n".join(problems_of(path))


def test_several_problems_are_reported_together_sorted_by_line(folder: Path) -> None:
    path = write(
        folder,
        """\
        version: 1
        network: {name: Demo}
        connections:
          members:
            adapter: demo
            settings: {pth: m.csv}
          north:
            adapter: dmeo
        jobs:
          nightly:
            source: membrs
            target: north
            policy: policies/north.yaml
            mode: mirorr
        """,
    )
    with pytest.raises(ConfigValidationError) as info:
        load_config(path, ADAPTERS)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:6:5: missing required key 'path' in connections.members.settings",
        f"{path}:6:16: unknown key 'pth' in connections.members.settings; did you mean 'path'?",
        f"{path}:8:14: connections.north.adapter: unknown adapter 'dmeo'; did you mean 'demo'?",
        f"{path}:11:13: jobs.nightly.source: unknown connection 'membrs'; did you mean 'members'?",
        f"{path}:14:11: jobs.nightly.mode: 'mirorr' is not one of 'mirror'; did you mean 'mirror'?",
    ]
    assert info.value.hint == (
        "Fix the lines above; `connector schema config` prints the JSON Schema for your editor."
    )


def load_valid(folder: Path) -> Config:
    return load_config(write(folder, VALID), ADAPTERS)


def test_valid_config_loads(folder: Path) -> None:
    config = load_valid(folder)
    assert config.base_dir == folder.resolve()
    assert list(config.model.connections) == ["members", "north"]
    assert config.model.consent.purposes["contact_me"].description == "May be contacted"
    job = config.job("nightly")
    assert (job.source, job.target, job.schedule, job.mode, job.enabled) == (
        "members",
        "north",
        "0 * * * *",
        "mirror",
        True,
    )
    assert config.adapters == {"members": DemoAdapter, "north": DemoAdapter}
    north = config.settings["north"]
    assert isinstance(north, DemoSettings)
    assert (north.path, north.token) == (Path("/srv/north.csv"), SecretRef(secret="api_token"))


def test_relative_paths_resolve_against_the_config_folder(folder: Path) -> None:
    config = load_valid(folder)
    assert config.settings["members"].path == folder.resolve() / "data" / "members.csv"  # type: ignore[attr-defined]
    assert config.job("nightly").policy == folder.resolve() / "policies" / "north.yaml"
    assert config.model.state.url == f"sqlite:///{(folder.resolve() / 'state.db').as_posix()}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///db/state.db", "sqlite:///{base}/db/state.db"),
        ("sqlite:////var/lib/state.db", "sqlite:////var/lib/state.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://db.example/connector", "postgresql://db.example/connector"),
    ],
    ids=["relative", "absolute", "memory", "postgres"],
)
def test_state_url(folder: Path, url: str, expected: str) -> None:
    config = load_config(write(folder, VALID + f"state: {{url: '{url}'}}\n"), ADAPTERS)
    assert config.model.state.url == expected.format(base=folder.resolve().as_posix())


def test_open_adapter_passes_settings_secrets_and_mapping(folder: Path) -> None:
    config = load_valid(folder)
    with config.open_adapter("members") as adapter:
        assert isinstance(adapter, DemoAdapter)
        assert adapter.connection == "members"
        assert adapter.settings is config.settings["members"]
        assert isinstance(adapter.secrets, KeyringSecrets)
        assert adapter.secrets.connection == "members"
        assert dict(adapter.mapping.entries) == {
            "first_name": "First Name",
            "consent.local_organizing": "Local OK",
        }


def test_open_adapter_unknown_connection_suggests_a_name(folder: Path) -> None:
    config = load_valid(folder)
    with pytest.raises(ConfigError) as info:
        config.open_adapter("membres")
    assert str(info.value) == (
        f"no connection named 'membres' in {folder / 'connector.yaml'}; did you mean 'members'?"
    )
    assert info.value.hint == "Defined connections: members, north."


def test_find_config_prefers_explicit_then_env_then_cwd(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = write(folder, VALID)
    other = folder / "other.yaml"
    other.write_text(VALID)
    monkeypatch.chdir(folder)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert find_config(None) == folder / "connector.yaml"
    monkeypatch.setenv(CONFIG_ENV, str(other))
    assert find_config(None) == other
    assert find_config(here) == here
    assert find_config(folder) == here


def test_find_config_missing_file_has_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError) as info:
        find_config(None)
    assert str(info.value) == f"configuration file not found: {tmp_path / 'connector.yaml'}"
    assert info.value.hint is not None
    assert "--config" in info.value.hint
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match=r"gone\.yaml") as info:
        find_config(None)
    assert info.value.hint == f"{CONFIG_ENV} names a missing file: fix it or unset it."


# --- JSON Schema -------------------------------------------------------------------------


def test_json_schema_is_draft_2020_12_json(folder: Path) -> None:
    schema = config_json_schema(ADAPTERS)
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "connector.yaml"
    assert schema["description"]
    assert schema["required"] == ["version", "network", "connections"]
    assert schema["additionalProperties"] is False


def test_json_schema_embeds_each_adapters_settings() -> None:
    schema = config_json_schema(ADAPTERS)
    (branch,) = schema["properties"]["connections"]["additionalProperties"]["oneOf"]
    assert branch["properties"]["adapter"] == {
        "const": "demo",
        "description": "A tiny adapter used only to exercise connector.yaml loading.",
    }
    settings = branch["properties"]["settings"]
    assert set(settings["properties"]) == {"page_size", "path", "token"}
    assert settings["required"] == ["path"]
    assert branch["required"] == ["adapter", "settings"]
    token = json.dumps(settings["properties"]["token"])
    assert '"$ref": "#/$defs/demo.SecretRef"' in token
    assert "demo.SecretRef" in schema["$defs"]
    refs = re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(schema))
    assert set(refs) <= set(schema["$defs"])


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    return schema


def _matches(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """A small JSON Schema check for the keywords this schema uses (jsonschema is absent)."""
    schema = _resolve(schema, root)
    if "const" in schema and value != schema["const"]:
        return False
    if "oneOf" in schema:
        return sum(_matches(value, s, root) for s in schema["oneOf"]) == 1
    if "anyOf" in schema:
        return any(_matches(value, s, root) for s in schema["anyOf"])
    if schema.get("type") == "object":
        return isinstance(value, dict) and _object_matches(value, schema, root)
    return True


def _object_matches(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> bool:
    if not set(schema.get("required", [])) <= set(value):
        return False
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub = schema.get("properties", {}).get(key, extra)
        if sub is False or (isinstance(sub, dict) and not _matches(item, sub, root)):
            return False
    return True


def test_minimal_valid_config_matches_the_schema(folder: Path) -> None:
    config = load_valid(folder)
    schema = config_json_schema(ADAPTERS)
    assert _matches(config.document.data, schema, schema)
    assert not _matches({**config.document.data, "jbos": {}}, schema, schema)
    wrong = {"members": {"adapter": "demo", "settings": {"pth": "x"}}}
    assert not _matches({**config.document.data, "connections": wrong}, schema, schema)


class BookAdapter(DemoAdapter):
    """A target that keeps each record apart under its job's key (like a CardDAV book)."""

    name = "book"
    capabilities = frozenset(
        {Capability.READ, Capability.WRITE, Capability.DELETE, Capability.PER_JOB_RECORDS}
    )


TWO_JOBS_ONE_TARGET = """\
    version: 1
    network:
      name: Demo Network
    connections:
      members:
        adapter: demo
        settings: {path: members.csv}
      north:
        adapter: ADAPTER
        settings: {path: north.csv}
    jobs:
      first:
        source: members
        target: north
        policy: policies/north.yaml
      second:
        source: members
        target: north
        policy: policies/north.yaml
        enabled: false
    """


def test_two_jobs_writing_one_target_are_refused_naming_both(folder: Path) -> None:
    path = write(folder, TWO_JOBS_ONE_TARGET.replace("ADAPTER", "demo"))
    with pytest.raises(ConfigValidationError) as info:
        load_config(path, ADAPTERS)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:18:13: jobs.second.target: jobs 'first' (line 14) and 'second' both write "
        "connection 'north', whose demo adapter cannot tell one job's records from another's "
        "(two jobs writing one file lose rows and mix audiences); give each job its own "
        "target connection, or make it one job with one policy"
    ]
    assert info.value.exit_code == 3


def test_jobs_may_share_a_target_that_keeps_their_records_apart(folder: Path) -> None:
    path = write(folder, TWO_JOBS_ONE_TARGET.replace("ADAPTER", "book"))
    config = load_config(path, {**ADAPTERS, "book": BookAdapter})
    assert [j.target for j in config.model.jobs.values()] == ["north", "north"]


@pytest.mark.parametrize("adapter", ["csv", "civicrm", "nextcloud_files"])
def test_bundled_single_writer_targets_do_not_claim_per_job_records(adapter: str) -> None:
    from connector_core.plugins import collect_adapters, make_plugin_manager

    adapters = collect_adapters(make_plugin_manager())
    assert Capability.PER_JOB_RECORDS not in adapters[adapter].capabilities
    assert Capability.PER_JOB_RECORDS in adapters["nextcloud"].capabilities


def test_two_approvers_with_one_key_are_refused_at_the_second(folder: Path) -> None:
    """Quorum counts people: one key under two names would let one person count twice."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    text = VALID + textwrap.dedent(f"""\
        approvers:
          alice: {{organization: Demo, key: '{key} alice@example.org'}}
          bob: {{organization: Housing, key: '{key} bob@example.org'}}
        """)
    problems = problems_of(write(folder, text))
    assert len(problems) == 1
    assert "approvers.bob.key: the same key as approvers.alice" in problems[0]
