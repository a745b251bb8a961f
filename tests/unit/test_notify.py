"""Notifications (connector_core.notify) against a real SMTP server and a real HTTP server."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.config import EmailConfig, NotificationsConfig, WebhookConfig, load_config
from connector_core.credentials import SecretRef, StaticSecrets
from connector_core.errors import ConfigValidationError
from connector_core.notify import SIGNATURE_HEADER, Notice, check, send
from connector_core.plugins import collect_adapters, make_plugin_manager
from connector_core.testing.server import (
    LoopbackServer,
    dispatching_handler,
    read_body,
    send_answer,
)

SMTP_PASSWORD = "correct-horse-battery-staple"
HOOK_KEY = "webhook-signing-key-0123456789"
TOKEN_PATH = "/hooks/s3cr3t-t0ken-abcdefghijkl"
PEOPLE = {"ana": "ana@north.example.org", "ben": "ben@south.example.org"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    """An aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return context


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A plain SMTP server on loopback (a relay on this machine)."""
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def smtp_starttls(tls_files: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    """An SMTP server that wants STARTTLS and a login."""
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=_server_context(tls_files),
        require_starttls=True,
        authenticator=_authenticate,
        auth_require_tls=True,
    )
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def smtp_ssl(tls_files: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    """An SMTP server speaking TLS from the first byte (port 465 style)."""
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, ssl_context=_server_context(tls_files)
    )
    controller.start()
    yield inbox, port
    controller.stop()


class Hook(LoopbackServer):
    """A webhook receiver that answers with the statuses it is given, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        super().__init__()
        self.statuses = list(statuses or [])
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return dispatching_handler(self._serve, ["POST"])

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        body = read_body(handler)
        with self.lock:
            self.requests.append((handler.path, dict(handler.headers), body))
            status = self.statuses.pop(0) if self.statuses else 200
        send_answer(handler, status, {"Content-Type": "text/plain"}, b"ok")


def notice(kind: str = "waiting", **changes: Any) -> Notice:
    values: dict[str, Any] = {
        "kind": kind,
        "job": "partner-campaign",
        "policy": "policies/partner.yaml",
        "recipient": "partner-csv",
        "set_id": "3f2a9c01",
        "counts": {"first_shares": 12, "new_fields": 3},
        "fields": ("first_name", "email", "city"),
        "review": "connector approvals show 3f2a9c01",
        "to": ("ana", "ben"),
    }
    return Notice(**{**values, **changes})


def email_settings(port: int, **changes: Any) -> NotificationsConfig:
    email = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "sender": "connector@example.org",
    }
    return NotificationsConfig(admin="admin@example.org", email=EmailConfig(**{**email, **changes}))


SECRETS = StaticSecrets(
    {
        "smtp_password": SMTP_PASSWORD,
        "hook_key": HOOK_KEY,
        "hook_url": "http://placeholder.example/hooks/tok-123456789",
    }
)


