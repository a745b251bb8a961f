"""Signed statements with keys people already have: OpenSSH keys and the SSHSIG format.

An approval, a denial or a share request is a statement a person signs on their own machine
and sends back by any channel (a file, an email); the connector verifies it without trusting
the channel. The signature format is OpenSSH's SSHSIG (``PROTOCOL.sshsig`` in the OpenSSH
sources), the one ``ssh-keygen -Y sign`` and ``git commit -S`` with ``gpg.format=ssh`` make,
so an approver can sign with ``ssh-keygen`` alone and we can check what ``ssh-keygen -Y
verify`` checks. We invent no cryptography: the primitives (Ed25519, ECDSA, RSA, key
parsing) are ``cryptography``'s; this module only lays out the documented bytes.

A namespace binds a signature to its use: an approval signed under
:data:`NAMESPACE_APPROVAL` can never pass as a share request, nor a git commit signature as
either. Errors never quote the signed message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from connector_core.errors import ConnectorError

NAMESPACE_APPROVAL = "commons-connector-approval"
NAMESPACE_REQUEST = "commons-connector-request"

_MAGIC = b"SSHSIG"
_VERSION = 1
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
#: ssh-keygen wraps the armored base64 at 70 columns.
_WRAP = 70
#: The message digests SSHSIG allows; ssh-keygen signs with sha512.
_DIGESTS: dict[str, Callable[[bytes], Any]] = {
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
_ECDSA: dict[str, tuple[type[ec.EllipticCurve], hashes.HashAlgorithm]] = {
    "ecdsa-sha2-nistp256": (ec.SECP256R1, hashes.SHA256()),
    "ecdsa-sha2-nistp384": (ec.SECP384R1, hashes.SHA384()),
    "ecdsa-sha2-nistp521": (ec.SECP521R1, hashes.SHA512()),
}
_RSA_SIGNATURES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-512": hashes.SHA512(),
    "rsa-sha2-256": hashes.SHA256(),
}
#: Key kinds we can verify and sign with (RSA signatures never use SHA-1, like ssh-keygen).
KINDS = ("ssh-ed25519", "ssh-rsa", *_ECDSA)
_KEY_HINT = (
    "Give the line of the person's public key file, e.g. the content of ~/.ssh/id_ed25519.pub "
    "('ssh-ed25519 AAAA... name@host'); create one with `ssh-keygen -t ed25519`."
)


class SignatureError(ConnectorError):
    """A key or signature is unusable, or a signature does not verify. Never quotes content."""


@dataclass(frozen=True)
class PublicKey:
    """An OpenSSH public key: its kind, ``text`` ("KIND BASE64", no comment) and fingerprint.

    Two keys are equal when they are the same key, whatever comment their lines carried. The
    fingerprint is written like ``ssh-keygen -l`` prints it: ``SHA256:`` and unpadded base64.
    """

    kind: str
    text: str
    fingerprint: str

    @property
    def blob(self) -> bytes:
        """The key in SSH wire form (what the fingerprint hashes)."""
        return base64.b64decode(self.text.split()[1])


def load_public_key(text: str) -> PublicKey:
    """Parse one OpenSSH public key line (``ssh-ed25519 AAAA... comment``)."""
    parts = text.strip().split()
    if len(parts) < 2:
        raise SignatureError("not an OpenSSH public key line", hint=_KEY_HINT)
    kind, encoded = parts[0], parts[1]
    if kind.startswith("sk-"):
        raise SignatureError(
            f"security-key (FIDO) keys ({kind}) are not supported yet",
            hint="Use an ssh-ed25519 key kept on disk (`ssh-keygen -t ed25519`).",
        )
    if kind not in KINDS:
        raise SignatureError(
            f"unsupported public key kind {kind[:40]!r}: use one of {', '.join(KINDS)}",
            hint=_KEY_HINT,
        )
    try:
        blob = base64.b64decode(encoded, validate=True)
        inner = _Reader(blob).string()
    except (binascii.Error, SignatureError):
        raise SignatureError(f"the {kind} public key is not valid base64", hint=_KEY_HINT) from None
    if inner != kind.encode():
        raise SignatureError(f"the key says {kind} but holds another kind", hint=_KEY_HINT)
    try:
        serialization.load_ssh_public_key(f"{kind} {encoded}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(f"the {kind} public key is damaged", hint=_KEY_HINT) from None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return PublicKey(kind=kind, text=f"{kind} {encoded}", fingerprint=f"SHA256:{digest}")


def sign(message: bytes, private_key: Path, namespace: str, passphrase: bytes | None = None) -> str:
    """Sign `message` under `namespace` with an OpenSSH (or PEM) private key file.

    Returns the armored signature, exactly what ``ssh-keygen -Y sign -n NAMESPACE`` writes.
    """
    _check_namespace(namespace)
    key = _load_private_key(Path(private_key), passphrase)
    public = _public_of(key)
    digest = "sha512"
    signed = _signed_data(namespace, digest, message)
    algorithm, raw = _sign_raw(key, public.kind, signed)
    blob = b"".join(
        (
            _MAGIC,
            struct.pack(">I", _VERSION),
            _string(public.blob),
            _string(namespace.encode()),
            _string(b""),
            _string(digest.encode()),
            _string(_string(algorithm.encode()) + _string(raw)),
        )
    )
    body = base64.b64encode(blob).decode()
    lines = [body[i : i + _WRAP] for i in range(0, len(body), _WRAP)]
    return "\n".join([_BEGIN, *lines, _END]) + "\n"


def verify(message: bytes, signature: str, key: PublicKey, namespace: str) -> None:
    """Check that `key` signed exactly `message` under `namespace`; raise SignatureError if not."""
    parsed = _parse(signature)
    if parsed.namespace != namespace:
        raise SignatureError(
            f"the signature was made for {parsed.namespace[:60]!r}, not for {namespace!r}",
            hint="A statement signed for one purpose never counts for another: sign it again "
            f"with `-n {namespace}`.",
        )
    if parsed.public_blob != key.blob:
        other = _public_from_blob(parsed.public_blob).fingerprint
        raise SignatureError(
            f"signed by another key ({other}), not by {key.fingerprint}",
            hint="Check that the statement comes from the person it names, and that "
            "connector.yaml holds their current public key.",
        )
    signed = _signed_data(namespace, parsed.digest, message)
    if not _verify_raw(key, parsed.algorithm, parsed.raw, signed):
        raise SignatureError(
            f"the signature by {key.fingerprint} does not match: the signed text was altered, "
            "or the signature was made over something else",
            hint="Ask the signer for a fresh statement over the current text.",
        )


def signer(signature: str) -> PublicKey:
    """The public key a signature says it was made with (verify it before trusting it)."""
    return _public_from_blob(_parse(signature).public_blob)


@dataclass(frozen=True)
class _Parsed:
    public_blob: bytes
    namespace: str
    digest: str
    algorithm: str
    raw: bytes


class _Reader:
    """Reads SSH wire types (uint32, string) from a byte string; SignatureError when short."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise SignatureError("malformed SSH signature: it ends too early")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def text(self) -> str:
        try:
            return self.string().decode("ascii")
        except UnicodeDecodeError:
            raise SignatureError("malformed SSH signature: a name is not ASCII") from None

    def end(self) -> None:
        if self.at != len(self.data):
            raise SignatureError("malformed SSH signature: unexpected bytes after its end")


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _mpint(value: int) -> bytes:
    """An SSH mpint: big-endian two's complement, minimal, positive values without a sign bit."""
    size = value.bit_length() // 8 + 1 if value else 0
    return _string(value.to_bytes(size, "big", signed=True))


