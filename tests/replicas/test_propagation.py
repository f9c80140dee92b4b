"""Writes made through one replica reach another at once: versions, aliases, key revocation and rotation.

On PostgreSQL the revision (and repository) poll is set to 30 s, so anything seen within 2 s was
carried by LISTEN/NOTIFY; on SQLite the default 0.25 s poll (0.5 s for keys) does the work.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import joblib

from ferryman.client import Client
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head
from tests.conftest import wait_for
from tests.pg import database_url, postgres  # noqa: F401 (fixtures)
from tests.replicas.replicas import IRIS_ROW, infer_status, replica_env, start_replica

#: What "at once" means across processes (the requirement for a revoked key; also used for versions).
PROPAGATION_S = 2.0


def served_version(url: str, key: str) -> str | None:
    """The version that answers an inference naming no version, or None when it fails."""
    try:
        response = httpx.post(
            f"{url}/v2/models/iris/infer", json=IRIS_ROW, headers={"Authorization": f"Bearer {key}"}, timeout=5.0
        )
    except httpx.TransportError:
        return None
    return str(response.json().get("model_version")) if response.status_code == 200 else None


def test_writes_through_one_replica_reach_the_other_within_two_seconds(
    tmp_path: Path,
    database_url: str,  # noqa: F811
    iris_joblib: Path,
    iris_pipeline: object,
) -> None:
    artifacts = tmp_path / "artifacts"
    engine = create_registry_engine(database_url)
    upgrade_to_head(engine)
    registry = RegistryService(engine, ArtifactStore(artifacts))
    _, admin = registry.create_key("admin", name="ops")
    predictor_record, predictor = registry.create_key("predictor", name="app")
    engine.dispose()
    # On PostgreSQL no poll runs within the test's deadlines: whatever arrives in time came by NOTIFY.
    quiet = {"FERRYMAN_REGISTRY_POLL_SECONDS": "30", "FERRYMAN_REPOSITORY_POLL_SECONDS": "30"}
    extra = quiet if database_url.startswith("postgresql") else {}
    env = replica_env(database_url, artifacts, **extra)
    first = start_replica(tmp_path / "a", env)
    second = start_replica(tmp_path / "b", env)
    try:
        as_app = {"Authorization": f"Bearer {predictor}"}
        second_copy = tmp_path / "iris-v2.joblib"
        joblib.dump(iris_pipeline, second_copy, compress=3)  # same model, other bytes: version 2
        with Client(first.url, api_key=admin) as client:
            client.push(iris_joblib, "iris")
            wait_for(lambda: infer_status(second.url, "iris", headers=as_app) == 200, "v1 on B", PROPAGATION_S)

            client.push(second_copy, "iris")
            client.set_alias("iris", "production", 1)
            wait_for(lambda: served_version(second.url, predictor) == "1", "production → 1 on B", PROPAGATION_S)
            client.set_alias("iris", "production", 2)
            wait_for(lambda: served_version(second.url, predictor) == "2", "production → 2 on B", PROPAGATION_S)

            rotated = client.rotate_key(predictor_record.key_id)
            new_key = rotated["key"]
            wait_for(
                lambda: infer_status(second.url, "iris", headers={"Authorization": f"Bearer {new_key}"}) == 200,
                "the rotated key to work on B",
                PROPAGATION_S,
            )
            wait_for(lambda: infer_status(second.url, "iris", headers=as_app) == 401, "the old key refused on B", 2)
            client.revoke_key(rotated["key_id"])
            wait_for(
                lambda: infer_status(second.url, "iris", headers={"Authorization": f"Bearer {new_key}"}) == 401,
                "the revoked key refused on B",
                PROPAGATION_S,
            )
    finally:
        first.stop()
        second.stop()
