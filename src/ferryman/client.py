"""A synchronous Python client for a Ferryman server: management API and V2 inference.

    with ferryman.Client("http://127.0.0.1:8080") as client:
        client.push("model.joblib", "churn")
        result = client.infer("churn", np.array([[5.1, 3.5, 1.4, 0.2]]))
        result.outputs["predict"]

Every non-2xx answer raises the matching :mod:`ferryman.errors` class carrying the server's
``{"error": ...}`` message; an unreachable server raises :class:`~ferryman.errors.FerrymanError`.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from ferryman import __version__
from ferryman.client_alerts import AlertMethods
from ferryman.client_codec import HEADER_LENGTH, Tensor, coerce, decode_response, encode_request
from ferryman.client_errors import error_from_response
from ferryman.client_monitoring import MonitoringMethods
from ferryman.client_releases import ReleaseMethods
from ferryman.client_security import SecurityMethods
from ferryman.errors import DeadlineExceeded, FerrymanError, InvalidInput
from ferryman.tensors import datatype_of

__all__ = ["Client", "InferResult", "ProgressCallback"]

#: Called with (bytes sent, total bytes) while an artifact uploads.
ProgressCallback = Callable[[int, int], None]

#: Pushing and loading do real work on the server (hashing, signature inference, loading the
#: model) after the bytes arrive, so they wait at least this long for the answer.
_SLOW_READ_SECONDS = 600.0

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class InferResult:
    """The decoded answer to one inference request."""

    model_name: str
    model_version: str | None
    id: str | None
    outputs: dict[str, Array]
    parameters: dict[str, Any] = field(default_factory=dict)


class _ProgressFile(io.FileIO):
    """A file opened for reading that reports how far it has been read."""

    def __init__(self, path: Path, progress: ProgressCallback | None) -> None:
        super().__init__(path, "rb")
        self._progress = progress
        self.total = path.stat().st_size

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if self._progress is not None:
            self._progress(self.tell(), self.total)
        return chunk or b""


class Client(ReleaseMethods, MonitoringMethods, SecurityMethods, AlertMethods):
    """A connection to one Ferryman server; use as a context manager or call :meth:`close`.

    ``api_key`` defaults to the ``FERRYMAN_API_KEY`` environment variable; it is sent as
    ``Authorization: Bearer``. Keys and the audit trail: :class:`~ferryman.client_security.SecurityMethods`.

    Rollback, traffic and version policies, rollouts and feedback: :class:`~ferryman.client_releases.ReleaseMethods`.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": f"ferryman-client/{__version__}"}
        if api_key is None:
            api_key = os.environ.get("FERRYMAN_API_KEY")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._metadata: dict[tuple[str, str | None], dict[str, Any]] = {}

    def close(self) -> None:
        """Close the underlying connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- transport ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise DeadlineExceeded(f"the server at {self.url} did not answer {method} {path} in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise FerrymanError(f"the server at {self.url} is not reachable ({exc})") from exc
        if response.is_success:
            return response
        raise error_from_response(response)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise FerrymanError(
                f"{method} {path}: the server answered {response.status_code} with a body that is not JSON"
            ) from exc

    def _probe(self, path: str) -> bool:
        try:
            return self._http.get(path).is_success
        except httpx.TransportError:
            return False

    # -- health and metadata -----------------------------------------------------------------

    def live(self) -> bool:
        """True when the server answers its liveness check (False when it is unreachable)."""
        return self._probe("/v2/health/live")

    def ready(self) -> bool:
        """True when the server reports itself ready (False when it is unreachable)."""
        return self._probe("/v2/health/ready")

    def server_metadata(self) -> dict[str, Any]:
        """The V2 server metadata: name, version and extensions."""
        result: dict[str, Any] = self._json("GET", "/v2")
        return result

    def model_metadata(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        """The V2 model metadata (inputs, outputs, versions) of a model or one of its versions."""
        result: dict[str, Any] = self._json("GET", _v2_path(name, version))
        return result

    # -- registry ----------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """Every model the server knows, registered or from a repository folder."""
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/models")["models"]
        return result

    def model(self, name: str) -> dict[str, Any]:
        """One model, with its versions under ``"versions"``."""
        result: dict[str, Any] = self._json("GET", _model_path(name))
        return result

    def versions(self, name: str) -> list[dict[str, Any]]:
        """The versions of a model, oldest first."""
        result: list[dict[str, Any]] = self._json("GET", f"{_model_path(name)}/versions")["versions"]
        return result

    def version(self, name: str, version: int) -> dict[str, Any]:
        """One version of a model."""
        result: dict[str, Any] = self._json("GET", _version_path(name, version))
        return result

    def push(
        self,
        path: str | Path,
        name: str,
        *,
        sample: Path | None = None,
        framework: str | None = None,
        description: str = "",
        runtime_config: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        sign_key: str | Path | None = None,
    ) -> dict[str, Any]:
        """Upload an artifact file or folder as a new version of ``name``.

        Returns the server's answer, ``{"created": bool, "version": {...}}``; ``created`` is
        False when the same bytes already are a version of this model. A folder is packed into
        a tar first. The upload streams from disk, reporting (bytes sent, total) to ``progress``.
        ``sign_key`` (an Ed25519 private key PEM file) signs the uploaded bytes' sha256.
        """
        artifact = Path(path)
        if not artifact.exists():
            raise InvalidInput(f"artifact {artifact} does not exist")
        if sample is not None and not Path(sample).is_file():
            raise InvalidInput(f"sample {sample} is not a file")
        metadata: dict[str, Any] = {"description": description}
        if framework is not None:
            metadata["framework"] = framework
        if runtime_config is not None:
            metadata["runtime_config"] = runtime_config
        if artifact.is_dir():
            from ferryman.archive import pack_folder

            with tempfile.TemporaryDirectory(prefix="ferryman-push-") as tmp:
                packed = Path(tmp) / f"{artifact.resolve().name}.tar"
                with packed.open("wb") as dest:
                    pack_folder(artifact, dest)
                return self._upload(name, packed, sample, metadata, progress, sign_key)
        return self._upload(name, artifact, sample, metadata, progress, sign_key)

    def _upload(
        self,
        name: str,
        artifact: Path,
        sample: Path | None,
        metadata: dict[str, Any],
        progress: ProgressCallback | None,
        sign_key: str | Path | None = None,
    ) -> dict[str, Any]:
        fields = {"metadata": orjson.dumps(metadata).decode()}
        if sign_key is not None:
            from ferryman.security.signing import sign_file

            fields["signature"] = sign_file(Path(sign_key), artifact)
        with ExitStack() as stack:
            artifact_file = stack.enter_context(_ProgressFile(artifact, progress))
            files: dict[str, tuple[str, Any, str]] = {
                "artifact": (artifact.name, artifact_file, "application/octet-stream"),
            }
            if sample is not None:
                sample_file = stack.enter_context(Path(sample).open("rb"))
                files["sample"] = (Path(sample).name, sample_file, "application/octet-stream")
            result: dict[str, Any] = self._json(
                "POST",
                f"{_model_path(name)}/versions",
                files=files,
                data=fields,
                timeout=httpx.Timeout(self.timeout, read=max(self.timeout, _SLOW_READ_SECONDS)),
            )
        return result

    def delete_version(self, name: str, version: int) -> None:
        """Delete one version (refused with Conflict while an alias points at it)."""
        self._request("DELETE", _version_path(name, version))

    def delete_model(self, name: str) -> None:
        """Delete a model and all its versions."""
        self._request("DELETE", _model_path(name))

    def aliases(self, name: str) -> dict[str, int]:
        """The model's aliases and the versions they point at."""
        result: dict[str, int] = self._json("GET", f"{_model_path(name)}/aliases")["aliases"]
        return result

    def set_alias(self, name: str, alias: str, version: int, *, expected_version: int | None = None) -> dict[str, Any]:
        """Point ``alias`` at ``version``; returns ``{"model", "alias", "version", "previous"}``.

        With ``expected_version``, only if the alias still points at that version (else Conflict).
        """
        body: dict[str, Any] = {"version": version}
        if expected_version is not None:
            body["expected_version"] = expected_version
        result: dict[str, Any] = self._json("PUT", _alias_path(name, alias), json=body)
        return result

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias (its history is kept)."""
        self._request("DELETE", _alias_path(name, alias))

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        """Every change of an alias: from_version, to_version, changed_by, changed_at."""
        result: list[dict[str, Any]] = self._json("GET", f"{_alias_path(name, alias)}/history")["history"]
        return result

    def load(self, name: str, version: int) -> dict[str, Any]:
        """Load a version into memory and return it (state ``loaded``)."""
        result: dict[str, Any] = self._json(
            "POST",
            f"{_version_path(name, version)}/load",
            timeout=httpx.Timeout(self.timeout, read=max(self.timeout, _SLOW_READ_SECONDS)),
        )
        return result

    def unload(self, name: str, version: int) -> dict[str, Any]:
        """Unload a version from memory and return it (state ``unloaded``)."""
        result: dict[str, Any] = self._json("POST", f"{_version_path(name, version)}/unload")
        return result

    # -- inference ---------------------------------------------------------------------------

    def infer(
        self,
        name: str,
        inputs: Array | Mapping[str, Array],
        *,
        version: int | str | None = None,
        outputs: list[str] | None = None,
        binary: bool = False,
        request_id: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> InferResult:
        """Run one V2 inference request and decode its outputs into numpy arrays.

        A bare array goes to the model's single input, cast to its declared datatype (the
        model metadata is fetched once per model and version). A mapping names every input and
        sends each array with its own datatype. ``binary`` uses the binary tensor extension in
        both directions, which is faster and carries every datatype exactly.
        """
        tensors = self._input_tensors(name, version, inputs)
        body, headers = encode_request(
            tensors, binary=binary, request_id=request_id, parameters=parameters, outputs=outputs
        )
        response = self._request("POST", f"{_v2_path(name, version)}/infer", content=body, headers=headers)
        message, decoded = decode_response(response.content, response.headers.get(HEADER_LENGTH))
        model_version = message.get("model_version")
        return InferResult(
            model_name=str(message.get("model_name", "")),
            model_version=None if model_version is None else str(model_version),
            id=message.get("id"),
            outputs=decoded,
            parameters=dict(message.get("parameters") or {}),
        )

    def _input_tensors(self, name: str, version: int | str | None, inputs: Array | Mapping[str, Array]) -> list[Tensor]:
        if isinstance(inputs, Mapping):
            tensors = []
            for input_name, value in inputs.items():
                array = np.asarray(value)
                datatype = datatype_of(array)
                tensors.append((input_name, datatype, coerce(array, datatype, input_name)))
            return tensors
        key = (name, None if version is None else str(version))
        metadata = self._metadata.get(key)
        if metadata is None:
            metadata = self.model_metadata(name, version)
            self._metadata[key] = metadata
        specs = metadata.get("inputs") or []
        if len(specs) != 1:
            named = ", ".join(str(spec.get("name")) for spec in specs) or "none declared"
            raise InvalidInput(
                f"model {name!r} has {len(specs)} inputs ({named}); name each one "
                "(a mapping of input name to array; --input NAME=JSON on the command line)"
            )
        spec = specs[0]
        input_name, datatype = str(spec["name"]), str(spec["datatype"])
        return [(input_name, datatype, coerce(np.asarray(inputs), datatype, input_name))]


# -- paths ---------------------------------------------------------------------------------------


def _model_path(name: str) -> str:
    return f"/api/v1/models/{quote(name, safe='')}"


def _version_path(name: str, version: int) -> str:
    return f"{_model_path(name)}/versions/{int(version)}"


def _alias_path(name: str, alias: str) -> str:
    return f"{_model_path(name)}/aliases/{quote(alias, safe='')}"


def _v2_path(name: str, version: int | str | None) -> str:
    path = f"/v2/models/{quote(name, safe='')}"
    if version is not None:
        path += f"/versions/{quote(str(version), safe='')}"
    return path
