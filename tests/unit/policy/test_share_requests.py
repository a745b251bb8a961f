"""Share request documents: parsing with located errors, signatures, and the floor's cuts."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.policy.loader import load_policy
from connector_core.policy.models import parse_duration
from connector_core.policy.share_requests import (
    RequestValidationError,
    ShareRequest,
    canonical,
    load_request,
    policy_data,
    request_json_schema,
    review_request,
    sign_request,
    verify_request,
)
from connector_core.query import All, Compare
from connector_core.signing import NAMESPACE_APPROVAL, SignatureError, sign

REPO = Path(__file__).resolve().parents[3]
FLOOR = REPO / "policies" / "network-floor.yaml"
PURPOSES = ["contact_me", "local_organizing", "share_with_partners", "public_map"]
DOC = (REPO / "docs" / "request-format.md").read_text(encoding="utf-8")
EXAMPLE = re.search(r"```yaml\n(.*?)```", DOC, re.S).group(1)  # type: ignore[union-attr]
DOC_KEY = re.search(r"public_key: (ssh-ed25519 \S+ \S+)", EXAMPLE).group(1)  # type: ignore[union-attr]


def make_key(folder: Path, name: str) -> tuple[Path, str]:
    """An OpenSSH private key file and its public key line."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = folder / name
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)  # ssh-keygen refuses a private key others can read
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return path, f"{public.decode()} {name}@example.org"


@pytest.fixture
def ana(tmp_path: Path) -> tuple[Path, str]:
    return make_key(tmp_path, "ana")


def write(folder: Path, text: str, name: str = "request.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path) -> ShareRequest:
    return load_request(path, purposes=PURPOSES, adapters=["csv", "civicrm", "nextcloud"])


def signed(folder: Path, key: tuple[Path, str], text: str = EXAMPLE) -> Path:
    """The request `text` with `key` as the requester's, signed by it."""
    path = write(folder, text.replace(DOC_KEY, key[1]))
    signature = sign_request(load(path), key[0])
    return write(folder, path.read_text() + "signature: |\n" + _indent(signature))


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def test_the_documented_example_loads(tmp_path: Path) -> None:
    request = load(write(tmp_path, EXAMPLE))
    assert request.model.id == "sunrise-climate-march"
    assert request.model.fields == ["first_name", "email", "city"]
    assert request.duration.days == 90
    assert request.scope == All(
        (Compare("groups", "any_of", ("climate-campaign",)), Compare("country", "eq", "GB"))
    )
    assert request.key.kind == "ssh-ed25519"
    assert request.signature is None


def test_signed_request_verifies(tmp_path: Path, ana: tuple[Path, str]) -> None:
    request = load(signed(tmp_path, ana))
    assert verify_request(request).text == " ".join(ana[1].split()[:2])


def test_yaml_and_json_spellings_share_one_canonical_form(
    tmp_path: Path, ana: tuple[Path, str]
) -> None:
    path = signed(tmp_path, ana)
    data = yaml.safe_load(path.read_text())
    data["created"] = data["created"].isoformat()
    as_json = write(tmp_path, json.dumps(data, indent=4), "request.json")
    reordered = write(
        tmp_path,
        "# a comment changes nothing\n" + yaml.safe_dump(dict(reversed(data.items()))),
        "reordered.yaml",
    )
    for other in (as_json, reordered):
        assert load(other).canonical == load(path).canonical
        verify_request(load(other))


def test_canonical_form_is_sorted_compact_json() -> None:
    assert canonical({"b": [1, 2.0], "a": "é", "signature": "x"}) == '{"a":"é","b":[1,2]}'.encode()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["id", "network", "why", "duration", "purpose"]),
    change=st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1, max_size=5),
)
def test_any_change_to_a_value_fails(
    tmp_path: Path, ana: tuple[Path, str], key: str, change: str
) -> None:
    request = load(signed(tmp_path, ana))
    data = yaml.safe_load(request.path.read_text())
    data[key] = f"{data[key]}{change}" if key not in ("duration",) else "91d"
    altered = dataclass_replace(request, canonical=canonical(data))
    with pytest.raises(SignatureError, match="does not match"):
        verify_request(altered)


