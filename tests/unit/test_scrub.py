"""The scrubber knows every form a secret takes once written down."""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core import scrub
from connector_core.errors import AdapterError
from tests.leaks import leaked

SECRET = "Ab'c\"d\\e%f+g/h=i j\nkÜ€"


@pytest.fixture(autouse=True)
def remembered() -> None:
    scrub.remember(SECRET)


@pytest.mark.parametrize(
    "shown",
    [
        SECRET,
        repr(SECRET),
        repr({"key": SECRET, "other": 'it\'s "quoted"'}),
        ascii(SECRET),
        json.dumps(SECRET),
        json.dumps({"k": SECRET}, ensure_ascii=False),
        quote(SECRET, safe=""),
        quote(SECRET).lower(),
        quote_plus(SECRET),
        base64.b64encode(f"organizer:{SECRET}".encode()).decode(),
        "xyz" + base64.b64encode(f"headers {SECRET} more".encode()).decode(),
        SECRET.encode().decode("latin-1"),
        f"Authorization: Basic {base64.b64encode(SECRET.encode('utf-8')).decode()}",
    ],
    ids=[
        "raw",
        "repr",
        "repr-in-dict",
        "ascii",
        "json",
        "json-unicode",
        "url",
        "url-lower-hex",
        "url-plus",
        "basic-auth",
        "base64-shifted",
        "mojibake",
        "base64-alone",
    ],
)
def test_every_form_is_scrubbed(shown: str) -> None:
    text = f"the server said: {shown} (end)"
    assert leaked(SECRET, [scrub.scrub(text)]) == []
    assert scrub.scrub(text).startswith("the server said: ")


def test_a_secret_handed_out_after_the_message_was_built_is_scrubbed() -> None:
    late = "handed-out-later-7f3a"
    message = f"refused {late}"
    scrub.remember(late)
    assert scrub.scrub(message) == "refused ***"


def test_error_messages_and_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    err = AdapterError(f"echo: {SECRET!r}", hint=f"check {json.dumps(SECRET)}")
    assert leaked(SECRET, [str(err), err.hint or ""]) == []
    with caplog.at_level(logging.INFO):
        logging.getLogger("connector.test").info("header %r", {"auth": SECRET})
    assert leaked(SECRET, [r.getMessage() for r in caplog.records]) == []


def test_ordinary_text_is_left_alone() -> None:
    text = "read 40, shared 7 — connector run members-to-north --json"
    assert scrub.scrub(text) == text


@settings(max_examples=50, deadline=None)
@given(secret=st.text(min_size=6, max_size=30).filter(lambda s: s.strip() == s))
def test_any_secret_in_any_form(secret: str) -> None:
    scrub.forget_all()  # one secret at a time: each example compiles the patterns anew
    scrub.remember(secret)
    shown = [secret, repr(secret), json.dumps(secret), quote(secret, safe=""), quote_plus(secret)]
    assert leaked(secret, [scrub.scrub(f"<{s}>") for s in shown]) == []


ECHOED = "Echoed-Key_4f9a2c7e1b"


@pytest.mark.parametrize("pad", [0, 1, 2, 20, 57, 75])
def test_line_wrapped_mime_base64_is_scrubbed(pad: int) -> None:
    scrub.remember(ECHOED)
    body = base64.encodebytes(("x" * pad + f"X-Civi-Auth: Bearer {ECHOED}\n").encode()).decode()
    for shown in (body, body.replace("\n", "\r\n"), json.dumps(body)):
        assert leaked(ECHOED, [scrub.scrub(shown)]) == [], shown


@pytest.mark.parametrize(
    "shown",
    [
        ECHOED.upper(),
        ECHOED.lower(),
        quote(ECHOED.upper(), safe=""),
        ECHOED.encode().hex(),
        ECHOED.encode().hex().upper(),
        f"Bearer {ECHOED}".encode().hex(),
        "".join(f"\\u{ord(c):04x}" for c in ECHOED),
        "".join(f"\\u{ord(c):04X}" for c in ECHOED),
    ],
    ids=["upper", "lower", "url-upper", "hex", "hex-upper", "hex-in-header", "json-u", "json-U"],
)
def test_case_hex_and_unicode_escapes_are_scrubbed(shown: str) -> None:
    scrub.remember(ECHOED)
    assert leaked(ECHOED, [scrub.scrub(f"server: {shown}.")]) == []


@pytest.mark.parametrize("cut", [slice(0, 8), slice(0, 13), slice(5, 17), slice(9, None)])
def test_a_run_of_eight_characters_of_a_secret_is_scrubbed(cut: slice) -> None:
    scrub.remember(ECHOED)
    part = ECHOED[cut]
    assert scrub.scrub(f"token prefix: {part}.") == "token prefix: ***."
    assert scrub.scrub(f"token prefix: {part.upper()}!") == "token prefix: ***!"


