"""`connector policy check|test|explain|preview` and `connector schema policy`."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from connector_core.adapters import Adapter, ReadProblem
from connector_core.cells import strip_controls_deep
from connector_core.cli.app import App, emit_json, output_option, write_json
from connector_core.cli.render import cell, table
from connector_core.config import CONFIG_ENV, DEFAULT_FILE, Config
from connector_core.consent import merge_evidence
from connector_core.errors import (
    ConfigError,
    ConfigValidationError,
    ExitCode,
    PolicyError,
    Problem,
    RecordRejected,
)
from connector_core.hookspecs import MaskFactory
from connector_core.masks import MaskContext
from connector_core.plugins import collect_masks
from connector_core.policy.compiler import CompiledPolicy, compile_policy
from connector_core.policy.explain import explain
from connector_core.policy.loader import load_policy
from connector_core.policy.models import Policy
from connector_core.policy.schema import policy_json_schema
from connector_core.records import Expected, Record, ValueInvalid
from connector_core.sync.job import load_job_policy
from connector_core.sync.schema_check import SchemaReport, check_source
from connector_core.yaml_errors import load_yaml


@dataclasses.dataclass
class PolicyEnv:
    """What loading a policy needs from connector.yaml (when there is one) and the plugins."""

    config: Config | None
    masks: dict[str, MaskFactory]

    @classmethod
    def from_app(cls, app: App) -> PolicyEnv:
        """Use connector.yaml if one is named or found; without one, purposes are not checked.

        A file named with --config or $CONNECTOR_CONFIG must exist; ./connector.yaml may not.
        """
        named = app.config_path is not None or os.environ.get(CONFIG_ENV)
        config = app.config if named or Path(DEFAULT_FILE).is_file() else None
        return cls(config, collect_masks(app.pm))

    @property
    def purposes(self) -> list[str] | None:
        """The declared consent purposes, or None without a config."""
        return None if self.config is None else list(self.config.model.consent.purposes)

    def load(self, path: Path) -> Policy:
        """Load a policy with the network floor and extras of the config."""
        if self.config is None:
            return load_policy(path, masks=self.masks)
        return load_job_policy(self.config, path, self.masks)

    def context(self) -> MaskContext:
        """Masks get the network's hash key from the keyring, only when a policy uses it."""
        ref = self.config.model.network.hash_key if self.config else None

        def hash_key() -> bytes:
            if ref is None:
                raise PolicyError(
                    "the hash mask needs the network's hash key",
                    hint="Run `connector credentials set network hash_key` and add "
                    "`hash_key: {secret: hash_key}` under `network:` in connector.yaml.",
                )
            assert self.config is not None
            return self.config.secrets().resolve(ref).get_secret_value().encode()

        return MaskContext(hash_key=hash_key)

    def compile(self, path: Path) -> CompiledPolicy:
        """Load and compile a policy for this network."""
        return compile_policy(self.load(path), masks=self.masks, context=self.context())


@click.group()
def policy() -> None:
    """Check, test, explain and preview sharing policies."""


@policy.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--against",
    "connection",
    metavar="CONNECTION",
    help="Also check that this connection of connector.yaml has every field the policy "
    "tests or shows and evidence of every consent purpose it requires (as `run` does).",
)
@click.pass_obj
def check(app: App, files: tuple[Path, ...], connection: str | None) -> None:
    """Load each policy FILE and report errors and warnings with file:line:col.

    \b
    Example (before pointing a job at a new export):
      connector policy check policies/organizers-north.yaml --against members
    """
    env = PolicyEnv.from_app(app)
    if connection is not None:
        app.config.connection(connection)  # a clear error, with a suggestion, for a typo
    failed = 0
    for path in files:
        try:
            loaded = env.load(path)
        except ConfigValidationError as err:
            failed += 1
            _report(err.problems)
            continue
        _report(loaded.warnings)
        against = ""
        if connection is not None:
            report = _check_against(app, env, loaded, connection)
            _report([*report.errors, *report.warnings])
            if report.errors:
                failed += 1
                continue
            against = f"; {connection}: {_fields_note(report)}"
        click.echo(f"ok {path}: policy {loaded.name}, {len(loaded.rules)} rule(s){against}")
    if failed:
        raise ConfigError(
            f"{failed} of {len(files)} policy file(s) have errors",
            hint="Fix the lines above; `connector schema policy` gives your editor the language.",
        )