def dataclass_replace(request: ShareRequest, **changes: bytes) -> ShareRequest:
    import dataclasses

    return dataclasses.replace(request, **changes)


def test_an_added_field_fails(tmp_path: Path, ana: tuple[Path, str]) -> None:
    path = signed(tmp_path, ana)
    path.write_text(
        path.read_text().replace("[first_name, email, city]", "[first_name, email, city, phone]")
    )
    with pytest.raises(SignatureError, match="does not match"):
        verify_request(load(path))


def test_unsigned_request_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="not signed") as err:
        verify_request(load(write(tmp_path, EXAMPLE)))
    assert "ssh-keygen -Y sign -n commons-connector-request" in (err.value.hint or "")


def test_another_key_cannot_sign_for_the_requester(tmp_path: Path, ana: tuple[Path, str]) -> None:
    mallory = make_key(tmp_path, "mallory")
    request = load(write(tmp_path, EXAMPLE.replace(DOC_KEY, ana[1])))
    with pytest.raises(SignatureError, match="does not belong"):
        sign_request(request, mallory[0])
    forged = sign(request.canonical, mallory[0], "commons-connector-request")
    path = write(tmp_path, request.path.read_text() + "signature: |\n" + _indent(forged))
    with pytest.raises(SignatureError, match="another key"):
        verify_request(load(path))


def test_an_approval_signature_is_not_a_request_signature(
    tmp_path: Path, ana: tuple[Path, str]
) -> None:
    request = load(write(tmp_path, EXAMPLE.replace(DOC_KEY, ana[1])))
    approval = sign(request.canonical, ana[0], NAMESPACE_APPROVAL)
    path = write(tmp_path, request.path.read_text() + "signature: |\n" + _indent(approval))
    with pytest.raises(SignatureError, match="not for 'commons-connector-request'"):
        verify_request(load(path))


def test_ssh_keygen_can_sign_the_canonical_form(
    tmp_path: Path, ana: tuple[Path, str], ssh_keygen: str
) -> None:
    request = load(write(tmp_path, EXAMPLE.replace(DOC_KEY, ana[1])))
    (tmp_path / "canonical.json").write_bytes(request.canonical)
    subprocess.run(
        [
            ssh_keygen,
            "-q",
            "-Y",
            "sign",
            "-f",
            str(ana[0]),
            "-n",
            "commons-connector-request",
            str(tmp_path / "canonical.json"),
        ],
        check=True,
        capture_output=True,
    )
    signature = (tmp_path / "canonical.json.sig").read_text()
    path = write(tmp_path, request.path.read_text() + "signature: |\n" + _indent(signature))
    verify_request(load(path))


# --- located errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        (
            "fields: [first_name, email, city]",
            "fields: [first_name, emial, city]",
            11,
            "did you mean 'email'",
        ),
        ("fields: [first_name, email, city]", "fields: [email, email]", 11, "listed twice"),
        (
            "purpose: share_with_partners",
            "purpose: share_with_partner",
            10,
            "did you mean 'share_with_partners'",
        ),
        ("  groups: climate-campaign", "  grups: climate-campaign", 13, "did you mean 'groups'"),
        ("duration: 90d", "duration: three months", 20, "not a duration"),
        ("duration: 90d", "duration: 99999999w", 20, "longer than 100 years"),
        ("duration: 90d", "duration: 99999999999999999999d", 20, "longer than 100 years"),
        ("  contact: ana@sunrise.example.org\n", "", 5, "missing required key 'contact'"),
        ("  adapter: csv", "  adapter: mailchimp", 16, "no adapter 'mailchimp' is installed"),
        ("kind: share-request", "kind: policy", 2, "kind"),
        ("why: >", "reason: >", 21, "unknown key 'reason'"),
        (DOC_KEY, "ssh-dss AAAAB3NzaC1kc3M= old", 9, "unsupported public key kind"),
        ("id: sunrise-climate-march", "id: Sunrise March", 3, "id"),
    ],
    ids=[
        "field",
        "twice",
        "purpose",
        "scope",
        "duration",
        "overflowing-duration",
        "huge-duration",
        "contact",
        "adapter",
        "kind",
        "unknown",
        "key",
        "id",
    ],
)
def test_mistakes_name_file_and_line(
    tmp_path: Path, old: str, new: str, line: int, message: str
) -> None:
    assert old in EXAMPLE
    path = write(tmp_path, EXAMPLE.replace(old, new))
    with pytest.raises(RequestValidationError) as err:
        load(path)
    text = str(err.value)
    assert f"request.yaml:{line}:" in text, text
    assert message in text, text


