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
import json
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping
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
from ferryman.errors import (
    Conflict,
    DeadlineExceeded,
    FerrymanError,
    Forbidden,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RuntimeUnavailable,
    Unauthenticated,
)
from ferryman.tensors import DATATYPES, datatype_of, numpy_dtype

__all__ = ["Client", "InferResult", "ProgressCallback"]

#: Called with (bytes sent, total bytes) while an artifact uploads.
ProgressCallback = Callable[[int, int], None]

_ERRORS_BY_STATUS: dict[int, type[FerrymanError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: Overloaded,
    501: RuntimeUnavailable,
    503: NotReady,
    504: DeadlineExceeded,
}

_HEADER_LENGTH = "Inference-Header-Content-Length"
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


class Client:
    """A connection to one Ferryman server; use as a context manager or call :meth:`close`."""

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
            raise DeadlineExceeded(
                f"the server at {self.url} did not answer {method} {path} in time ({exc})"
            ) from exc
        except httpx.TransportError as exc:
            raise FerrymanError(f"the server at {self.url} is not reachable ({exc})") from exc
        if response.is_success:
            return response
        raise _error_from(response)

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
    ) -> dict[str, Any]:
        """Upload an artifact file or folder as a new version of ``name``.

        Returns the server's answer, ``{"created": bool, "version": {...}}``; ``created`` is
        False when the same bytes already are a version of this model. A folder is packed into
        a tar first. The upload streams from disk, reporting (bytes sent, total) to ``progress``.
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
                return self._upload(name, packed, sample, metadata, progress)
        return self._upload(name, artifact, sample, metadata, progress)

    def _upload(
        self,
        name: str,
        artifact: Path,
        sample: Path | None,
        metadata: dict[str, Any],
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
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
                data={"metadata": orjson.dumps(metadata).decode()},
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

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point ``alias`` at ``version``; returns ``{"model", "alias", "version", "previous"}``."""
        result: dict[str, Any] = self._json("PUT", _alias_path(name, alias), json={"version": version})
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
        request: dict[str, Any] = {}
        if request_id is not None:
            request["id"] = request_id
        request_parameters = dict(parameters or {})
        if binary:
            request_parameters["binary_data_output"] = True
        if request_parameters:
            request["parameters"] = request_parameters
        if outputs is not None:
            request["outputs"] = [
                {"name": out, "parameters": {"binary_data": True}} if binary else {"name": out}
                for out in outputs
            ]
        path = f"{_v2_path(name, version)}/infer"
        if binary:
            chunks: list[bytes] = []
            request["inputs"] = []
            for input_name, datatype, array in tensors:
                raw = _to_binary(array, datatype)
                chunks.append(raw)
                request["inputs"].append(
                    {
                        "name": input_name,
                        "shape": list(array.shape),
                        "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)},
                    }
                )
            header = orjson.dumps(request)
            response = self._request(
                "POST",
                path,
                content=b"".join([header, *chunks]),
                headers={"Content-Type": "application/octet-stream", _HEADER_LENGTH: str(len(header))},
            )
        else:
            request["inputs"] = [
                {
                    "name": input_name,
                    "shape": list(array.shape),
                    "datatype": datatype,
                    "data": _to_json(array),
                }
                for input_name, datatype, array in tensors
            ]
            response = self._request(
                "POST",
                path,
                content=_json_body(request, [array for _, _, array in tensors]),
                headers={"Content-Type": "application/json"},
            )
        return _decode_response(response)

    def _input_tensors(
        self, name: str, version: int | str | None, inputs: Array | Mapping[str, Array]
    ) -> list[tuple[str, str, Array]]:
        if isinstance(inputs, Mapping):
            tensors = []
            for input_name, value in inputs.items():
                array = np.asarray(value)
                datatype = datatype_of(array)
                tensors.append((input_name, datatype, _coerce(array, datatype, input_name)))
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
        return [(input_name, datatype, _coerce(np.asarray(inputs), datatype, input_name))]


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


def _error_from(response: httpx.Response) -> FerrymanError:
    """Turn a non-2xx response into the matching error, carrying the server's message."""
    message = ""
    try:
        body = orjson.loads(response.content)
        if isinstance(body, dict) and "error" in body:
            message = str(body["error"])
        elif isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
    except orjson.JSONDecodeError:
        message = response.text.strip()[:500]
    if not message:
        message = f"{response.request.method} {response.request.url.path}: {response.reason_phrase}"
    status = response.status_code
    cls = _ERRORS_BY_STATUS.get(status)
    if cls is None:
        return FerrymanError(message, status=status)
    if cls is Overloaded:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        return Overloaded(message, retry_after=retry_after, status=status)
    return cls(message, status=status)


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0


