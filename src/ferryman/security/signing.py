"""Ed25519 signatures over artifacts: keys, the signature format, signing and verification.

A signature covers the artifact's sha256 — the same digest the artifact store verifies on every
load — so verifying it costs one Ed25519 check, however large the artifact. The signed message
is ``b"ferryman-artifact-v1:" + <sha256 in lowercase hex>``: the prefix keeps a Ferryman signature
from meaning anything to another tool that trusts the same key.

A stored signature reads ``ed25519:<key id>:<base64 signature>``, where the key id is the first
16 hex digits of the sha256 of the raw 32-byte public key (``ferryman signing-key create`` prints it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ferryman.errors import Forbidden, InvalidInput

__all__ = [
    "SIGNATURE_FIELD",
    "ArtifactSignature",
    "SigningKeys",
    "create_key_pair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_signature",
    "public_key_path",
    "sign_file",
    "sign_sha256",
    "signed_message",
]

#: The push form field that carries the signature (the version object calls it ``artifact_signature``).
SIGNATURE_FIELD = "signature"

_PREFIX = b"ferryman-artifact-v1:"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FORMAT = re.compile(r"ed25519:([0-9a-f]{16}):([A-Za-z0-9+/]{86}==)")
_SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class ArtifactSignature:
    """A parsed signature: which key made it and the 64 signature bytes."""

    key_id: str
    value: bytes

    def __str__(self) -> str:
        return f"ed25519:{self.key_id}:{base64.b64encode(self.value).decode('ascii')}"


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's fingerprint: 16 hex digits of the sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signed_message(sha256: str) -> bytes:
    """The bytes a signature covers for an artifact with digest ``sha256``."""
    if not _SHA256.fullmatch(sha256):
        raise InvalidInput(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    return _PREFIX + sha256.encode("ascii")


def sign_sha256(private_key: Ed25519PrivateKey, sha256: str) -> str:
    """Sign an artifact digest; returns the stored form ``ed25519:<key id>:<base64>``."""
    value = private_key.sign(signed_message(sha256))
    return str(ArtifactSignature(key_id(private_key.public_key()), value))


def sign_file(key_path: Path, artifact: Path) -> str:
    """Sign the sha256 of the file ``artifact`` with the private key in ``key_path`` (what a push uploads)."""
    private_key = load_private_key(key_path)
    digest = hashlib.sha256()
    with artifact.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return sign_sha256(private_key, digest.hexdigest())


def parse_signature(text: object, field: str = SIGNATURE_FIELD) -> ArtifactSignature:
    """Parse the stored/uploaded form, or raise InvalidInput naming ``field``."""
    if not isinstance(text, str):
        raise InvalidInput(f"field '{field}' must be text of the form ed25519:<key id>:<base64 signature>")
    match = _FORMAT.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(f"field '{field}' is malformed: expected ed25519:<16 hex digit key id>:<base64 of 64 bytes>")
    try:
        value = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        raise InvalidInput(f"field '{field}' is malformed: the signature is not valid base64") from None
    if len(value) != _SIGNATURE_BYTES:
        raise InvalidInput(f"field '{field}' is malformed: an Ed25519 signature has {_SIGNATURE_BYTES} bytes")
    return ArtifactSignature(match.group(1), value)


class SigningKeys:
    """The public keys a server trusts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys = {key_id(key): key for key in keys}

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> SigningKeys:
        """Load PEM public keys (each file one key); InvalidInput naming a file that is not one."""
        return cls(load_public_key(path) for path in paths)

    @property
    def key_ids(self) -> list[str]:
        """The ids of the trusted keys, sorted."""
        return sorted(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def knows(self, signature: ArtifactSignature) -> bool:
        """True when the signature names one of these keys."""
        return signature.key_id in self._keys

    def verify(self, sha256: str, signature: ArtifactSignature) -> None:
        """Raise Forbidden unless ``signature`` is a valid signature of ``sha256`` by a trusted key."""
        key = self._keys.get(signature.key_id)
        if key is None:
            raise Forbidden(f"the signature was made by key {signature.key_id}, which is not among signing_public_keys")
        try:
            key.verify(signature.value, signed_message(sha256))
        except InvalidSignature:
            raise Forbidden(
                f"the signature by key {signature.key_id} does not verify over the artifact's sha256 {sha256}"
            ) from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an unencrypted Ed25519 private key (PEM); InvalidInput naming the file otherwise."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise InvalidInput(f"signing key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"signing key {path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"signing key {path} is a {type(key).__name__}; an Ed25519 key is required")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM); InvalidInput naming the file otherwise."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise InvalidInput(f"signing_public_keys: {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"signing_public_keys: {path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"signing_public_keys: {path} is a {type(key).__name__}; an Ed25519 key is required")
    return key


def public_key_path(private_path: Path) -> Path:
    """Where the public half of ``private_path`` goes: ``key.pem`` → ``key.pub.pem``."""
    stem = private_path.name[: -len(".pem")] if private_path.name.endswith(".pem") else private_path.name
    return private_path.with_name(f"{stem}.pub.pem")


def create_key_pair(private_path: Path, public_path: Path | None = None) -> tuple[Path, str]:
    """Write a new Ed25519 key pair; returns (public key path, key id).

    The private key file is created with mode 0600 and never overwritten (InvalidInput if it exists).
    """
    public_path = public_path or public_key_path(private_path)
    for path in (private_path, public_path):
        if path.exists():
            raise InvalidInput(f"{path} already exists; choose another --out or remove it first")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # O_EXCL: a file that appeared since the check is not overwritten; 0600 from the first byte.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    public_path.write_bytes(public_pem)
    return public_path, key_id(key.public_key())
