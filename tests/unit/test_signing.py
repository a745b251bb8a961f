"""Signed statements (connector_core.signing): SSHSIG, checked against the real ssh-keygen."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core import signing
from connector_core.errors import ConnectorError
from connector_core.signing import (
    NAMESPACE_APPROVAL,
    NAMESPACE_REQUEST,
    PublicKey,
    SignatureError,
    load_public_key,
    sign,
    signer,
    verify,
)

KINDS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
    "rsa": ["-t", "rsa", "-b", "2048"],
}
MESSAGE = b'{"set": "3f2a", "decision": "approve", "policy_hash": "sha256:ab12"}\n'

KeyMaker = Callable[..., tuple[Path, PublicKey]]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, ssh_keygen: str) -> KeyMaker:
    """Makes (private key path, public key) pairs with the real ssh-keygen, once per name."""
    folder = tmp_path_factory.mktemp("keys")
    made: dict[tuple[str, str, str], tuple[Path, PublicKey]] = {}

    def make(
        kind: str = "ed25519", name: str = "alice", passphrase: str = ""
    ) -> tuple[Path, PublicKey]:
        if (kind, name, passphrase) not in made:
            path = folder / f"{name}-{kind}{'-pw' if passphrase else ''}"
            subprocess.run(
                [
                    ssh_keygen,
                    "-q",
                    *KINDS[kind],
                    "-N",
                    passphrase,
                    "-C",
                    f"{name}@example.org",
                    "-f",
                    str(path),
                ],
                check=True,
            )
            public = load_public_key(path.with_suffix(".pub").read_text())
            made[kind, name, passphrase] = (path, public)
        return made[kind, name, passphrase]

    return make


def _keygen_sign(ssh_keygen: str, key: Path, namespace: str, message: bytes, folder: Path) -> str:
    data = folder / "message"
    data.write_bytes(message)
    subprocess.run(
        [ssh_keygen, "-q", "-Y", "sign", "-f", str(key), "-n", namespace, str(data)],
        check=True,
        capture_output=True,
    )
    return (folder / "message.sig").read_text()


def _keygen_verify(
    ssh_keygen: str, key: PublicKey, namespace: str, message: bytes, signature: str, folder: Path
) -> subprocess.CompletedProcess[bytes]:
    (folder / "allowed").write_text(f"alice@example.org {key.text}\n")
    (folder / "check.sig").write_text(signature)
    return subprocess.run(
        [
            ssh_keygen,
            "-Y",
            "verify",
            "-f",
            str(folder / "allowed"),
            "-I",
            "alice@example.org",
            "-n",
            namespace,
            "-s",
            str(folder / "check.sig"),
        ],
        input=message,
        capture_output=True,
        check=False,
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip(keys: KeyMaker, kind: str) -> None:
    path, public = keys(kind)
    signature = sign(MESSAGE, path, NAMESPACE_APPROVAL)
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----\n")
    verify(MESSAGE, signature, public, NAMESPACE_APPROVAL)
    assert signer(signature) == public


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_ssh_keygen_verifies_ours(
    keys: KeyMaker, kind: str, ssh_keygen: str, tmp_path: Path
) -> None:
    path, public = keys(kind)
    signature = sign(MESSAGE, path, NAMESPACE_APPROVAL)
    done = _keygen_verify(ssh_keygen, public, NAMESPACE_APPROVAL, MESSAGE, signature, tmp_path)
    assert done.returncode == 0, done.stderr
    refused = _keygen_verify(
        ssh_keygen, public, NAMESPACE_APPROVAL, MESSAGE + b" ", signature, tmp_path
    )
    assert refused.returncode != 0


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_we_verify_ssh_keygen(keys: KeyMaker, kind: str, ssh_keygen: str, tmp_path: Path) -> None:
    path, public = keys(kind)
    signature = _keygen_sign(ssh_keygen, path, NAMESPACE_REQUEST, MESSAGE, tmp_path)
    verify(MESSAGE, signature, public, NAMESPACE_REQUEST)
    assert signer(signature) == public
    with pytest.raises(SignatureError, match="does not match"):
        verify(MESSAGE.replace(b"approve", b"deny!!!"), signature, public, NAMESPACE_REQUEST)


def test_fingerprint_is_what_ssh_keygen_prints(keys: KeyMaker, ssh_keygen: str) -> None:
    path, public = keys()
    listed = subprocess.run(
        [ssh_keygen, "-l", "-f", str(path.with_suffix(".pub"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listed.split()[1] == public.fingerprint
    assert public.fingerprint.startswith("SHA256:")


def test_comment_does_not_change_the_key(keys: KeyMaker) -> None:
    _, public = keys()
    assert load_public_key(public.text + " someone else's comment") == public
    assert public.kind == "ssh-ed25519"
    assert len(public.text.split()) == 2


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(message=st.binary(min_size=1, max_size=300), data=st.data())
def test_any_one_byte_change_fails(keys: KeyMaker, message: bytes, data: st.DataObject) -> None:
    path, public = keys()
    signature = sign(message, path, NAMESPACE_APPROVAL)
    verify(message, signature, public, NAMESPACE_APPROVAL)
    at = data.draw(st.integers(0, len(message) - 1))
    delta = data.draw(st.integers(1, 255))
    altered = message[:at] + bytes([(message[at] + delta) % 256]) + message[at + 1 :]
    with pytest.raises(SignatureError) as err:
        verify(altered, signature, public, NAMESPACE_APPROVAL)
    with pytest.raises(SignatureError) as other:
        verify(b"something else", signature, public, NAMESPACE_APPROVAL)
    assert str(err.value) == str(other.value)  # the message never shows what was signed


@settings(max_examples=30, deadline=None)
@given(extra=st.binary(min_size=1, max_size=20))
def test_appending_or_truncating_fails(keys: KeyMaker, extra: bytes) -> None:
    path, public = keys()
    signature = sign(MESSAGE, path, NAMESPACE_APPROVAL)
    for altered in (MESSAGE + extra, MESSAGE[: -len(extra)]):
        with pytest.raises(SignatureError):
            verify(altered, signature, public, NAMESPACE_APPROVAL)


def test_wrong_namespace_fails(keys: KeyMaker) -> None:
    path, public = keys()
    signature = sign(MESSAGE, path, NAMESPACE_REQUEST)
    with pytest.raises(SignatureError, match="commons-connector-approval") as err:
        verify(MESSAGE, signature, public, NAMESPACE_APPROVAL)
    assert "-n commons-connector-approval" in (err.value.hint or "")


def test_git_signature_never_counts(keys: KeyMaker, ssh_keygen: str, tmp_path: Path) -> None:
    path, public = keys()
    signature = _keygen_sign(ssh_keygen, path, "git", MESSAGE, tmp_path)
    with pytest.raises(SignatureError, match="not for"):
        verify(MESSAGE, signature, public, NAMESPACE_APPROVAL)


def test_wrong_key_fails(keys: KeyMaker) -> None:
    path, _ = keys(name="mallory")
    _, alice = keys(name="alice")
    signature = sign(MESSAGE, path, NAMESPACE_APPROVAL)
    with pytest.raises(SignatureError, match="another key") as err:
        verify(MESSAGE, signature, alice, NAMESPACE_APPROVAL)
    assert alice.fingerprint in str(err.value)


def test_swapped_embedded_key_fails(keys: KeyMaker) -> None:
    """A signature whose embedded key is replaced by the expected one still fails."""
    path, _ = keys(name="mallory")
    _, alice = keys(name="alice")
    forged = _replace_key(sign(MESSAGE, path, NAMESPACE_APPROVAL), alice)
    assert signer(forged) == alice
    with pytest.raises(SignatureError, match="does not match"):
        verify(MESSAGE, forged, alice, NAMESPACE_APPROVAL)


def _replace_key(signature: str, key: PublicKey) -> str:
    import base64
    import struct

    body = "".join(signature.strip().splitlines()[1:-1])
    blob = base64.b64decode(body)
    size = struct.unpack(">I", blob[10:14])[0]
    new = blob[:10] + struct.pack(">I", len(key.blob)) + key.blob + blob[14 + size :]
    text = base64.b64encode(new).decode()
    return "-----BEGIN SSH SIGNATURE-----\n" + text + "\n-----END SSH SIGNATURE-----\n"


@pytest.mark.parametrize(
    "armor",
    [
        "",
        "hello",
        "-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----",
        "-----BEGIN SSH SIGNATURE-----\n!!!notbase64\n-----END SSH SIGNATURE-----",
        "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----",
        "-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----",
        "-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----",
    ],
    ids=["empty", "text", "no-body", "not-base64", "magic-only", "truncated", "pgp"],
)
def test_malformed_armor_fails(keys: KeyMaker, armor: str) -> None:
    _, public = keys()
    with pytest.raises(SignatureError):
        verify(MESSAGE, armor, public, NAMESPACE_APPROVAL)
    with pytest.raises(SignatureError):
        signer(armor)


@settings(max_examples=80, deadline=None)
@given(at=st.integers(0, 10_000), delta=st.integers(1, 255))
def test_any_damage_to_the_signature_fails_cleanly(keys: KeyMaker, at: int, delta: int) -> None:
    import base64

    path, public = keys()
    signature = sign(MESSAGE, path, NAMESPACE_APPROVAL)
    blob = bytearray(base64.b64decode("".join(signature.strip().splitlines()[1:-1])))
    blob[at % len(blob)] = (blob[at % len(blob)] + delta) % 256
    damaged = (
        "-----BEGIN SSH SIGNATURE-----\n"
        + base64.b64encode(bytes(blob)).decode()
        + "\n-----END SSH SIGNATURE-----\n"
    )
    with pytest.raises(SignatureError):
        verify(MESSAGE, damaged, public, NAMESPACE_APPROVAL)


def test_passphrase_protected_key(keys: KeyMaker) -> None:
    path, public = keys(name="bob", passphrase="correct horse")
    with pytest.raises(SignatureError, match="passphrase"):
        sign(MESSAGE, path, NAMESPACE_APPROVAL)
    with pytest.raises(SignatureError, match="wrong passphrase"):
        sign(MESSAGE, path, NAMESPACE_APPROVAL, passphrase=b"wrong")
    signature = sign(MESSAGE, path, NAMESPACE_APPROVAL, passphrase=b"correct horse")
    verify(MESSAGE, signature, public, NAMESPACE_APPROVAL)


def test_unusable_private_keys(keys: KeyMaker, tmp_path: Path) -> None:
    path, _ = keys()
    with pytest.raises(SignatureError, match="cannot read"):
        sign(MESSAGE, tmp_path / "missing", NAMESPACE_APPROVAL)
    with pytest.raises(SignatureError, match="not a private key"):
        sign(MESSAGE, path.with_suffix(".pub"), NAMESPACE_APPROVAL)
    with pytest.raises(SignatureError, match="namespace"):
        sign(MESSAGE, path, "")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("", "not an OpenSSH public key"),
        ("ssh-ed25519", "not an OpenSSH public key"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "unsupported public key kind"),
        ("sk-ssh-ed25519@openssh.com AAAAGnNr", "security-key"),
        ("ssh-ed25519 !!!!", "not valid base64"),
        (
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            "another kind",
        ),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkV", "damaged"),
    ],
    ids=["empty", "no-body", "dsa", "fido", "base64", "mismatch", "short"],
)
def test_bad_public_keys(line: str, match: str) -> None:
    with pytest.raises(SignatureError, match=match) as err:
        load_public_key(line)
    assert err.value.hint


def test_signature_error_is_a_connector_error() -> None:
    assert issubclass(SignatureError, ConnectorError)
    assert signing.NAMESPACE_APPROVAL != signing.NAMESPACE_REQUEST
