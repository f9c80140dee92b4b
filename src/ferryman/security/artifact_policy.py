"""What a server agrees to load: the signature and pickle rules, checked at push and at every load.

Both checks run before any of the artifact's bytes are interpreted by a framework: at push right
after the upload is hashed (signature) and laid out (format), at load right after the sha256 check
in ``serving/loading.py``. A refusal at push is 403 (:class:`Forbidden`; a malformed signature is
400 naming the field); a refusal at load fails the version like any other load failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ferryman.config import Settings
from ferryman.errors import Forbidden
from ferryman.security.signing import SigningKeys, parse_signature

__all__ = ["PICKLE_SUFFIXES", "SAFE_FORMATS_HINT", "ArtifactPolicy", "artifact_policy_from", "pickle_files"]

logger = logging.getLogger(__name__)

#: File suffixes that are pickles (or containers of them: joblib, PyTorch checkpoints).
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".pt", ".pth"})

#: Where a refused pickle should go instead.
SAFE_FORMATS_HINT = (
    "save scikit-learn models with skops (skops.io.dump(model, 'model.skops')) or export the model to ONNX (.onnx)"
)


def _is_pickle(path: Path) -> bool:
    """A pickle by name, or by its first bytes (PROTO opcode 0x80 then protocol 2 to 5)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with path.open("rb") as file:
            head = file.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def pickle_files(path: Path) -> list[Path]:
    """The pickle files an artifact is or holds (every file of a folder, however deep)."""
    if path.is_dir():
        return [file for file in sorted(path.rglob("*")) if file.is_file() and _is_pickle(file)]
    return [path] if path.is_file() and _is_pickle(path) else []


class ArtifactPolicy:
    """The ``allow_pickle`` and ``require_signed_models`` rules, with the trusted signing keys."""

    def __init__(
        self, *, allow_pickle: bool = True, require_signed: bool = False, keys: SigningKeys | None = None
    ) -> None:
        self.allow_pickle = allow_pickle
        self.require_signed = require_signed
        self.keys = keys or SigningKeys()

    def check_signature(self, sha256: str, signature: str | None) -> str | None:
        """Refuse (Forbidden) an unsigned or badly signed artifact; returns the signature normalised.

        A signature by a trusted key must verify whether or not signatures are required; one by a
        key this server does not know is only refused when they are. A malformed signature is
        InvalidInput naming the ``signature`` field.
        """
        if signature is None or signature == "":
            if self.require_signed:
                raise Forbidden(
                    "the artifact is not signed and this server requires signed models (require_signed_models); "
                    "push it with --sign KEY.pem"
                )
            return None
        parsed = parse_signature(signature)
        if self.keys.knows(parsed) or self.require_signed:
            self.keys.verify(sha256, parsed)
        return str(parsed)

    def check_format(self, path: Path) -> None:
        """Refuse (Forbidden) pickle files when ``allow_pickle`` is off."""
        if self.allow_pickle:
            return
        found = pickle_files(path)
        if found:
            names = ", ".join(file.name for file in found[:5])
            raise Forbidden(
                f"{path.name} is or holds a pickle ({names}), and this server refuses pickle formats "
                f"(allow_pickle: false) because loading one runs arbitrary code; {SAFE_FORMATS_HINT}"
            )

    def describe(self) -> str:
        """One line for the start-up log."""
        keys = ", ".join(self.keys.key_ids) or "none"
        return (
            f"allow_pickle={str(self.allow_pickle).lower()}, "
            f"require_signed_models={str(self.require_signed).lower()}, signing keys: {keys}"
        )


def artifact_policy_from(settings: Settings) -> ArtifactPolicy:
    """The policy ``settings`` ask for; InvalidInput naming a key file that cannot be used."""
    policy = ArtifactPolicy(
        allow_pickle=settings.allow_pickle,
        require_signed=settings.require_signed_models,
        keys=SigningKeys.from_files(settings.signing_public_keys),
    )
    if not policy.allow_pickle or policy.require_signed or policy.keys:
        logger.info("artifact policy: %s", policy.describe())
    return policy