def test_a_broken_file_is_located(tmp_path: Path) -> None:
    with pytest.raises(RequestValidationError) as err:
        load(write(tmp_path, "version: 1\nkind: [share-request\n"))
    assert "request.yaml:" in str(err.value)


# --- the floor ---------------------------------------------------------------------------


def test_review_cuts_what_the_floor_forbids(tmp_path: Path) -> None:
    text = EXAMPLE.replace(
        "fields: [first_name, email, city]",
        "fields: [first_name, email, city, latitude, street_address, birth_date, modified_at]",
    )
    floor = load_policy(FLOOR, purposes=PURPOSES)
    review = review_request(load(write(tmp_path, text)), floor)
    assert review.allowed == {
        "first_name": "show",
        "email": "show",
        "city": "show",
        "latitude": "mask:coarsen_location(2)",
    }
    assert set(review.cut) == {"street_address", "birth_date", "modified_at"}
    assert re.search(r"forbids it \(network-floor\.yaml:\d+\)", review.cut["street_address"])
    assert "does not share it" in review.cut["modified_at"]
    assert review.require_consent == ("share_with_partners", "contact_me")
    assert review.floor_forbids == (
        "network-floor: deceased",
        "network-floor: deleted at the source",
    )


def test_without_a_floor_nothing_is_cut(tmp_path: Path) -> None:
    review = review_request(load(write(tmp_path, EXAMPLE)), None)
    assert review.cut == {}
    assert list(review.allowed) == ["first_name", "email", "city"]


def test_the_policy_a_request_becomes_loads_under_the_floor(tmp_path: Path) -> None:
    text = EXAMPLE.replace(
        "fields: [first_name, email, city]", "fields: [first_name, latitude, street_address]"
    )
    request = load(write(tmp_path, text))
    review = review_request(request, load_policy(FLOOR, purposes=PURPOSES))
    data = policy_data(request, review)
    assert data["fields"] == {"first_name": "show", "latitude": "show"}
    path = write(tmp_path, yaml.safe_dump(data, sort_keys=False), "request-policy.yaml")
    policy = load_policy(path, purposes=PURPOSES, floor=FLOOR)
    assert policy.name == "request-sunrise-climate-march"
    assert policy.require_consent == ("share_with_partners",)
    assert policy.narrows is not None
    assert policy.narrows.name == "network-floor"


def test_committed_request_schema_is_current() -> None:
    """request.schema.json matches the code (regenerate: see docs/request-format.md)."""
    committed = json.loads((REPO / "request.schema.json").read_text(encoding="utf-8"))
    assert committed == request_json_schema()
    assert set(committed["required"]) >= {"requester", "purpose", "fields", "delivery", "why"}


@given(count=st.integers(min_value=0, max_value=10**30), unit=st.sampled_from("mhdw"))
def test_any_duration_is_refused_or_ends_on_a_date(count: int, unit: str) -> None:
    """What a request or an approval deadline adds to now never overflows a date."""
    text = f"{count}{unit}"
    if count > 36525 * {"m": 1440, "h": 24, "d": 1, "w": 1 / 7}[unit]:
        with pytest.raises(ValueError, match="longer than 100 years"):
            parse_duration(text)
        return
    duration = parse_duration(text)
    start = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)  # far past any real now
    assert start + duration >= start