# -- tensor encoding -----------------------------------------------------------------------------


def _coerce(array: Array, datatype: str, name: str) -> Array:
    """Cast ``array`` to the numpy form of ``datatype`` without silently losing values."""
    if datatype == "BYTES":
        return _bytes_array(array)
    dtype = numpy_dtype(datatype)
    if array.dtype == dtype:
        return array
    if array.dtype.kind in "fc" and dtype.kind in "iub":
        finite = np.isfinite(array)
        if not finite.all() or not np.array_equal(array, np.trunc(array)):
            raise InvalidInput(f"input {name!r} holds non-integer values but the model expects {datatype}")
    try:
        return array.astype(dtype)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {name!r} cannot be converted to {datatype}: {exc}") from None


def _bytes_array(array: Array) -> Array:
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, item in enumerate(array.reshape(-1).tolist()):
        flat[i] = item if isinstance(item, bytes) else str(item).encode()
    return out


def _to_json(array: Array) -> Any:
    """Flattened row-major data for a V2 JSON tensor (BYTES as utf-8 strings)."""
    if array.dtype == object:
        out: list[Any] = []
        for item in array.reshape(-1).tolist():
            if isinstance(item, bytes):
                try:
                    out.append(item.decode())
                except UnicodeDecodeError:
                    raise InvalidInput(
                        "a BYTES element is not valid utf-8 and cannot travel as JSON; use binary=True"
                    ) from None
            else:
                out.append(item)
        return out
    return np.ascontiguousarray(array).reshape(-1)


def _json_body(request: dict[str, Any], arrays: list[Array]) -> bytes:
    """Encode a JSON request; NaN and infinities travel as the ``NaN``/``Infinity`` tokens.

    Strict JSON has no such values (orjson would write null), but Python's json module, the
    Ferryman server and Triton accept the tokens, and a model that allows NaN needs them.
    """
    if not any(a.dtype.kind in "fc" and not np.isfinite(a).all() for a in arrays):
        return orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)
    for entry in request["inputs"]:
        if isinstance(entry["data"], np.ndarray):
            entry["data"] = entry["data"].tolist()
    return json.dumps(request, allow_nan=True).encode()


def _to_binary(array: Array, datatype: str) -> bytes:
    """The binary tensor extension's bytes for one tensor: little-endian, row-major."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.reshape(-1).tolist():
            parts.append(struct.pack("<I", len(item)))
            parts.append(item)
        return b"".join(parts)
    if datatype == "BF16":
        bits = np.ascontiguousarray(array, dtype="<f4").view("<u4") >> 16
        return bits.astype("<u2").tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _decode_response(response: httpx.Response) -> InferResult:
    body = response.content
    header_length = response.headers.get(_HEADER_LENGTH)
    if header_length is not None:
        split = int(header_length)
        header, binary = body[:split], memoryview(body)[split:]
    else:
        header, binary = body, memoryview(b"")
    message = orjson.loads(header)
    outputs: dict[str, Array] = {}
    offset = 0
    for output in message.get("outputs", []):
        name, datatype = str(output["name"]), str(output["datatype"])
        shape = tuple(int(d) for d in output["shape"])
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = binary[offset : offset + int(size)]
            if len(raw) != int(size):
                raise FerrymanError(f"output {name!r}: the response ends before its {size} bytes")
            offset += int(size)
            outputs[name] = _from_binary(bytes(raw), datatype, shape)
        else:
            outputs[name] = _from_json(output.get("data", []), datatype, shape)
    version = message.get("model_version")
    return InferResult(
        model_name=str(message.get("model_name", "")),
        model_version=None if version is None else str(version),
        id=message.get("id"),
        outputs=outputs,
        parameters=dict(message.get("parameters") or {}),
    )


def _from_binary(raw: bytes, datatype: str, shape: tuple[int, ...]) -> Array:
    if datatype == "BYTES":
        count = int(np.prod(shape, dtype=np.int64))
        out = np.empty(count, dtype=object)
        position = 0
        for i in range(count):
            (length,) = struct.unpack_from("<I", raw, position)
            position += 4
            out[i] = raw[position : position + length]
            position += length
        return out.reshape(shape)
    if datatype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    dtype = numpy_dtype(datatype)
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _from_json(data: Any, datatype: str, shape: tuple[int, ...]) -> Array:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise FerrymanError(f"the server answered with unknown datatype {datatype!r}")
    if datatype == "BYTES":
        flat = list(_flatten(data))
        out = np.empty(len(flat), dtype=object)
        for i, item in enumerate(flat):
            out[i] = item.encode() if isinstance(item, str) else item
        return out.reshape(shape)
    return np.asarray(data, dtype=dtype).reshape(shape)


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data
