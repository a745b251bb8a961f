"""One way to make HTTP sessions for adapters: timeouts, polite retries, errors translated once.

Retries use urllib3's ``Retry`` (exponential backoff with jitter, ``Retry-After`` honoured,
a bounded number of attempts) on connection errors and 429/502/503/504 — for every method,
because adapters write idempotently (deterministic keys, upserts). 401/403 are never retried.
:func:`http_errors` turns ``requests`` exceptions into the engine's error classes, once, at
the adapter boundary, so the engine knows what to do next and the admin what to fix.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from connector_core import __version__
from connector_core.errors import AdapterUnavailable, AuthenticationFailed, ConfigError
from connector_core.scrub import scrub

USER_AGENT = f"commons-connector/{__version__}"
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def make_retry(*, total: int = 5, backoff: float = 0.5, backoff_max: float = 30.0) -> Retry:
    """The retry policy: bounded attempts, exponential backoff with jitter, Retry-After."""
    return Retry(
        total=total,
        connect=total,
        read=total,
        status=total,
        other=0,
        allowed_methods=None,  # adapters' writes are idempotent; retry every method
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        backoff_max=backoff_max,
        backoff_jitter=backoff / 2,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last response reaches the adapter, which explains it
    )


def make_session(
    adapter: str,
    *,
    verify: bool | str = True,
    retry: Retry | None = None,
    pool_size: int = 4,
) -> requests.Session:
    """A Session with our user agent, TLS verification (or a CA bundle path) and retries."""
    session = requests.Session()
    session.headers["User-Agent"] = f"{USER_AGENT} {adapter}"
    session.verify = verify
    mounted = HTTPAdapter(max_retries=retry or make_retry(), pool_maxsize=pool_size)
    session.mount("http://", mounted)
    session.mount("https://", mounted)
    return session


@contextlib.contextmanager
def http_errors(what: str, *, timeout_hint: str | None = None) -> Iterator[None]:
    """Translate ``requests`` failures into AdapterUnavailable / AuthenticationFailed.

    `what` names the connection for the message (``"civicrm connection 'crm'"``); messages
    never include request bodies, headers or URLs with credentials.
    """
    try:
        yield
    except requests.Timeout:
        raise AdapterUnavailable(
            f"{what}: the server did not answer in time",
            hint=timeout_hint or "Check the server, or raise `timeout:` in the connection.",
        ) from None
    except requests.exceptions.SSLError:
        raise AdapterUnavailable(
            f"{what}: the TLS certificate could not be verified",
            hint="Fix the server's certificate, or give `ca_bundle:` for a private CA.",
        ) from None
    except requests.ConnectionError:
        raise AdapterUnavailable(
            f"{what}: cannot connect to the server",
            hint="Check the URL and that the server is up; the next run resumes.",
        ) from None
    except (requests.exceptions.InvalidHeader, UnicodeEncodeError):
        # Both messages quote the header value: a credential. Name the problem, not the value.
        raise ConfigError(
            f"{what}: a credential holds characters an HTTP header cannot carry (a line "
            "break, a control character, or a letter outside Latin-1)",
            hint="Store the credential again as the server issued it (`connector credentials "
            "set CONNECTION KEY --force`).",
        ) from None
    except requests.exceptions.RetryError:
        raise AdapterUnavailable(
            f"{what}: the server kept answering 'busy' after several retries",
            hint="The next run resumes; check the server's load or rate limits.",
        ) from None


def server_text(text: str, limit: int = 200) -> str:
    """At most `limit` characters of what a server answered, for an error message: scrubbed
    of secrets *before* it is cut, so that no part of an echoed credential survives the cut."""
    return scrub(text)[:limit]


_ENCLOSED = re.compile(r"['\"`{\[].*['\"`}\]]", re.DOTALL)


def write_error_text(text: str, limit: int = 200) -> str:
    """What a server answered to a write, made safe for an error message about a record.

    Servers quote what they were sent (``Duplicate entry '...' for key``, ``'...' is not a
    valid option for field prefix_id``), and that is a person's data, with quotes and
    brackets of its own (``O'Brien``) that no parser can pair reliably. So everything from
    the first quote (``'``, ``"``, a backtick), ``{`` or ``[`` to the last quote, ``}`` or
    ``]`` becomes ``'…'``; secrets are scrubbed and the rest cut to `limit` characters.
    What stays names the kind of failure, and the field when the server names it after the
    quoted part. (The sync engine also scrubs the record's values from every error it
    reports; this keeps cut and transformed copies out as well.)"""
    return server_text(_ENCLOSED.sub("'…'", text), limit)


def raise_for_auth(response: requests.Response, what: str, *, hint: str) -> None:
    """401 and 403 are fatal and never retried: raise AuthenticationFailed with `hint`."""
    if response.status_code in (401, 403):
        raise AuthenticationFailed(
            f"{what}: the server refused our credentials (HTTP {response.status_code})",
            hint=hint,
        )
