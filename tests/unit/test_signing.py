"""Artifact signatures and the artifact policy, without a server."""

from __future__ import annotations

import base64
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from ferryman.config import Settings
from ferryman.errors import Forbidden, InvalidInput
from ferryman.security.artifact_policy import ArtifactPolicy, pickle_files
from ferryman.security.signing import (
    SigningKeys,
    create_key_pair,
    key_id,
    load_private_key,
    load_public_key,
    parse_signature,
    public_key_path,
    sign_sha256,
    signed_message,
)

SHA = "ab" * 32


def test_a_signature_round_trips_through_its_text_form_and_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    text = sign_sha256(key, SHA)
    parsed = parse_signature(text)
    assert text == str(parsed)
    assert parsed.key_id == key_id(key.public_key())
    SigningKeys([key.public_key()]).verify(SHA, parsed)
    # What is signed is the domain-prefixed digest, never the bare digest.
    assert signed_message(SHA) == b"ferryman-artifact-v1:" + SHA.encode()


def test_verification_fails_for_another_digest_or_an_unknown_key() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    parsed = parse_signature(sign_sha256(key, SHA))
    trusted = SigningKeys([key.public_key()])
    with pytest.raises(Forbidden, match="does not verify"):
        trusted.verify("cd" * 32, parsed)
    with pytest.raises(Forbidden, match="not among signing_public_keys"):
        SigningKeys([other.public_key()]).verify(SHA, parsed)


@pytest.mark.parametrize(
    "text",
    [
        123,
        "",
        "ed25519:0123456789abcdef",
        "ed25519:0123456789ABCDEF:" + base64.b64encode(b"x" * 64).decode(),
        "ed25519:0123456789abcdef:" + base64.b64encode(b"x" * 63).decode(),
        "ecdsa:0123456789abcdef:" + base64.b64encode(b"x" * 64).decode(),
    ],
)
def test_malformed_signatures_are_invalid_input_naming_the_field(text: object) -> None:
    with pytest.raises(InvalidInput, match="field 'signature'"):
        parse_signature(text)


def test_key_pair_files_and_key_types(tmp_path: Path) -> None:
    public, kid = create_key_pair(tmp_path / "k.pem")
    assert public == public_key_path(tmp_path / "k.pem") == tmp_path / "k.pub.pem"
    assert key_id(load_public_key(public)) == kid == key_id(load_private_key(tmp_path / "k.pem").public_key())
    with pytest.raises(InvalidInput, match="already exists"):
        create_key_pair(tmp_path / "k.pem")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_path = tmp_path / "rsa.pem"
    rsa_path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(InvalidInput, match="an Ed25519 key is required"):
        load_private_key(rsa_path)
    with pytest.raises(InvalidInput, match="is not a PEM public key"):
        load_public_key(tmp_path / "k.pem")


def test_policy_requires_a_valid_signature_only_when_asked() -> None:
    key = Ed25519PrivateKey.generate()
    keys = SigningKeys([key.public_key()])
    good = sign_sha256(key, SHA)
    foreign = sign_sha256(Ed25519PrivateKey.generate(), SHA)
    open_policy = ArtifactPolicy(keys=keys)
    assert open_policy.check_signature(SHA, None) is None
    assert open_policy.check_signature(SHA, foreign) == foreign  # unknown key: kept, verifiable later
    with pytest.raises(Forbidden, match="does not verify"):
        open_policy.check_signature("cd" * 32, good)  # a known key must verify, required or not
    strict = ArtifactPolicy(require_signed=True, keys=keys)
    assert strict.check_signature(SHA, good) == good
    for signature in (None, ""):
        with pytest.raises(Forbidden, match="require_signed_models"):
            strict.check_signature(SHA, signature)
    with pytest.raises(Forbidden, match="not among signing_public_keys"):
        strict.check_signature(SHA, foreign)


def test_pickles_are_found_by_suffix_or_first_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.joblib").write_bytes(b"anything")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "state.bin").write_bytes(pickle.dumps({"w": 1}, protocol=4))
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    (tmp_path / "model.skops").write_bytes(b"PK\x03\x04")
    assert [p.name for p in pickle_files(tmp_path)] == ["a.joblib", "state.bin"]
    assert pickle_files(tmp_path / "model.onnx") == []
    ArtifactPolicy(allow_pickle=False).check_format(tmp_path / "model.skops")
    with pytest.raises(Forbidden, match="skops"):
        ArtifactPolicy(allow_pickle=False).check_format(tmp_path)
    ArtifactPolicy().check_format(tmp_path)


def test_requiring_signatures_needs_a_public_key() -> None:
    with pytest.raises(ValidationError, match="signing_public_keys"):
        Settings(require_signed_models=True)