def _check_namespace(namespace: str) -> None:
    if not namespace or not namespace.isascii() or not namespace.isprintable():
        raise SignatureError("a signature namespace must be a non-empty printable ASCII name")


def _signed_data(namespace: str, digest: str, message: bytes) -> bytes:
    """The bytes the key signs (PROTOCOL.sshsig): the namespace and a digest of the message."""
    return b"".join(
        (
            _MAGIC,
            _string(namespace.encode()),
            _string(b""),
            _string(digest.encode()),
            _string(_DIGESTS[digest](message).digest()),
        )
    )


def _parse(signature: str) -> _Parsed:
    text = signature.strip() if isinstance(signature, str) else ""
    if not (text.startswith(_BEGIN) and text.endswith(_END)):
        raise SignatureError(
            f"not an SSH signature: expected a block from {_BEGIN} to {_END}",
            hint="Pass the whole .sig file that `ssh-keygen -Y sign` wrote.",
        )
    body = "".join(text[len(_BEGIN) : -len(_END)].split())
    try:
        reader = _Reader(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError):
        raise SignatureError("malformed SSH signature: the block is not valid base64") from None
    if reader.take(6) != _MAGIC:
        raise SignatureError("malformed SSH signature: it does not start with SSHSIG")
    if reader.uint32() != _VERSION:
        raise SignatureError("unsupported SSH signature version (this connector reads 1)")
    public_blob, namespace = reader.string(), reader.text()
    reader.string()  # reserved, unused by SSHSIG version 1
    digest = reader.text()
    inner = _Reader(reader.string())
    reader.end()
    algorithm, raw = inner.text(), inner.string()
    inner.end()
    if digest not in _DIGESTS:
        raise SignatureError(f"unsupported SSH signature digest {digest[:20]!r}")
    return _Parsed(public_blob, namespace, digest, algorithm, raw)


