"""Artifacts in a shared store (``FERRYMAN_ARTIFACTS_URL``): S3 (moto's real server) and ``file://``.

Each scenario runs real ``ferryman serve`` processes that share one SQLite registry and one store,
each with its own FERRYMAN_HOME: one pushes, another loads and serves; a tampered object is refused
naming sha256; an upload cut off mid-way leaves no key and no version.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from ferryman.archive import pack_folder
from ferryman.registry.object_artifacts import ObjectStoreArtifacts
from tests.conftest import ServerFactory, free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "ferryman-test"
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
IRIS_REQUEST = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 4], "data": IRIS_ROWS}]}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port, with the test bucket."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def s3_client(endpoint: str) -> object:
    """A boto3 S3 client of the moto server (the test's own view of the bucket)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def bucket_keys(endpoint: str, prefix: str) -> list[str]:
    """Every key under ``prefix``."""
    listing = s3_client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)  # type: ignore[attr-defined]
    return sorted(item["Key"] for item in listing.get("Contents", []))


@dataclass
class SharedStore:
    """Settings shared by every replica of one scenario, and how the test reaches the store."""

    env: dict[str, str]
    scheme: str
    endpoint: str | None
    prefix: str
    folder: Path | None

    def keys(self) -> list[str]:
        """Every stored key (relative to the store's root)."""
        if self.folder is not None:
            return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())
        assert self.endpoint is not None
        return [key.removeprefix(f"{self.prefix}/") for key in bucket_keys(self.endpoint, self.prefix)]

    def overwrite(self, key: str, data: bytes) -> None:
        """Replace a stored object's bytes behind Ferryman's back."""
        if self.folder is not None:
            (self.folder / key).write_bytes(data)
            return
        s3_client(self.endpoint or "").put_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}", Body=data)  # type: ignore[attr-defined]


