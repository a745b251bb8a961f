"""Telling people about approvals: email (SMTP) and webhooks (JSON POST), never personal data.

Approvers are told when a change set waits for them, fallback approvers when it escalates,
the admin when it is decided or expires. A :class:`Notice` can only hold what may be told:
the job, policy and recipient names, the set's id, counts, canonical field names and the
command that reviews the set. It has no place for a record's values, and refuses any text
that does not look like a name (an email address or a person's name in a field list, say),
so no notification can carry a person's data, whatever its caller passes.

:func:`send` never raises and never waits long: each channel has a timeout, a webhook gets
at most a few quick retries, and every failure comes back as a scrubbed problem text for
the caller to report, so a mail server that is down never blocks a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import smtplib
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal
from urllib.parse import urlsplit

import requests

from connector_core import scrub
from connector_core.config import (
    NOTICE_KINDS,
    Config,
    EmailConfig,
    NotificationsConfig,
    WebhookConfig,
)
from connector_core.credentials import NETWORK, KeyringSecrets, SecretLookup, SecretRef
from connector_core.http import make_retry, make_session
from connector_core.records import is_known_field

#: The header a webhook's HMAC-SHA256 signature travels in: ``sha256=HEX`` over the body.
SIGNATURE_HEADER = "X-Connector-Signature"
#: Webhook attempts at most (the first and its retries), each within the hook's timeout.
WEBHOOK_ATTEMPTS = 3
#: Job, policy and recipient names as connector.yaml may spell them (spaces allowed), but
#: never an address, a phone number, markup or several lines.
_NAME_RE = re.compile(r"^[^\W_][\w .:/()-]{0,199}$")
_SET_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_COUNT_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PERSON_RE = re.compile(r"^[^\W\d_][\w .'-]{0,99}$")
_REVIEW_RE = re.compile(r"^[A-Za-z0-9 ._:/=?&#%+-]{1,300}$")
_EMAIL_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
_SUBJECTS = {
    "waiting": "waits for your approval",
    "escalated": "waits for a fallback approver",
    "decided": "was decided",
    "expired": "expired undecided",
}
_ASKED = {  # a share request's notices without a decision word
    "waiting": "waits for your approval",
    "escalated": "waits for a fallback approver",
    "decided": "was decided",
    "expired": "expired",
}


@dataclasses.dataclass(frozen=True)
class Notice:
    """What people are told about one approval set: names, counts and field names only.

    Raises ValueError (quoting nothing) for a text that is not a name: an address, a phone
    number, several lines. Names of jobs, policies, connections and people that
    connector.yaml accepts always pass.
    """

    kind: Literal["waiting", "escalated", "decided", "expired"]
    job: str
    policy: str
    recipient: str
    set_id: str
    counts: dict[str, int]
    fields: tuple[str, ...]
    review: str
    to: tuple[str, ...]
    decision: str | None = None
    #: what the notice is about: an approval set, or a share request (then ``job`` is the
    #: request's job, and the requester or its approvers are told about the request)
    about: Literal["set", "request"] = "set"

    def __post_init__(self) -> None:
        if self.kind not in NOTICE_KINDS:
            raise ValueError(f"a notice is one of {', '.join(NOTICE_KINDS)}")
        if self.about not in ("set", "request"):
            raise ValueError("a notice is about a set or a request")
        for what in ("job", "policy", "recipient"):
            _require(_NAME_RE, getattr(self, what), f"the notice's {what} must be a name")
        _require(_SET_ID_RE, self.set_id, "the notice's set_id must be an id")
        for key, value in self.counts.items():
            _require(_COUNT_RE, key, "a notice's count names are lowercase identifiers")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("a notice's counts are whole numbers, zero or more")
        for field in self.fields:
            if not is_known_field(field):
                raise ValueError("a notice's fields are canonical field names only")
        _require(_REVIEW_RE, self.review, "the review must be a command or a link, no address")
        for person in self.to:
            if not (_PERSON_RE.match(person) or _EMAIL_RE.match(person)):
                raise ValueError("a notice goes to approvers' names (or email addresses)")
        if self.decision is not None:
            _require(_COUNT_RE, self.decision, "a decision is a word, e.g. approved")
        object.__setattr__(self, "counts", dict(self.counts))
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "to", tuple(self.to))

    def subject(self, network: str = "") -> str:
        """The one-line summary: the email's subject, a chat message's first line."""
        prefix = f"[{network}] " if network else ""
        if self.about == "request":
            said = self.decision.replace("_", " ") if self.decision else _ASKED[self.kind]
            return f"{prefix}Share request {self.job}: {said}"
        return (
            f"{prefix}Approval set {self.set_id} ({self.job} -> {self.recipient}) "
            f"{_SUBJECTS[self.kind]}" + (f": {self.decision}" if self.decision else "")
        )

    def text(self, network: str = "") -> str:
        """The plain-text body of an email."""
        counts = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in self.counts.items())
        lines = [
            self.subject(network),
            "",
            f"Job:       {self.job}",
            f"Policy:    {self.policy}",
            f"Recipient: {self.recipient}",
            f"Changes:   {counts or 'none'}",
            f"Fields:    {', '.join(self.fields) or 'none'}",
        ]
        if self.decision:
            lines.append(f"Decision:  {self.decision}")
        lines += ["", "Review it with:", f"    {self.review}", "", _FOOTER]
        return "\n".join(lines) + "\n"

    def payload(self, network: str = "") -> dict[str, Any]:
        """The webhook's JSON document (``text`` is what chat bridges post)."""
        return {
            "kind": self.kind,
            "network": network,
            "job": self.job,
            "policy": self.policy,
            "recipient": self.recipient,
            "set_id": self.set_id,
            "counts": self.counts,
            "fields": list(self.fields),
            "review": self.review,
            "to": list(self.to),
            "decision": self.decision,
            "about": self.about,
            "text": f"{self.subject(network)}. Review: {self.review}",
        }


