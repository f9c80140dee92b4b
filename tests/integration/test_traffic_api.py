"""Versions in production over real HTTP: rollback, optimistic writes, traffic and version policies,
rollouts and feedback — through the API by hand, the Python client and the CLI, against one server.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner, Result

import ferryman
from ferryman.cli.main import app
from ferryman.errors import Conflict
from tests.conftest import ServerProcess
from tests.integration.test_v2_rest import assert_error, push

pytestmark = pytest.mark.timeout(180)

ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
runner = CliRunner()


@pytest.fixture(scope="module")
def weak_joblib(tmp_path_factory: pytest.TempPathFactory, iris_data: tuple[np.ndarray, np.ndarray]) -> Path:
    """A second iris classifier with different bytes."""
    path = tmp_path_factory.mktemp("weak") / "iris-weak.joblib"
    joblib.dump(LogisticRegression(C=0.05, max_iter=500).fit(*iris_data), path)
    return path


def two_versions(server: ServerProcess, name: str, first: Path, second: Path) -> str:
    """Push both artifacts as versions 1 and 2 of ``name``, production → 1; returns the model URL."""
    assert push(server.url, name, first)["version"]["version"] == 1
    assert push(server.url, name, second)["version"]["version"] == 2
    url = f"{server.url}/api/v1/models/{name}"
    assert httpx.put(f"{url}/aliases/production", json={"version": 1}).status_code == 200
    return url


def served_version(server: ServerProcess, name: str) -> str:
    response = httpx.post(f"{server.url}/v2/models/{name}/infer", json=ROW)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def cli(server: ServerProcess, *args: str) -> Result:
    return runner.invoke(app, [*args, "--url", server.url], env={"COLUMNS": "240"})


def cli_json(server: ServerProcess, *args: str) -> Any:
    result = cli(server, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- rollback and optimistic alias writes --------------------------------------------------------


def test_rollback_and_expected_versions(ferryman_server: ServerProcess, iris_joblib: Path, weak_joblib: Path) -> None:
    url = two_versions(ferryman_server, "rb", iris_joblib, weak_joblib)
    assert httpx.put(f"{url}/aliases/production", json={"version": 2}).json()["previous"] == 1
    assert served_version(ferryman_server, "rb") == "2"

    rolled = httpx.post(f"{url}/aliases/production/rollback")
    assert rolled.status_code == 200, rolled.text
    assert rolled.json() == {"model": "rb", "alias": "production", "version": 1, "previous": 2}
    assert served_version(ferryman_server, "rb") == "1"
    assert httpx.post(f"{url}/aliases/production/rollback", json={"expected_version": 1}).json()["version"] == 2
    assert served_version(ferryman_server, "rb") == "2"
    history = httpx.get(f"{url}/aliases/production/history").json()["history"]
    assert [(h["from_version"], h["to_version"]) for h in history] == [(1, 2), (2, 1), (1, 2), (None, 1)]

    stale = httpx.post(f"{url}/aliases/production/rollback", json={"expected_version": 1})
    assert_error(stale, 409, "points at version 2, not the expected version 1")
    assert_error(
        httpx.post(f"{url}/aliases/production/rollback", json={"expected_version": "1"}), 400, "expected_version"
    )
    assert_error(httpx.post(f"{url}/aliases/production/rollback", json={"version": 1}), 400, "version: unknown field")
    assert_error(httpx.post(f"{url}/aliases/staging/rollback"), 404, "has no alias 'staging'")
    assert httpx.put(f"{url}/aliases/staging", json={"version": 1}).status_code == 200
    assert_error(httpx.post(f"{url}/aliases/staging/rollback"), 409, "no previous version to roll back to")

    conflict = httpx.put(f"{url}/aliases/production", json={"version": 1, "expected_version": 1})
    assert_error(conflict, 409, "alias 'production' of 'rb' points at version 2, not the expected version 1")
    assert_error(
        httpx.put(f"{url}/aliases/production", json={"version": 1, "expected_version": "x"}), 400, "expected_version"
    )
    moved = httpx.put(f"{url}/aliases/production", json={"version": 1, "expected_version": 2})
    assert moved.status_code == 200 and moved.json()["previous"] == 2


def test_concurrent_conflicting_alias_writes_over_http(
    ferryman_server: ServerProcess, iris_joblib: Path, weak_joblib: Path
) -> None:
    url = two_versions(ferryman_server, "race", iris_joblib, weak_joblib)
    httpx.post(f"{url}/versions/2/load").raise_for_status()
    barrier = threading.Barrier(2)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def write(version: int) -> None:
        barrier.wait()
        response = httpx.put(f"{url}/aliases/production", json={"version": version, "expected_version": 1}, timeout=60)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=write, args=(v,)) for v in (2, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    loser = next(r for r in responses if r.status_code == 409)
    assert "points at version 2, not the expected version 1" in loser.json()["error"]


# -- traffic policy ------------------------------------------------------------------------------


def test_traffic_policy_with_etags_and_history(
    ferryman_server: ServerProcess, iris_joblib: Path, weak_joblib: Path
) -> None:
    url = two_versions(ferryman_server, "tp", iris_joblib, weak_joblib)
    httpx.put(f"{url}/aliases/candidate", json={"version": 2}).raise_for_status()
    empty = httpx.get(f"{url}/traffic")
    assert empty.json() == {"model": "tp", "policy": None, "revision": 0}
    assert empty.headers["etag"] == '"0"'

    policy = {
        "split": [{"target": "production", "weight": 90}, {"target": "candidate", "weight": 10}],
        "sticky": {"header": "x-ferryman-route-key", "input": "user_id"},
        "shadow": {"target": "2", "fraction": 0.25},
    }
    created = httpx.put(f"{url}/traffic", json=policy, headers={"If-Match": '"0"'})
    assert created.status_code == 200, created.text
    assert created.json() == {"model": "tp", "policy": policy, "revision": 1}
    assert created.headers["etag"] == '"1"'
    assert httpx.get(f"{url}/traffic").headers["etag"] == '"1"'

    other = {"split": [{"target": "production", "weight": 50}, {"target": "candidate", "weight": 50}]}
    stale = httpx.put(f"{url}/traffic", json=other, headers={"If-Match": '"0"'})
    assert_error(stale, 409, "the traffic policy of 'tp' is at revision 1, not the expected revision 0")
    assert_error(httpx.put(f"{url}/traffic", json=other, headers={"If-Match": "yesterday"}), 400, "If-Match")
    assert_error(
        httpx.put(f"{url}/traffic", json={"split": [{"target": "production", "weight": 90}]}), 400, "traffic.split"
    )
    assert_error(httpx.put(f"{url}/traffic", json={"shadow": {"target": "9"}}), 404, "names version 9")
    assert_error(httpx.put(f"{url}/traffic", json={"shadow": {"target": "staging"}}), 404, "alias 'staging'")
    assert_error(httpx.put(f"{url}/traffic", content=b"{not json"), 400, "not valid JSON")
    assert_error(httpx.put(f"{url}/traffic", json=[1]), 400, "JSON object")
    assert_error(httpx.put(f"{ferryman_server.url}/api/v1/models/ghost/traffic", json=other), 404, "'ghost' not found")

    assert_error(httpx.delete(f"{url}/versions/2"), 409, "named by the traffic policy")
    assert_error(httpx.delete(f"{url}/aliases/candidate"), 409, "named by the traffic policy")

    changed = httpx.put(f"{url}/traffic", json=other, headers={"If-Match": 'W/"1"'})
    assert changed.status_code == 200 and changed.headers["etag"] == '"2"'
    assert_error(httpx.delete(f"{url}/traffic", headers={"If-Match": '"1"'}), 409, "at revision 2")
    cleared = httpx.delete(f"{url}/traffic", headers={"If-Match": '"2"'})
    assert cleared.status_code == 204 and cleared.headers["etag"] == '"3"'
    assert_error(httpx.delete(f"{url}/traffic"), 404, "has no traffic policy")
    assert httpx.get(f"{url}/traffic").json() == {"model": "tp", "policy": None, "revision": 3}
    history = httpx.get(f"{url}/traffic/history").json()["history"]
    assert [(h["revision"], h["old_policy"], h["new_policy"]) for h in history] == [
        (3, other, None),
        (2, policy, other),
        (1, None, policy),
    ]


def test_version_policy_over_http(ferryman_server: ServerProcess, iris_joblib: Path, weak_joblib: Path) -> None:
    url = two_versions(ferryman_server, "vp", iris_joblib, weak_joblib)
    default = {"model": "vp", "policy": {"keep": "aliased_and_latest", "latest": 1}}
    assert httpx.get(f"{url}/version-policy").json() == default
    stored = httpx.put(f"{url}/version-policy", json={"keep": "explicit", "versions": [2, 1]})
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"model": "vp", "policy": {"keep": "explicit", "versions": [1, 2]}}
    assert httpx.get(f"{url}/version-policy").json()["policy"] == {"keep": "explicit", "versions": [1, 2]}
    assert_error(httpx.put(f"{url}/version-policy", json={"keep": "some"}), 400, "keep: expected")
    assert_error(httpx.put(f"{url}/version-policy", json={"keep": "explicit", "versions": [3]}), 404, "versions[0]")
    assert_error(httpx.put(f"{url}/version-policy", json={"keep": "aliased_and_latest", "latest": -2}), 400, "latest")
    assert_error(httpx.delete(f"{url}/versions/2"), 409, "kept by the explicit version policy")


# -- rollouts ------------------------------------------------------------------------------------


def test_rollouts_over_http(ferryman_server: ServerProcess, iris_joblib: Path, weak_joblib: Path) -> None:
    url = two_versions(ferryman_server, "ro", iris_joblib, weak_joblib)
    assert_error(httpx.get(f"{url}/rollouts/current"), 404, "model 'ro' has no rollout")
    assert httpx.get(f"{url}/rollouts").json() == {"rollouts": []}
    assert_error(httpx.post(f"{url}/rollouts/current/pause"), 404, "has no rollout")

    for body, status, fragment in [
        ({}, 400, "to: required"),
        ({"to": "two"}, 400, "to: expected a positive version number"),
        ({"to": 9}, 404, "has no version 9"),
        ({"to": 1}, 409, "already points at version 1"),
        ({"to": 2, "steps": [5, 50]}, 400, "steps: the last step must be 100"),
        ({"to": 2, "steps": [5, 200]}, 400, "steps[1]"),
        ({"to": 2, "interval": "soon"}, 400, "interval: expected a duration"),
        ({"to": 2, "guards": {"max_error_rate": "lots"}}, 400, "guards.max_error_rate"),
        ({"to": 2, "alias": "staging"}, 404, "no alias 'staging'"),
        ({"to": 2, "speed": "fast"}, 400, "speed: unknown field"),
    ]:
        assert_error(httpx.post(f"{url}/rollouts", json=body), status, fragment)

    body = {"to": 2, "steps": [5, 25, 50, 100], "interval": "10m", "guards": {"max_error_rate": "1%", "max_p99_ms": 50}}
    started = httpx.post(f"{url}/rollouts", json=body)
    assert started.status_code == 201, started.text
    rollout = started.json()
    assert {k: rollout[k] for k in ("model", "alias", "from_version", "to_version", "state", "weight")} == {
        "model": "ro",
        "alias": "production",
        "from_version": 1,
        "to_version": 2,
        "state": "running",
        "weight": 5,
    }
    assert (rollout["interval_s"], rollout["guards"]) == (600, {"max_error_rate": 0.01, "max_p99_ms": 50})
    assert_error(httpx.post(f"{url}/rollouts", json=body), 409, "already has rollout")
    assert httpx.get(f"{url}/rollouts/current").json() == rollout
    assert_error(httpx.put(f"{url}/aliases/production", json={"version": 2}), 409, "is being rolled out")
    assert_error(httpx.delete(f"{url}/versions/2"), 409, "part of rollout")

    paused = httpx.post(f"{url}/rollouts/current/pause", json={"reason": "looking at the dashboards"})
    assert paused.json()["state"] == "paused" and paused.json()["reason"] == "looking at the dashboards"
    assert_error(httpx.post(f"{url}/rollouts/current/pause"), 409, "is paused, not running")
    assert_error(httpx.post(f"{url}/rollouts/current/resume", json={"reason": 5}), 400, "reason")
    assert httpx.post(f"{url}/rollouts/current/resume").json()["state"] == "running"
    aborted = httpx.post(f"{url}/rollouts/current/abort").json()
    assert (aborted["state"], aborted["weight"]) == ("aborted", 0)
    assert [r["state"] for r in httpx.get(f"{url}/rollouts").json()["rollouts"]] == ["aborted"]
    assert httpx.get(f"{url}/aliases").json() == {"aliases": {"production": 1}}


# -- feedback ------------------------------------------------------------------------------------


def test_feedback_over_http(ferryman_server: ServerProcess, iris_joblib: Path, weak_joblib: Path) -> None:
    url = two_versions(ferryman_server, "fb", iris_joblib, weak_joblib)
    one = httpx.post(f"{url}/feedback", json={"request_id": "req-1", "reward": 1, "version": 2})
    assert one.status_code == 202, one.text
    assert one.json() == {"model": "fb", "count": 1, "matched": 1, "unmatched": 0}
    items = [{"request_id": "req-2", "reward": 0}, {"request_id": "req-3", "label": 2}]
    # Request ids this server never answered are stored and counted, not refused.
    assert httpx.post(f"{url}/feedback", json={"items": items}).json() == {
        "model": "fb",
        "count": 2,
        "matched": 0,
        "unmatched": 2,
    }
    bad = [{"request_id": "a", "reward": 1}, {"request_id": "b", "reward": "good"}]
    assert_error(httpx.post(f"{url}/feedback", json={"items": bad}), 400, "items[1].reward: expected a finite number")
    assert_error(
        httpx.post(f"{url}/feedback", json={"request_id": "a", "reward": None}), 400, "needs a reward or a label"
    )
    assert_error(httpx.post(f"{url}/feedback", json={"request_id": "a", "reward": "x"}), 400, "reward: expected")
    assert_error(httpx.post(f"{url}/feedback", json={"items": [], "extra": 1}), 400, "extra: unknown field")
    assert_error(httpx.post(f"{ferryman_server.url}/api/v1/models/ghost/feedback", json=items[0]), 404, "not found")
    with ferryman.Client(ferryman_server.url) as client:
        assert client.send_feedback("fb", items) == 2


def test_openapi_describes_the_release_routes(ferryman_server: ServerProcess) -> None:
    paths = httpx.get(f"{ferryman_server.url}/openapi.json").json()["paths"]
    for path in [
        "/api/v1/models/{name}/aliases/{alias}/rollback",
        "/api/v1/models/{name}/traffic",
        "/api/v1/models/{name}/traffic/history",
        "/api/v1/models/{name}/version-policy",
        "/api/v1/models/{name}/rollouts",
        "/api/v1/models/{name}/rollouts/current",
        "/api/v1/models/{name}/rollouts/current/abort",
        "/api/v1/models/{name}/feedback",
    ]:
        assert path in paths, path
    assert "requestBody" in paths["/api/v1/models/{name}/traffic"]["put"]


# -- the Python client and the CLI ---------------------------------------------------------------


def test_client_and_cli(ferryman_server: ServerProcess, iris_joblib: Path, weak_joblib: Path) -> None:
    two_versions(ferryman_server, "cl", iris_joblib, weak_joblib)
    with ferryman.Client(ferryman_server.url) as client:
        client.set_alias("cl", "candidate", 2, expected_version=None)
        first = client.set_traffic_policy("cl", {"split": [{"target": "production", "weight": 100}]})
        assert first["revision"] == 1
        with pytest.raises(Conflict, match="at revision 1, not the expected revision 0"):
            client.set_traffic_policy("cl", {"shadow": {"target": "2"}}, expected_revision=0)
        client.clear_traffic_policy("cl", expected_revision=1)
        assert client.traffic_policy("cl")["policy"] is None

    shown = cli(
        ferryman_server,
        "traffic", "set", "cl", "--split", "production=90,candidate=10", "--sticky-header", "x-user",
        "--shadow", "2", "--shadow-fraction", "25%", "--expected-revision", "2",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "production 90%, candidate 10%" in shown.stdout and "(revision 3)" in shown.stdout
    policy = cli_json(ferryman_server, "traffic", "show", "cl")["policy"]
    assert policy == {
        "split": [{"target": "production", "weight": 90}, {"target": "candidate", "weight": 10}],
        "sticky": {"header": "x-user"},
        "shadow": {"target": "2", "fraction": 0.25},
    }
    assert "25% of requests" in cli(ferryman_server, "traffic", "show", "cl").stdout
    stale = cli(ferryman_server, "traffic", "clear", "cl", "--expected-revision", "1")
    assert stale.exit_code == 1 and "at revision 3, not the expected revision 1" in stale.output
    assert cli(ferryman_server, "traffic", "clear", "cl").exit_code == 0
    assert len(cli_json(ferryman_server, "traffic", "history", "cl")["history"]) == 4
    bandit = cli_json(ferryman_server, "traffic", "set", "cl", "--bandit", "thompson", "--arms", "1,2")
    assert bandit["policy"]["bandit"] == {"algorithm": "thompson", "arms": ["1", "2"]}
    cli(ferryman_server, "traffic", "clear", "cl")

    for args, option in [
        (["traffic", "set", "cl", "--split", "production"], "--split"),
        (["traffic", "set", "cl", "--sticky-header", "x-user"], "--sticky-header"),
        (["traffic", "set", "cl"], "--split, --shadow, --bandit or --file"),
        (["traffic", "set", "cl", "--file", "/nonexistent.json"], "--file"),
        (["traffic", "set", "cl", "--shadow", "2", "--shadow-fraction", "lots"], "--shadow-fraction"),
        (["rollout", "start", "cl", "--to", "2", "--interval", "soon"], "--interval"),
        (["rollout", "start", "cl", "--to", "2", "--steps", "5,50"], "--steps"),
        (["rollout", "start", "cl", "--to", "2", "--max-error-rate", "5"], "did you mean 5%?"),
        (["rollout", "start", "cl", "--to", "2", "--max-p99-ms", "fast"], "--max-p99-ms"),
        (["model-policy", "set", "cl"], "--latest N or --versions"),
        (["model-policy", "set", "cl", "--versions", "1,x"], "--versions"),
    ]:
        result = cli(ferryman_server, *args)
        assert result.exit_code == 2, (args, result.output)
        assert option in result.output, (args, result.output)

    started = cli(
        ferryman_server,
        "rollout", "start", "cl", "--to", "2", "--steps", "5,25,50,100", "--interval", "10m",
        "--max-error-rate", "1%", "--max-p99-ms", "50", "--min-agreement", "0.95",
    )  # fmt: skip
    assert started.exit_code == 0, started.output
    assert "Rolling out cl@production: 1 → 2, starting at 5% for 10m" in started.stdout
    status = cli_json(ferryman_server, "rollout", "status", "cl")
    assert status["guards"] == {"max_error_rate": 0.01, "max_p99_ms": 50, "min_agreement": 0.95}
    assert "error rate ≤ 1%" in cli(ferryman_server, "rollout", "status", "cl").stdout
    assert "Paused rollout" in cli(ferryman_server, "rollout", "pause", "cl", "--reason", "lunch").stdout
    assert "Resumed rollout" in cli(ferryman_server, "rollout", "resume", "cl").stdout
    aborted = cli(ferryman_server, "rollout", "abort", "cl")
    assert aborted.exit_code == 0 and "production stays on version 1" in aborted.stdout
    again = cli(ferryman_server, "rollout", "abort", "cl")
    assert again.exit_code == 1 and "is aborted, not running or paused" in again.output
    assert [r["state"] for r in cli_json(ferryman_server, "rollout", "list", "cl")["rollouts"]] == ["aborted"]

    assert (
        "keeps aliased versions and the 2 newest versions"
        in cli(ferryman_server, "model-policy", "set", "cl", "--latest", "2").stdout
    )
    assert cli_json(ferryman_server, "model-policy", "show", "cl")["policy"] == {
        "keep": "aliased_and_latest",
        "latest": 2,
    }
    assert "exactly versions 1, 2" in cli(ferryman_server, "model-policy", "set", "cl", "--versions", "2,1").stdout

    assert cli(ferryman_server, "alias", "set", "cl", "production", "2", "--expected-version", "1").exit_code == 0
    refused = cli(ferryman_server, "alias", "set", "cl", "production", "1", "--expected-version", "1")
    assert refused.exit_code == 1 and "not the expected version 1" in refused.output
    rolled = cli(ferryman_server, "rollback", "cl")
    assert rolled.exit_code == 0, rolled.output
    assert "cl@production → 1 (rolled back from 2)" in rolled.stdout
    assert cli_json(ferryman_server, "alias", "rollback", "cl", "production")["version"] == 2
    nothing = cli(ferryman_server, "alias", "rollback", "cl", "candidate")
    assert nothing.exit_code == 1 and "no previous version" in nothing.output