@pytest.fixture(params=["s3", "file"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> SharedStore:
    """A fresh store (a new S3 prefix, or a folder) and a registry database for the scenario's replicas."""
    env = {"FERRYMAN_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}", "FERRYMAN_METRICS_AUTH": "false"}
    if request.param == "file":
        folder = tmp_path / "shared-volume"
        env["FERRYMAN_ARTIFACTS_URL"] = f"file://{folder}"
        return SharedStore(env, "file", None, "", folder)
    endpoint = request.getfixturevalue("moto_endpoint")
    prefix = f"registry-{uuid.uuid4().hex[:8]}"
    env |= CREDENTIALS | {
        "FERRYMAN_ARTIFACTS_URL": f"s3://{BUCKET}/{prefix}",
        "FERRYMAN_ARTIFACTS_S3_ENDPOINT_URL": endpoint,
    }
    return SharedStore(env, "s3", endpoint, prefix, None)


def push(url: str, name: str, filename: str, data: bytes) -> httpx.Response:
    """Push ``data`` as a new version of ``name`` over the management API."""
    return httpx.post(f"{url}/api/v1/models/{name}/versions", files={"artifact": (filename, data)}, timeout=120)


def predict(url: str) -> httpx.Response:
    """The iris request."""
    return httpx.post(f"{url}/v2/models/iris/infer", json=IRIS_REQUEST, timeout=60)


def test_one_replica_pushes_another_serves_and_a_tampered_object_is_refused(
    shared: SharedStore, server_factory: ServerFactory, iris_joblib: Path, iris_pipeline: object, tmp_path: Path
) -> None:
    data = iris_joblib.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    pusher = server_factory(home=tmp_path / "pusher", env=shared.env)
    response = push(pusher.url, "iris", "iris.joblib", data)
    assert response.status_code == 201, response.text
    key = f"blobs/{sha256}/iris.joblib"
    assert shared.keys() == [key], "exactly the published artifact, no temporary keys"
    assert predict(pusher.url).status_code == 200

    # A second replica with its own home loads from the store, verifies, caches and serves.
    reader = server_factory(home=tmp_path / "reader", env=shared.env)
    answer = predict(reader.url)
    assert answer.status_code == 200, answer.text
    expected = iris_pipeline.predict(np.array(IRIS_ROWS))  # type: ignore[attr-defined]
    assert answer.json()["outputs"][0]["data"] == expected.tolist()
    cached = tmp_path / "reader" / "artifact-cache" / "blobs" / sha256 / "iris.joblib"
    assert cached.read_bytes() == data

    # Someone rewrites the stored bytes: a replica without a cached copy refuses to load them.
    shared.overwrite(key, data[:-64] + b"\0" * 64)
    fresh = server_factory(home=tmp_path / "fresh", env=shared.env)
    refused = predict(fresh.url)
    assert refused.status_code >= 500, refused.text
    assert "sha256" in refused.json()["error"] and sha256 in refused.json()["error"], refused.text
    assert "sha256" in fresh.logs()


def test_a_corrupted_cache_is_fetched_again(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{BUCKET}/cache-{uuid.uuid4().hex[:8]}"
    writer = ObjectStoreArtifacts(url, tmp_path / "writer", {"endpoint_url": moto_endpoint})
    staged = writer.stage(io.BytesIO(b"weights" * 1000), "weights.bin", max_bytes=1 << 20)
    writer.publish(staged)
    reader = ObjectStoreArtifacts(url, tmp_path / "reader", {"endpoint_url": moto_endpoint})
    path = reader.materialize(staged.sha256, "weights.bin")
    assert path.read_bytes() == b"weights" * 1000
    path.write_bytes(b"bit rot")
    assert reader.materialize(staged.sha256, "weights.bin").read_bytes() == b"weights" * 1000


class CuttingProxy:
    """A TCP proxy to the S3 server that drops any connection once it has sent ``limit`` bytes upstream.

    Small requests (HEAD, listings) pass; an artifact upload larger than ``limit`` is cut mid-body,
    as a network failure or a crashed uploader would leave it.
    """

    def __init__(self, upstream_port: int, limit: int) -> None:
        self.limit = limit
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, count: bool) -> None:
        sent = 0
        try:
            while chunk := source.recv(65536):
                if count and sent + len(chunk) > self.limit:
                    target.sendall(chunk[: self.limit - sent])
                    self.cuts += 1
                    break
                target.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stop accepting connections."""
        self.listener.close()


def test_an_upload_cut_off_midway_leaves_no_key_and_no_version(
    moto_endpoint: str, server_factory: ServerFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "model.py").write_text(
        "import ferryman\nfrom ferryman import TensorSpec\n\n"
        "class Echo(ferryman.Model):\n"
        '    inputs = [TensorSpec("x", "FP32", (-1, 2))]\n'
        '    outputs = [TensorSpec("y", "FP32", (-1,))]\n\n'
        "    def predict(self, inputs):\n"
        '        return {"y": inputs["x"].sum(axis=1)}\n'
    )
    (folder / "weights.bin").write_bytes(np.random.default_rng(0).bytes(1 << 20))
    buffer = io.BytesIO()
    pack_folder(folder, buffer)
    proxy = CuttingProxy(int(moto_endpoint.rsplit(":", 1)[1]), limit=256 * 1024)
    prefix = f"cut-{uuid.uuid4().hex[:8]}"
    env = CREDENTIALS | {
        "FERRYMAN_ARTIFACTS_URL": f"s3://{BUCKET}/{prefix}",
        "FERRYMAN_ARTIFACTS_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
        "AWS_MAX_ATTEMPTS": "1",  # botocore's own retries would only repeat the same cut
    }
    try:
        server = server_factory(env=env)
        response = push(server.url, "big", "big.tar", buffer.getvalue())
        assert response.status_code == 503, response.text
        assert "could not store big.tar" in response.json()["error"]
        assert proxy.cuts > 0, "the upload was never cut: the test proves nothing"
        assert bucket_keys(moto_endpoint, prefix) == [], "no final key, no temporary key"
        assert httpx.get(f"{server.url}/api/v1/models/big", timeout=10).status_code == 404
        assert json.loads(httpx.get(f"{server.url}/api/v1/models", timeout=10).text) in ([], {"models": []})
    finally:
        proxy.close()


def test_an_unsupported_store_is_refused_naming_the_setting_and_credentials_never_show(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="artifacts_url 'ftp://host/x': scheme must be one of file, s3"):
        ObjectStoreArtifacts("ftp://host/x", tmp_path)
    with pytest.raises(ValueError) as refused:
        ObjectStoreArtifacts("gs://user:hunter2@bucket/x", tmp_path)
    assert "hunter2" not in str(refused.value) and "gs://bucket/x" in str(refused.value)