_FOOTER = (
    "This notice holds no personal data: only counts and field names. "
    "What the recipient would receive is shown by the review command."
)


def _require(pattern: re.Pattern[str], value: object, message: str) -> None:
    # The message never quotes the value: it may be exactly the data that must not leave.
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(message)


def send(
    notice: Notice,
    config: Config | NotificationsConfig | None,
    *,
    emails: Mapping[str, str] | None = None,
    secrets: SecretLookup | None = None,
    network: str = "",
) -> list[str]:
    """Tell the notice's people by every configured channel; return problems, never raise.

    `config` is the loaded connector.yaml (its ``notifications:`` section, its network's
    secrets and, when declared, its approvers' emails) or a bare ``notifications`` section.
    `emails` maps people's names to addresses (a name in ``to`` that is an address is used as
    it is). Each problem is a scrubbed text naming the channel and what failed.
    """
    try:
        settings, secrets, network = _settings(config, secrets, network)
        if settings is None:
            return []
        book = {**_approver_emails(config), **(emails or {})}
        problems: list[str] = []
        if settings.email is not None:
            problems += _send_email(notice, settings, book, secrets, network)
        for number, hook in enumerate(settings.webhooks, 1):
            if notice.kind in hook.kinds:
                problems += _send_webhook(notice, hook, number, secrets, network)
    except Exception as exc:  # a notice must never stop the run that sends it
        problems = [f"notifications: unexpected {type(exc).__name__}"]
    return [scrub.scrub(problem) for problem in problems]


def _settings(
    config: Config | NotificationsConfig | None, secrets: SecretLookup | None, network: str
) -> tuple[NotificationsConfig | None, SecretLookup, str]:
    if isinstance(config, Config):
        lookup = secrets or config.secrets(NETWORK)
        return config.model.notifications, lookup, network or config.model.network.name
    return config, secrets or KeyringSecrets(network or "default", NETWORK), network