def _report(problems: Iterable[Problem]) -> None:
    for problem in problems:
        color = "red" if problem.severity == "error" else "yellow"
        click.secho(f"{problem.severity}: {problem}", fg=color, err=True)


def _check_against(app: App, env: PolicyEnv, loaded: Policy, connection: str) -> SchemaReport:
    """The schema check a run of a job from `connection` under this policy would make."""
    compiled = compile_policy(loaded, masks=env.masks, context=MaskContext.for_validation())
    with app.config.open_adapter(connection) as adapter:
        return check_source(app.config, connection, adapter, compiled)


def _fields_note(report: SchemaReport) -> str:
    if report.fields is None:
        return "not checked (its adapter cannot list its fields)"
    return "fields match" if report.fields.verified else "fields match its mapping"


@policy.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def test(app: App, paths: tuple[Path, ...], as_json: bool) -> None:
    """Run the *_test.yaml files under PATHS (default: the current folder).

    Exits 1 when a case fails, printing what was expected and what the policy did, and 3
    when a test file or its policy cannot be loaded (a configuration error).
    """
    from connector_core.policy.policytest import LOADING, collect_results, find_test_files

    env = PolicyEnv.from_app(app)
    files = find_test_files(paths or (Path.cwd(),))
    if not files:
        raise ConfigError(
            "no *_test.yaml files found",
            hint="Put policy tests beside the policies, named NAME_test.yaml.",
        )
    results = list(collect_results(files, purposes=env.purposes, masks=env.masks))
    failed = [r for r in results if not r.passed]
    if as_json:
        emit_json([{**dataclasses.asdict(r), "passed": r.passed} for r in results])
    else:
        for r in results:
            where = f"{r.file}:{r.line}" if r.line else str(r.file)
            status = click.style("PASS", fg="green") if r.passed else click.style("FAIL", fg="red")
            click.echo(f"{status} {where}: {r.name}")
            for diff in r.differences:
                click.echo(f"       {diff}")
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed", err=True)
    if any(r.name == LOADING for r in failed):
        raise SystemExit(ExitCode.CONFIG)
    if failed:
        raise SystemExit(ExitCode.RECORDS_FAILED)


def read_record_file(path: Path) -> Record:
    """A record from a YAML or JSON file (consent shorthand allowed)."""
    from connector_core.policy.policytest import normalize_record  # not needed by a run

    data = load_yaml(path).data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a record file holds one mapping of fields to values")
    try:
        return normalize_record(data)
    except ValueInvalid as exc:
        raise ConfigError(
            f"{path}: {exc}",
            hint="Write yes or no for each purpose and yes/no field, dates as YYYY-MM-DD, "
            "or leave the field out.",
        ) from None


@policy.command("explain")
@click.argument("policy_file", metavar="POLICY", type=click.Path(path_type=Path))
@click.option(
    "--record",
    "record_file",
    required=True,
    type=click.Path(path_type=Path),
    help="YAML or JSON file with one record.",
)
@click.pass_obj
def explain_cmd(app: App, policy_file: Path, record_file: Path) -> None:
    """Show why POLICY shares or withholds a record, rule by rule and field by field."""
    env = PolicyEnv.from_app(app)
    click.echo(explain(env.compile(policy_file), read_record_file(record_file)).render())


def _input_records(app: App, source: str, problems: list[ReadProblem]) -> Iterator[Record]:
    """Records from a connection of connector.yaml, a .csv file, or a JSON-lines file;
    what cannot be read (a line that is not a record, a consent value that is not yes or
    no, an id whose lines disagree) goes to `problems` and is not shared."""
    path = Path(source)
    if path.suffix in {".json", ".jsonl"} and path.is_file():
        yield from _json_lines(path, problems)
        return
    if path.suffix == ".csv" and path.is_file():
        adapter: Adapter = _csv_adapter(app, path)
    else:
        adapter = app.config.open_adapter(source)
    with adapter:
        for page in adapter.read(cursor=None, fields=None, where=None):
            problems.extend(page.problems)
            yield from page.records


