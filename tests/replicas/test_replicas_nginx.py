"""Three replicas on one PostgreSQL behind nginx, under steady load: a new version reaches all three within
2 s, and a kill -9, a database restart and a SIGTERM cost no request an error."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import joblib

from ferryman.client import Client
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine
from tests.conftest import ServerProcess, wait_for
from tests.pg import PostgresCluster, postgres  # noqa: F401 (fixture)
from tests.replicas.replicas import IRIS_ROW, Nginx, replica_env

PROPAGATION_S = 2.0
LOAD_THREADS = 4


class Load:
    """Threads sending inferences through nginx until stopped, counting every status (or transport error)."""

    def __init__(self, url: str) -> None:
        self.statuses: Counter[int | str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(url,)) for _ in range(LOAD_THREADS)]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=15.0) as client:
            while not self._stop.is_set():
                status: int | str
                try:
                    status = client.post("/v2/models/iris/infer", json=IRIS_ROW).status_code
                except httpx.TransportError as exc:
                    status = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.statuses[status] += 1

    def total(self) -> int:
        """Requests answered so far."""
        with self._lock:
            return sum(self.statuses.values())

    def stop(self) -> Counter[int | str]:
        """Stop the threads; every status seen."""
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.statuses


def served_version(url: str) -> str | None:
    try:
        response = httpx.post(f"{url}/v2/models/iris/infer", json=IRIS_ROW, timeout=5.0)
    except httpx.TransportError:
        return None
    return str(response.json().get("model_version")) if response.status_code == 200 else None


def replica_on(home: Path, env: dict[str, str], port: int | None = None) -> ServerProcess:
    """A replica (not yet waited for); ``port`` restarts one where nginx expects it."""
    server = ServerProcess(home, ["--port", str(port)] if port is not None else [], env)
    if port is not None:  # the later --port wins over the free one ServerProcess chose
        server.port, server.url = port, f"http://127.0.0.1:{port}"
    return server


def test_three_replicas_behind_nginx_lose_no_request(
    tmp_path: Path,
    postgres: PostgresCluster,  # noqa: F811
    iris_joblib: Path,
    iris_pipeline: object,
) -> None:
    url = postgres.create_database()
    env = replica_env(url, tmp_path / "artifacts")
    replicas = [replica_on(tmp_path / f"replica{i}", env) for i in range(3)]
    nginx: Nginx | None = None
    load: Load | None = None
    try:
        for replica in replicas:
            replica.wait_ready()
        second_copy = tmp_path / "iris-v2.joblib"
        joblib.dump(iris_pipeline, second_copy, compress=3)
        with Client(replicas[0].url) as first:
            first.push(iris_joblib, "iris")
            for replica in replicas:
                wait_for(lambda r=replica: served_version(r.url) == "1", f"v1 on {replica.url}")
        nginx = Nginx(tmp_path / "nginx", [f"127.0.0.1:{r.port}" for r in replicas])
        load = Load(nginx.url)
        wait_for(lambda: load is not None and load.total() >= 50, "load to flow")

        # A new version, made the serving default through replica 0, reaches every replica within 2 s.
        with Client(replicas[0].url) as first:
            first.push(second_copy, "iris")
            first.set_alias("iris", "production", 2)
        for replica in replicas:
            wait_for(lambda r=replica: served_version(r.url) == "2", f"v2 on {replica.url}", PROPAGATION_S)

        # kill -9 one replica and bring it back on its port.
        replicas[1].kill()
        seen = load.total()
        wait_for(lambda: load is not None and load.total() >= seen + 50, "load while replica 1 is down")
        replicas[1] = replica_on(tmp_path / "replica1", env, replicas[1].port)
        replicas[1].wait_ready()
        wait_for(lambda: served_version(replicas[1].url) == "2", "v2 on the restarted replica")

        # Restart PostgreSQL: serving goes on, and the next write still reaches everyone.
        postgres.restart()
        seen = load.total()
        wait_for(lambda: load is not None and load.total() >= seen + 50, "load after the database restart")
        with Client(replicas[2].url) as third:  # pooled connections died with the server: pre-ping replaces them
            third.set_alias("iris", "production", 1)
        for replica in replicas:
            wait_for(lambda r=replica: served_version(r.url) == "1", f"production → 1 on {replica.url}", 5)

        # SIGTERM another replica while requests flow, then start it again.
        replicas[2].stop()
        seen = load.total()
        wait_for(lambda: load is not None and load.total() >= seen + 50, "load while replica 2 is stopped")
        replicas[2] = replica_on(tmp_path / "replica2", env, replicas[2].port)
        replicas[2].wait_ready()

        statuses = load.stop()
        load = None
        assert set(statuses) == {200}, f"errors through nginx: {dict(statuses)}"

        # The registry ends consistent: both versions whole, the last alias write kept.
        registry = RegistryService(create_registry_engine(url), ArtifactStore(tmp_path / "artifacts"))
        assert [v.version for v in registry.list_versions("iris")] == [1, 2]
        assert registry.aliases("iris") == {"production": 1}
        assert [(c.from_version, c.to_version) for c in registry.alias_history("iris", "production")] == [
            (2, 1),
            (None, 2),
        ]
        for version in (1, 2):
            record = registry.get_version("iris", version)
            assert registry.artifacts.blob_path(record.sha256, record.filename).is_file()
    finally:
        if load is not None:
            load.stop()
        if nginx is not None:
            nginx.stop()
        for replica in replicas:
            replica.stop()