def _approver_emails(config: object) -> dict[str, str]:
    """Names -> emails of the ``approvers:`` declared in connector.yaml, when there are any."""
    approvers = getattr(getattr(config, "model", None), "approvers", None)
    if isinstance(approvers, Mapping):
        people: Iterable[tuple[Any, Any]] = approvers.items()
    elif isinstance(approvers, list | tuple):
        people = ((getattr(p, "name", None), p) for p in approvers)
    else:
        return {}
    found = {}
    for name, person in people:
        email = (
            person.get("email") if isinstance(person, Mapping) else getattr(person, "email", None)
        )
        if isinstance(name, str) and isinstance(email, str):
            found[name] = email
    return found


def _addresses(
    notice: Notice, admin: str | None, book: Mapping[str, str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """(who, address) pairs to email, and a problem for each person without an address."""
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    for person in notice.to:
        address = person if _EMAIL_RE.match(person) else book.get(person)
        if address is None:
            problems.append(
                f"email: no address for {person!r}: give them an email in connector.yaml "
                "(approvers:), or they will not be told"
            )
        else:
            pairs.append((person, address))
    if admin is not None and notice.kind in ("decided", "expired"):
        pairs.append(("the admin", admin))
    unique = {address.lower(): (who, address) for who, address in reversed(pairs)}
    return list(reversed(unique.values())), problems


def _send_email(
    notice: Notice,
    settings: NotificationsConfig,
    book: Mapping[str, str],
    secrets: SecretLookup,
    network: str,
) -> list[str]:
    email = settings.email
    assert email is not None
    pairs, problems = _addresses(notice, settings.admin, book)
    if not pairs:
        return problems
    where = f"email via {email.host}:{_port(email)}"

    def deliver(smtp: smtplib.SMTP) -> None:
        for who, address in pairs:
            try:
                smtp.send_message(_message(notice, email.sender, address, network))
            except smtplib.SMTPRecipientsRefused:
                problems.append(f"{where}: the server refused the address of {who!r}")
            except smtplib.SMTPResponseException as exc:
                problems.append(f"{where}: sending to {who!r} failed ({exc.smtp_code})")

    failure = _with_smtp(email, secrets, deliver)
    if failure is not None:
        problems.append(f"{where}: {failure}; the notice was not sent")
    return problems


def _with_smtp(
    email: EmailConfig, secrets: SecretLookup, action: Callable[[smtplib.SMTP], None]
) -> str | None:
    """Connect (TLS, login), run `action`, quit; what went wrong, or None."""
    try:
        with _connect(email, secrets) as smtp:
            action(smtp)
    except smtplib.SMTPAuthenticationError as exc:
        return (
            f"the server refused the login ({exc.smtp_code}); check username:, and store the "
            "password again with `connector credentials set network KEY --force`"
        )
    except (smtplib.SMTPException, OSError) as exc:
        return _describe(exc)
    except Exception as exc:  # SecretMissing and the like: say what, keep the run going
        return str(exc)
    return None


def check(
    config: Config | NotificationsConfig | None,
    *,
    secrets: SecretLookup | None = None,
    network: str = "",
) -> list[tuple[bool, str]]:
    """Check each channel without telling anyone: the SMTP server answers, TLS and the login
    work (then QUIT, nothing sent); each webhook's secrets resolve (nothing is posted).

    Returns one (ok, text) per channel, scrubbed; never raises.
    """
    results: list[tuple[bool, str]] = []
    try:
        settings, lookup, network = _settings(config, secrets, network)
        if settings is None:
            return []
        if settings.email is not None:
            email = settings.email
            where = f"email via {email.host}:{_port(email)}"
            failure = _with_smtp(email, lookup, lambda smtp: None)
            results.append((failure is None, f"{where}: {failure or 'connects, ' + _how(email)}"))
        for number, hook in enumerate(settings.webhooks, 1):
            results.append(_check_webhook(hook, number, lookup))
    except Exception as exc:  # a check must report, not crash the doctor
        results.append((False, f"notifications: unexpected {type(exc).__name__}"))
    return [(ok, scrub.scrub(text)) for ok, text in results]


def _how(email: EmailConfig) -> str:
    tls = {"starttls": "STARTTLS", "ssl": "TLS", "none": "no TLS (local relay)"}[email.security]
    return f"{tls}, " + ("login accepted" if email.username else "no login")


def _check_webhook(hook: WebhookConfig, number: int, secrets: SecretLookup) -> tuple[bool, str]:
    try:
        parts = urlsplit(_resolve(hook.url, secrets))
        if hook.secret is not None:
            _resolve(hook.secret, secrets)
    except Exception as exc:  # SecretMissing and the like
        return False, f"webhook {number}: {exc}"
    signed = "signed" if hook.secret is not None else "unsigned"
    kinds = ", ".join(hook.kinds)
    return True, f"webhook {number} ({parts.scheme}://{parts.hostname}): {signed}; {kinds}"


def _port(email: EmailConfig) -> int:
    return email.port or {"starttls": 587, "ssl": 465, "none": 25}[email.security]


def _tls(email: EmailConfig) -> ssl.SSLContext:
    cafile = str(email.ca_bundle) if email.ca_bundle else None
    return ssl.create_default_context(cafile=cafile)


def _connect(email: EmailConfig, secrets: SecretLookup) -> smtplib.SMTP:
    password = secrets.resolve(email.password) if email.password else None
    smtp: smtplib.SMTP
    if email.security == "ssl":
        smtp = smtplib.SMTP_SSL(
            email.host, _port(email), timeout=email.timeout, context=_tls(email)
        )
    else:
        smtp = smtplib.SMTP(email.host, _port(email), timeout=email.timeout)
    try:
        if email.security == "starttls":
            smtp.starttls(context=_tls(email))
        if email.username and password is not None:
            smtp.login(email.username, password.get_secret_value())
    except BaseException:
        smtp.close()
        raise
    return smtp


def _message(notice: Notice, sender: str, address: str, network: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = address
    message["Subject"] = notice.subject(network)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, please
    message.set_content(notice.text(network))
    return message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the server did not answer in time"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed (certificate not trusted? give ca_bundle: for a private CA)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server up, is the port right?)"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return "the server does not offer STARTTLS (use security: ssl, or another port)"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the server answered {exc.smtp_code}"
    return f"{type(exc).__name__}"


def _send_webhook(
    notice: Notice, hook: WebhookConfig, number: int, secrets: SecretLookup, network: str
) -> list[str]:
    where = f"webhook {number}"
    try:
        url = _resolve(hook.url, secrets)
        parts = urlsplit(url)
        where = f"webhook {number} ({parts.scheme}://{parts.hostname})"  # a path may be a token
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return [f"{where}: the URL is not an http(s) URL"]
        body = json.dumps(
            {**notice.payload(network), "id": str(uuid.uuid4()), "sent_at": _now()},
            sort_keys=True,
        ).encode()
        headers = {"Content-Type": "application/json"}
        if hook.secret is not None:
            key = _resolve(hook.secret, secrets).encode()
            digest = hmac.new(key, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        retry = make_retry(total=WEBHOOK_ATTEMPTS - 1, backoff=0.2, backoff_max=2.0)
        with make_session("notify", retry=retry.new(respect_retry_after_header=False)) as session:
            response = session.post(url, data=body, headers=headers, timeout=hook.timeout)
    except requests.Timeout:
        return [f"{where}: the server did not answer in time; the notice was not sent"]
    except requests.RequestException:
        return [f"{where}: cannot reach the server; the notice was not sent"]
    except Exception as exc:  # SecretMissing and the like
        return [f"{where}: {exc}"]
    if response.status_code >= 300:
        return [f"{where}: the server answered HTTP {response.status_code}; not delivered"]
    return []


def _resolve(value: str | SecretRef, secrets: SecretLookup) -> str:
    return value if isinstance(value, str) else secrets.resolve(value).get_secret_value()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