def test_waiting_notice_reaches_each_approver(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    problems = send(notice(), email_settings(port), emails=PEOPLE, network="North Network")
    assert problems == []
    assert sorted(rcpt[0] for rcpt, _ in inbox.messages) == sorted(PEOPLE.values())
    _, message = inbox.messages[0]
    body = message.get_payload(decode=True).decode()
    assert message["Subject"].startswith("[North Network] Approval set 3f2a9c01")
    assert message["Auto-Submitted"] == "auto-generated"
    assert "12 first shares" in body
    assert "first_name, email, city" in body
    assert "connector approvals show 3f2a9c01" in body
    for _, other in inbox.messages:  # approvers of other organizations never see each other
        assert len(other.get_all("To")) == 1


def test_decided_and_expired_tell_the_admin(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    assert send(notice("decided", decision="approved", to=()), email_settings(port)) == []
    assert send(notice("expired", to=()), email_settings(port)) == []
    assert [rcpt for rcpt, _ in inbox.messages] == [["admin@example.org"]] * 2
    assert "approved" in inbox.messages[0][1]["Subject"]
    assert send(notice("waiting", to=()), email_settings(port)) == []
    assert len(inbox.messages) == 2  # the admin is not told that a set waits


def test_starttls_with_login(
    smtp_starttls: tuple[Inbox, int], tls_files: tuple[Path, Path]
) -> None:
    inbox, port = smtp_starttls
    settings = email_settings(
        port,
        security="starttls",
        username="connector",
        password=SecretRef(secret="smtp_password"),
        ca_bundle=tls_files[0],
    )
    assert send(notice(), settings, emails=PEOPLE, secrets=SECRETS) == []
    assert len(inbox.messages) == 2


def test_refused_login_is_a_problem_without_the_password(
    smtp_starttls: tuple[Inbox, int], tls_files: tuple[Path, Path]
) -> None:
    inbox, port = smtp_starttls
    settings = email_settings(
        port,
        security="starttls",
        username="connector",
        password=SecretRef(secret="smtp_password"),
        ca_bundle=tls_files[0],
    )
    wrong = StaticSecrets({"smtp_password": "not-the-password-at-all"})
    problems = send(notice(), settings, emails=PEOPLE, secrets=wrong)
    assert len(problems) == 1
    assert "refused the login (535)" in problems[0]
    assert "not-the-password" not in problems[0]
    assert inbox.messages == []


def test_untrusted_certificate_is_a_problem(smtp_starttls: tuple[Inbox, int]) -> None:
    _, port = smtp_starttls
    problems = send(notice(), email_settings(port, security="starttls"), emails=PEOPLE)
    assert len(problems) == 1
    assert "TLS failed" in problems[0]


def test_implicit_tls(smtp_ssl: tuple[Inbox, int], tls_files: tuple[Path, Path]) -> None:
    inbox, port = smtp_ssl
    settings = email_settings(port, security="ssl", ca_bundle=tls_files[0])
    assert send(notice(), settings, emails=PEOPLE) == []
    assert len(inbox.messages) == 2


def test_server_down_is_a_problem_not_an_exception() -> None:
    problems = send(notice(), email_settings(free_port(), timeout=2), emails=PEOPLE)
    assert len(problems) == 1
    assert "connection refused" in problems[0]
    assert "the notice was not sent" in problems[0]


def test_a_person_without_an_address_is_reported(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    problems = send(notice(to=("ana", "carla")), email_settings(port), emails=PEOPLE)
    assert problems == [
        "email: no address for 'carla': give them an email in connector.yaml (approvers:), "
        "or they will not be told"
    ]
    assert [rcpt for rcpt, _ in inbox.messages] == [[PEOPLE["ana"]]]


def test_an_address_in_to_is_used_as_it_is(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    assert send(notice(to=("fallback@west.example.org",)), email_settings(port)) == []
    assert [rcpt for rcpt, _ in inbox.messages] == [["fallback@west.example.org"]]


def test_no_section_sends_nothing() -> None:
    assert send(notice(), None) == []
    assert send(notice(), NotificationsConfig()) == []


def test_webhook_gets_json_with_a_signature() -> None:
    with Hook() as hook:
        settings = NotificationsConfig(
            webhooks=[
                WebhookConfig(url=hook.base_url + "/notify", secret=SecretRef(secret="hook_key"))
            ]
        )
        assert send(notice(), settings, secrets=SECRETS, network="North") == []
    [(path, headers, body)] = hook.requests
    assert path == "/notify"
    assert headers["Content-Type"] == "application/json"
    expected = hmac.new(HOOK_KEY.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    document = json.loads(body)
    assert document["kind"] == "waiting"
    assert document["network"] == "North"
    assert document["counts"] == {"first_shares": 12, "new_fields": 3}
    assert document["fields"] == ["first_name", "email", "city"]
    assert document["review"] == "connector approvals show 3f2a9c01"
    assert "connector approvals show 3f2a9c01" in document["text"]
    assert document["id"]
    assert document["sent_at"]


def test_webhook_kinds_filter() -> None:
    with Hook() as hook:
        settings = NotificationsConfig(
            webhooks=[WebhookConfig(url=hook.base_url, kinds=["decided"])]
        )
        assert send(notice("waiting"), settings) == []
        assert send(notice("decided", decision="denied"), settings) == []
    assert [json.loads(body)["kind"] for _, _, body in hook.requests] == ["decided"]


def test_webhook_500_is_a_problem_and_the_token_path_stays_hidden() -> None:
    with Hook([500]) as hook:
        secrets = StaticSecrets({"hook_url": hook.base_url + TOKEN_PATH})
        settings = NotificationsConfig(webhooks=[WebhookConfig(url=SecretRef(secret="hook_url"))])
        problems = send(notice(), settings, secrets=secrets)
    # The whole URL is the secret here: even its host is scrubbed from the problem.
    assert problems == ["webhook 1 (***): the server answered HTTP 500; not delivered"]
    assert len(hook.requests) == 1


def test_webhook_busy_is_retried() -> None:
    with Hook([503]) as hook:
        settings = NotificationsConfig(webhooks=[WebhookConfig(url=hook.base_url)])
        assert send(notice(), settings) == []
    assert len(hook.requests) == 2


def test_webhook_down_is_a_problem() -> None:
    settings = NotificationsConfig(
        webhooks=[WebhookConfig(url=f"http://127.0.0.1:{free_port()}{TOKEN_PATH}", timeout=2)]
    )
    problems = send(notice(), settings)
    assert len(problems) == 1
    assert "cannot reach the server" in problems[0]
    assert "s3cr3t" not in problems[0]


def test_missing_secret_is_a_problem() -> None:
    settings = NotificationsConfig(
        webhooks=[WebhookConfig(url="http://127.0.0.1:9/", secret=SecretRef(secret="nowhere"))]
    )
    problems = send(notice(), settings, secrets=StaticSecrets({}))
    assert len(problems) == 1
    assert "no secret is available" in problems[0]


def test_names_from_connector_yaml_pass() -> None:
    made = notice(job="North organizers (weekly)", recipient="organizers-north", policy="p_1")
    assert made.job == "North organizers (weekly)"


# --- no personal data, by construction ---------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"fields": ("email", "jane.doe@example.org")},
        {"fields": ("Jane Doe",)},
        {"job": "Jane\nDoe"},
        {"job": "jane@example.org"},
        {"recipient": "jane@example.org"},
        {"set_id": "+1 555 0100"},
        {"policy": "<b>12 Main Street</b>"},
        {"review": "mail jane@example.org"},
        {"counts": {"Jane Doe": 1}},
        {"counts": {"first_shares": -1}},
        {"decision": "approved by jane@example.org"},
        {"to": ("<script>",)},
        {"kind": "leak"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_notice_refuses_what_is_not_a_name(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"notice|name|count|decision|review") as err:
        notice(**changes)
    for value in changes.values():
        for part in value if isinstance(value, tuple | dict) else (value,):
            if len(str(part)) > 6:
                assert str(part) not in str(err.value)


PERSON = st.fixed_dictionaries(
    {
        "first_name": st.text("ÁÉQXZqxzáéñ", min_size=7, max_size=12),
        "email": st.from_regex(r"\A[qxz]{7,10}@[qxz]{5}\.example\Z"),
        "phone": st.from_regex(r"\A\+49 [0-9]{9}\Z"),
        "city": st.text("QXZqxzØø", min_size=7, max_size=12),
    }
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(people=st.lists(PERSON, min_size=1, max_size=5))
def test_notices_carry_no_record_values(
    smtp: tuple[Inbox, int], people: list[dict[str, str]]
) -> None:
    """What an approval stage knows of a set (its records) never reaches a notification."""
    inbox, port = smtp
    inbox.messages.clear()
    fields = tuple(sorted({name for person in people for name in person if name != "phone"}))
    summary = notice(counts={"first_shares": len(people)}, fields=fields)
    with Hook() as hook:
        settings = email_settings(port)
        settings.webhooks.append(WebhookConfig(url=hook.base_url))
        assert send(summary, settings, emails=PEOPLE) == []
    sent = [m.as_bytes() for _, m in inbox.messages] + [body for _, _, body in hook.requests]
    assert len(sent) == 3
    for blob in sent:
        text = blob.decode("utf-8", "replace")
        for person in people:
            for value in person.values():
                assert value not in text
                assert json.dumps(value)[1:-1] not in text


# --- configuration -------------------------------------------------------------------------

CONFIG = """\
version: 1
network: {name: North}
connections: {}
notifications:
  admin: admin@example.org
  email:
    host: smtp.example.org
    sender: connector@example.org
    username: connector
    password: {secret: smtp_password}
  webhooks:
    - url: {secret: mattermost_hook}
      secret: {env: HOOK_SIGNING_KEY}
      kinds: [waiting, escalated]
"""


def test_the_section_loads(tmp_path: Path) -> None:
    path = tmp_path / "connector.yaml"
    path.write_text(CONFIG)
    config = load_config(path, collect_adapters(make_plugin_manager()))
    section = config.model.notifications
    assert section is not None
    assert section.email is not None
    assert section.email.security == "starttls"
    assert section.webhooks[0].kinds == ["waiting", "escalated"]


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        (
            "    host: smtp.example.org\n",
            "    host: smtp.example.org\n    security: none\n",
            7,
            "only sent over TLS",
        ),
        (
            "    password: {secret: smtp_password}\n",
            "    password: hunter2-hunter2\n",
            10,
            "never live in connector.yaml",
        ),
        ("  admin: admin@example.org", "  admin: the admin", 5, "one email address"),
        (
            "    - url: {secret: mattermost_hook}",
            "    - url: https://u:p@chat.example.org/h",
            12,
            "user name or password",
        ),
        ("      kinds: [waiting, escalated]", "      kinds: [waiting, approved]", 14, "kinds"),
    ],
    ids=["plain-password", "literal-secret", "admin", "url-credentials", "kind"],
)
def test_section_mistakes_name_the_line(
    tmp_path: Path, old: str, new: str, line: int, message: str
) -> None:
    path = tmp_path / "connector.yaml"
    assert old in CONFIG
    path.write_text(CONFIG.replace(old, new))
    with pytest.raises(ConfigValidationError) as err:
        load_config(path, collect_adapters(make_plugin_manager()))
    assert f"connector.yaml:{line}" in str(err.value)
    assert message in str(err.value)
    assert "u:p@" not in str(err.value)


def test_the_documented_section_loads(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "notifications.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "connector.yaml"
    path.write_text(block)
    config = load_config(path, collect_adapters(make_plugin_manager()))
    assert config.model.notifications is not None
    assert len(config.model.notifications.webhooks) == 2


def test_documented_webhook_check_accepts_our_signature() -> None:
    text = (Path(__file__).parents[2] / "docs" / "notifications.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    body = b'{"kind": "waiting"}'
    header = "sha256=" + hmac.new(HOOK_KEY.encode(), body, hashlib.sha256).hexdigest()
    assert namespace["genuine"](body, header, HOOK_KEY.encode())
    assert not namespace["genuine"](body + b" ", header, HOOK_KEY.encode())


# --- checking the channels (connector doctor) -----------------------------------------------


def test_check_logs_in_and_sends_nothing(
    smtp_starttls: tuple[Inbox, int], tls_files: tuple[Path, Path]
) -> None:
    inbox, port = smtp_starttls
    settings = email_settings(
        port,
        security="starttls",
        username="connector",
        password=SecretRef(secret="smtp_password"),
        ca_bundle=tls_files[0],
    )
    settings.webhooks.append(
        WebhookConfig(url=SecretRef(secret="hook_url"), secret=SecretRef(secret="hook_key"))
    )
    (mail_ok, mail), (hook_ok, hook) = check(settings, secrets=SECRETS)
    assert (mail_ok, mail) == (
        True,
        f"email via 127.0.0.1:{port}: connects, STARTTLS, login accepted",
    )
    assert hook_ok
    assert hook.startswith("webhook 1 (")
    assert hook.endswith("): signed; waiting, escalated, decided, expired")
    assert "tok-" not in hook
    wrong = StaticSecrets({"smtp_password": "not-the-password-at-all"})
    [(ok, text)] = check(email_settings(port, **_tls_login(tls_files)), secrets=wrong)
    assert not ok
    assert "refused the login (535)" in text
    assert inbox.messages == []


def _tls_login(tls_files: tuple[Path, Path]) -> dict[str, Any]:
    return {
        "security": "starttls",
        "username": "connector",
        "password": SecretRef(secret="smtp_password"),
        "ca_bundle": tls_files[0],
    }


def test_doctor_checks_notifications(
    demo: Path, smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from connector_core.cli import build_cli

    inbox, port = smtp
    config = demo / "connector.yaml"
    config.write_text(
        config.read_text()
        + "\nnotifications:\n  admin: admin@example.org\n"
        + f"  email: {{host: 127.0.0.1, port: {port}, security: none, "
        + "sender: connector@example.org}\n"
        + "  webhooks:\n    - url: {secret: chat_hook}\n"
    )
    monkeypatch.setenv("CONNECTOR_DEMO_HASH_KEY", "demo-hash-key-for-tests")
    monkeypatch.chdir(demo)
    args = ["doctor"]
    result = CliRunner().invoke(build_cli(args), args, prog_name="connector")
    assert f"ok   notifications: email via 127.0.0.1:{port}: connects, no TLS" in result.stdout
    assert "FAIL notifications: webhook 1: " in result.stdout
    assert "chat_hook" in result.stdout
    assert result.exit_code == 3
    assert inbox.messages == []
    listed = CliRunner().invoke(
        build_cli(["credentials", "list"]), ["credentials", "list"], prog_name="connector"
    )
    assert "notifications.webhooks.0.url" in listed.stdout


def test_two_notification_secrets_cannot_share_a_variable(tmp_path: Path) -> None:
    path = tmp_path / "connector.yaml"
    path.write_text(CONFIG.replace("{env: HOOK_SIGNING_KEY}", "{secret: smtp.password}"))
    with pytest.raises(ConfigValidationError) as err:
        load_config(path, collect_adapters(make_plugin_manager()))
    assert "connector.yaml:13:" in str(err.value)
    assert "CONNECTOR_SECRET_NETWORK_SMTP_PASSWORD" in str(err.value)


@pytest.mark.parametrize(
    ("kind", "decision", "said"),
    [
        ("waiting", None, "waits for your approval"),
        ("expired", "expired", "expired"),
        ("decided", "taken_back", "taken back"),
        ("decided", "revoked", "revoked"),
    ],
)
def test_a_share_request_notice_speaks_of_the_request(
    kind: str, decision: str | None, said: str
) -> None:
    """A requester is told about their request, not about an "approval set ... undecided"."""
    told = notice(kind, about="request", job="request-sunrise", decision=decision)
    assert told.subject("North") == f"[North] Share request request-sunrise: {said}"
    assert "Approval set" not in told.text("North")