def _public_from_blob(blob: bytes) -> PublicKey:
    kind = _Reader(blob).text()
    return load_public_key(f"{kind} {base64.b64encode(blob).decode()}")


def _load_private_key(path: Path, passphrase: bytes | None) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(
            f"cannot read the private key {path}: {exc.strerror or exc}",
            hint="Pass the path of your private key, e.g. ~/.ssh/id_ed25519.",
        ) from None
    loader = (
        serialization.load_ssh_private_key
        if b"OPENSSH PRIVATE KEY" in data
        else serialization.load_pem_private_key
    )
    try:
        return loader(data, passphrase)
    except TypeError:
        raise SignatureError(
            f"the private key {path} is protected by a passphrase"
            if passphrase is None
            else f"the private key {path} has no passphrase; sign without one",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(
            f"cannot open the private key {path}: wrong passphrase, or not a private key file",
            hint="Pass the private key (not the .pub file); check the passphrase.",
        ) from None


def _public_of(key: Any) -> PublicKey:
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    ):
        raise SignatureError(
            f"cannot sign with a {type(key).__name__}: use an Ed25519, ECDSA or RSA key",
            hint="Create one with `ssh-keygen -t ed25519`.",
        )
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return load_public_key(line.decode())


def _sign_raw(key: Any, kind: str, signed: bytes) -> tuple[str, bytes]:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return kind, key.sign(signed)
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa-sha2-512", key.sign(signed, padding.PKCS1v15(), hashes.SHA512())
    r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(_ECDSA[kind][1])))
    return kind, _mpint(r) + _mpint(s)


def _verify_raw(key: PublicKey, algorithm: str, raw: bytes, signed: bytes) -> bool:
    public: Any = serialization.load_ssh_public_key(key.text.encode())
    try:
        if key.kind == "ssh-ed25519" and algorithm == key.kind:
            public.verify(raw, signed)
        elif key.kind == "ssh-rsa" and algorithm in _RSA_SIGNATURES:
            public.verify(raw, signed, padding.PKCS1v15(), _RSA_SIGNATURES[algorithm])
        elif key.kind in _ECDSA and algorithm == key.kind:
            reader = _Reader(raw)
            r, s = (int.from_bytes(reader.string(), "big", signed=True) for _ in range(2))
            reader.end()
            public.verify(encode_dss_signature(r, s), signed, ec.ECDSA(_ECDSA[key.kind][1]))
        else:
            return False
    except (InvalidSignature, SignatureError, ValueError):
        return False
    return True
