"""A replica whose PostgreSQL goes away keeps serving what it has loaded, refuses writes with 503, and
catches up when the database returns."""

from __future__ import annotations

from pathlib import Path

import httpx
import joblib

from ferryman.client import Client
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head
from tests.conftest import ServerProcess, wait_for
from tests.pg import PostgresCluster, postgres  # noqa: F401 (fixture)
from tests.replicas.replicas import infer_status, replica_env, start_replica


def test_a_replica_without_its_database_serves_refuses_writes_and_catches_up(
    tmp_path: Path,
    postgres: PostgresCluster,  # noqa: F811
    iris_joblib: Path,
    iris_pipeline: object,
) -> None:
    url = postgres.create_database()
    artifacts = tmp_path / "artifacts"
    engine = create_registry_engine(url)
    upgrade_to_head(engine)
    _, admin = RegistryService(engine, ArtifactStore(artifacts)).create_key("admin")
    engine.dispose()
    replica = start_replica(tmp_path / "a", replica_env(url, artifacts))
    auth = {"Authorization": f"Bearer {admin}"}
    second_copy = tmp_path / "iris-v2.joblib"
    joblib.dump(iris_pipeline, second_copy, compress=3)
    empty: ServerProcess | None = None
    try:
        # A replica with nothing to serve, on a database of its own.
        empty = start_replica(tmp_path / "empty", replica_env(postgres.create_database(), tmp_path / "empty-art"))
        with Client(replica.url, api_key=admin) as client:
            client.push(iris_joblib, "iris")
            assert infer_status(replica.url, "iris", headers=auth) == 200
            postgres.stop()
            try:
                # Inference (key check included) never touches the database.
                assert [infer_status(replica.url, "iris", headers=auth) for _ in range(20)] == [200] * 20
                assert httpx.get(f"{replica.url}/v2/health/live").status_code == 200
                # Something is loaded, so the replica stays in the load balancer.
                wait_for(lambda: "registry check failed" in replica.logs(), "the replica to notice", 10)
                assert httpx.get(f"{replica.url}/v2/health/ready").status_code == 200
                # Nothing loaded and no database: out of the load balancer, but alive.
                wait_for(lambda: httpx.get(f"{empty.url}/v2/health/ready").status_code == 503, "empty not ready")
                assert "registry database is unreachable" in httpx.get(f"{empty.url}/v2/health/ready").text
                assert httpx.get(f"{empty.url}/v2/health/live").status_code == 200
                refused = httpx.put(
                    f"{replica.url}/api/v1/models/iris/aliases/production", json={"version": 1}, headers=auth
                )
                assert refused.status_code == 503, refused.text
                assert "registry database is unavailable" in refused.json()["error"]
                # Unknown names still get a 404 from the snapshot, not an error.
                assert infer_status(replica.url, "nope", headers=auth) == 404
            finally:
                postgres.start()
            wait_for(lambda: httpx.get(f"{empty.url}/v2/health/ready").status_code == 200, "empty ready again")
            # Back: a write from elsewhere (another replica's) is heard over the re-established LISTEN.
            other = RegistryService(create_registry_engine(url), ArtifactStore(artifacts))
            staged = other.artifacts.stage(second_copy.open("rb"), "iris.joblib", max_bytes=1 << 30)
            record = other.get_version("iris", 1)
            other.register_version(
                "iris",
                staged,
                framework=record.framework,
                signature=record.signature,
                runtime_config=record.runtime_config,
            )
            wait_for(lambda: infer_status(replica.url, "iris", version=2, headers=auth) == 200, "v2 after the outage")
            assert client.set_alias("iris", "production", 2)["version"] == 2
    finally:
        replica.stop()
        if empty is not None:
            empty.stop()