def _json_lines(path: Path, problems: list[ReadProblem]) -> Iterator[Record]:
    """One record per line; lines sharing an id are merged as sync merges a source's rows
    (:func:`~connector_core.consent.merge_evidence`). A line that is not a JSON object, or
    whose consent is neither yes, no nor empty, is reported and skipped."""
    from connector_core.policy.policytest import normalize_record  # not needed by a run

    rows: dict[str, list[tuple[int, Record]]] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except (ValueError, RecursionError):  # their messages quote the line: left out
                data = None
            if not isinstance(data, dict):
                problems.append(ReadProblem(f"{path}:{number}", Expected.JSON_RECORD))
                continue
            key = None if data.get("id") is None else str(data["id"])
            try:
                record = normalize_record(data, source=f"jsonl:{path.name}")
            except ValueInvalid as exc:
                problems.append(ReadProblem(f"{path}:{number}", exc.expected, exc.field, key))
                continue
            rows.setdefault(json.dumps(key), []).append((number, record))
    for group in rows.values():
        if len(group) == 1:
            yield group[0][1]
            continue
        merged = merge_evidence(r for _, r in group)
        where = f"{path}:{','.join(str(n) for n, _ in group)}"
        expected = Expected.HELD_ROWS if merged is None else Expected.MERGED_ROWS
        key = None if group[0][1].get("id") is None else str(group[0][1]["id"])
        problems.append(ReadProblem(where, expected, "id", key))
        if merged is not None:
            yield merged


def _csv_adapter(app: App, path: Path) -> Adapter:
    cls = app.adapters.get("csv")
    if cls is None:
        raise ConfigError("reading a .csv file needs the csv adapter, which is not installed")
    return cls(cls.settings_model.model_validate({"path": path}))


@policy.command("preview")
@click.argument("policy_file", metavar="POLICY", type=click.Path(path_type=Path))
@click.option(
    "--input",
    "source",
    required=True,
    help="A connection in connector.yaml, a .csv file or a .jsonl file.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Show at most this many shared records (0: all); counts cover all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print shared records as JSON lines.")
@click.pass_obj
def preview(app: App, policy_file: Path, source: str, limit: int, as_json: bool) -> None:
    """Show what the recipient of POLICY would receive, and why the rest is withheld."""
    compiled = PolicyEnv.from_app(app).compile(policy_file)
    withheld: collections.Counter[str] = collections.Counter()
    shared: list[Record] = []
    problems: list[ReadProblem] = []
    total = 0
    failed: collections.Counter[str] = collections.Counter()  # a mask refused: not sent
    for record in _input_records(app, source, problems):
        total += 1
        try:
            decision, projection = compiled.evaluate(record)
        except RecordRejected as exc:  # as a run fails that one record (no value in it)
            failed[str(exc)] += 1
            continue
        if projection is None:
            withheld[decision.reason] += 1
        elif not limit or len(shared) < limit:
            shared.append(strip_controls_deep(projection))  # what sync would send
    count = total - sum(withheld.values()) - sum(failed.values())
    if as_json:
        for row in shared:
            click.echo(json.dumps(row, ensure_ascii=False, default=str))
    else:
        columns = [f for f in compiled.outcomes if any(f in r for r in shared)]
        click.echo(table([[cell(r.get(c)) for c in columns] for r in shared], columns))
    for problem in problems:
        click.secho(f"skipped: {problem}", fg="yellow", err=True)
    not_sent = sum(withheld.values())
    click.echo(f"{total} read, {count} shared, {not_sent} withheld", err=True)
    for reason, n in withheld.most_common():
        click.echo(f"  withheld {n}: {reason}", err=True)
    for reason, n in failed.most_common():
        click.secho(f"  failed {n}: {reason}", fg="yellow", err=True)


@click.command("policy")
@output_option
@click.pass_obj
def schema_policy(app: App, output: Path | None) -> None:
    """The JSON Schema of policy files, with the masks of the installed plugins.

    \b
    Example (then start each policy with `# yaml-language-server: $schema=policy.schema.json`):
      connector schema policy -o policy.schema.json
    """
    write_json(policy_json_schema(collect_masks(app.pm)), output)