def test_seven_characters_of_a_secret_are_left_alone() -> None:
    scrub.remember(ECHOED)
    assert scrub.scrub(f"id {ECHOED[:7]} ok") == f"id {ECHOED[:7]} ok"


def test_a_word_of_a_secret_is_left_in_other_messages() -> None:
    scrub.remember("wrong-password-42")
    hint = "Create an app password in Nextcloud"
    assert scrub.scrub(hint) == hint
    assert scrub.scrub("echo: wrong-passw") == "echo: ***"


def _as_before(text: str) -> str:
    """What scrubbing with one pattern of every form, Base64 included, gives."""
    every = {re.escape(f) for s in scrub._secrets for f in scrub.forms(s)}
    every |= {scrub._wrapped(c) for s in scrub._secrets for c in scrub._base64_forms(s)}
    pattern = re.compile("|".join(sorted(every, key=len, reverse=True)), re.IGNORECASE)
    return scrub._scrub_runs(pattern.sub(scrub.REDACTED, text), scrub._patterns(text)[1])


def test_a_line_without_base64_of_a_secret_does_not_compile_its_pattern() -> None:
    # the wrapped Base64 cores are most of the compile (about 14 ms for two secrets)
    scrub.remember(ECHOED)
    assert scrub.scrub("organizers-north: read 0, shared 0") == "organizers-north: read 0, shared 0"
    assert scrub._pattern is None
    shown = base64.b64encode(f"Bearer {ECHOED}".encode()).decode()
    assert leaked(ECHOED, [scrub.scrub(shown)]) == []
    assert scrub._pattern is not None


_PIECES = st.sampled_from(
    [" ", "\n", "\\r", "\\n", "\\", "r", "n", "R", "N", "=", "x", "Bearer ", "\t", "é"]
)


@st.composite
def _shown(draw: st.DrawFn) -> str:
    """Text holding a secret's Base64 (whole, cut, wrapped with gaps, case changed), its
    other forms and the gap characters in any order."""
    secret = draw(st.sampled_from([SECRET, ECHOED]))
    encoded = base64.b64encode((draw(st.text(max_size=3)) + secret).encode()).decode()
    if draw(st.booleans()):  # cut anywhere, or only near its ends
        start = draw(st.integers(0, len(encoded)))
        encoded = encoded[start : start + draw(st.integers(0, len(encoded)))]
    else:
        encoded = encoded[draw(st.integers(0, 4)) : len(encoded) - draw(st.integers(0, 4))]
    gaps = draw(st.lists(_PIECES, max_size=len(encoded)))
    wrapped = "".join(c + (gaps[i] if i < len(gaps) else "") for i, c in enumerate(encoded))
    if draw(st.booleans()):
        wrapped = wrapped.swapcase()
    parts = draw(st.lists(st.one_of(_PIECES, st.just(wrapped), st.just(secret[:9])), max_size=6))
    return "".join(parts)


@settings(max_examples=300)
@given(shown=_shown())
def test_scrubbing_without_the_base64_pattern_changes_nothing(shown: str) -> None:
    scrub.forget_all()  # each example decides anew whether the Base64 pattern is needed
    scrub.remember(SECRET)
    scrub.remember(ECHOED)
    assert scrub.scrub(shown) == _as_before(shown)


#: text holding lone surrogates: undecodable bytes kept by surrogateescape (U+DC80-U+DCFF,
#: e.g. from an environment variable) and a surrogate a server's JSON may carry (U+D800)
ODD_TEXT = st.text(st.characters(), min_size=1, max_size=8).map(lambda t: f"caf\udce9{t}\ud800")


@settings(max_examples=50, deadline=None)
@given(value=ODD_TEXT)
def test_values_and_secrets_holding_lone_surrogates_are_scrubbed_not_raised(value: str) -> None:
    """A record value or a secret with undecodable bytes is scrubbed in every form it has
    (its URL forms percent-encode the bytes it stands for), instead of raising."""
    undecodable = quote(value, safe="", errors="surrogatepass")
    message = f"the server said {value} ({undecodable})"
    assert value not in scrub.scrub_values(message, [value])
    assert undecodable not in scrub.scrub_values(message, [value])
    scrub.forget_all()
    scrub.remember(value + "-secret")
    shown = f"<{value}-secret> <{quote(value + '-secret', safe='', errors='surrogatepass')}>"
    assert "-secret" not in scrub.scrub(shown)
