"""Management actions in the audit trail: pushes, aliases, loads, a rollout and the controller's own steps."""

from __future__ import annotations

from pathlib import Path

import httpx
import joblib

import ferryman
from tests.conftest import ServerFactory, wait_for
from tests.security.conftest import auth, make_key, open_registry


def test_a_release_is_recorded_step_by_step(
    server_factory: ServerFactory, tmp_path: Path, iris_joblib: Path, iris_pipeline: object
) -> None:
    home = tmp_path / "home"
    deployer = make_key(home, "deployer", name="ci")
    who = f"key:{deployer.split('_')[1]}"
    server = server_factory(home=home)
    second = tmp_path / "iris-v2.joblib"
    joblib.dump(iris_pipeline, second, compress=3)  # the same model, other bytes: a new version
    with ferryman.Client(server.url, api_key=deployer) as client:
        client.push(iris_joblib, "iris")
        client.push(second, "iris")
        client.set_alias("iris", "production", 1)
        client.load("iris", 2)
    started = httpx.post(
        f"{server.url}/api/v1/models/iris/rollouts",
        json={"to": 2, "steps": [50, 100], "interval": "1s"},
        headers=auth(deployer),
        timeout=60,
    )
    assert started.status_code == 201, started.text
    wait_for(
        lambda: (
            httpx.get(f"{server.url}/api/v1/models/iris/rollouts/current", headers=auth(deployer)).json()["state"]
            == "completed"
        ),
        "the rollout to complete",
        deadline_s=20,
    )
    registry = open_registry(home)

    def actions() -> list[tuple[str, str, str, str]]:
        records = registry.list_audit(target_prefix="models/iris", limit=100)
        return [(r.principal, r.action, r.target, r.outcome) for r in reversed(records)]

    wait_for(lambda: ("rollout-controller", "rollout.complete") in {a[:2] for a in actions()}, "the completion record")
    recorded = actions()
    assert (who, "version.push", "models/iris/versions/1", "success") in recorded
    assert (who, "version.push", "models/iris/versions/2", "success") in recorded
    assert (who, "alias.set", "models/iris/aliases/production", "success") in recorded
    assert (who, "version.load", "models/iris/versions/2/load", "success") in recorded
    assert (who, "rollout.start", "models/iris/rollouts", "success") in recorded
    controller = [a for a in recorded if a[0] == "rollout-controller"]
    assert [a[1] for a in controller] == ["rollout.step", "rollout.complete"]
    assert all(a[2].startswith("models/iris/rollouts/") for a in controller)
    assert registry.verify_audit().ok
