"""Authorization: the route table walked for every role, model in and out of scope; the cases that matter most."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferryman.app import build_components, create_app
from ferryman.config import Settings
from ferryman.protocols.route_permissions import ROUTES, app_routes, undeclared
from ferryman.security import Principal, Role
from tests.conftest import ServerProcess, wait_for
from tests.security.conftest import IRIS_ROW, auth, copy_model, make_key, open_registry, registry_state

ROLES = ("admin", "deployer", "predictor", "viewer")
IN_SCOPE, OUT_OF_SCOPE = "alpha-ghost", "beta-ghost"
PARAMETERS = {"version": "1", "alias": "production", "key_id": "zzzzzzzzzzzz", "rule": "no-rule", "webhook": "no-hook"}


@pytest.fixture(scope="module")
def served_routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """The (method, path) routes of an app built by the real composition root."""
    components = build_components(Settings(home=tmp_path_factory.mktemp("routes") / "home"))
    try:
        return app_routes(create_app(components))
    finally:
        components.inference_pool.shutdown()
        components.io_pool.shutdown()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, iris_joblib: Path
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A server with models iris and fraud and, per role, an unrestricted key and one limited to alpha-* / iris."""
    root = tmp_path_factory.mktemp("authz")
    home = root / "home"
    keys: dict[str, str] = {}
    for role in ROLES:
        keys[role] = make_key(home, role)
        keys[f"{role}@alpha"] = make_key(home, role, ["alpha-*"])
        keys[f"{role}@iris"] = make_key(home, role, ["iris"])
    fraud = copy_model(iris_joblib, root / "models", "fraud")
    process = ServerProcess(home, [str(iris_joblib), str(fraud)])
    process.wait_ready()
    yield process, keys
    process.stop()


def test_every_route_declares_its_permission(served_routes: list[tuple[str, str]]) -> None:
    assert undeclared(served_routes) == [], "add these routes to protocols/route_permissions.py"
    stale = sorted(set(ROUTES) - set(served_routes))
    assert stale == [], f"the route table declares routes the app does not serve: {stale}"


def _fill(template: str, model: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return model if name in ("name", "model") else PARAMETERS[name]

    return re.sub(r"\{(\w+)\}", value, template)


def test_route_table_walk_every_role_in_and_out_of_scope(
    server: tuple[ServerProcess, dict[str, str]], served_routes: list[tuple[str, str]]
) -> None:
    process, keys = server
    before = registry_state(process.home)
    failures: list[str] = []
    with httpx.Client(base_url=process.url, timeout=30) as client:
        for method, template in served_routes:
            rule = ROUTES[(method, template)]
            body = {} if method in ("POST", "PUT") else None
            anonymous = client.request(method, _fill(template, IN_SCOPE), json=body)
            public = rule.permission is None
            if public != (anonymous.status_code not in (401, 403)):
                failures.append(f"{method} {template} without credentials: {anonymous.status_code}")
            if public:
                continue
            for role in ROLES:
                cases = [(keys[role], None, IN_SCOPE), (keys[f"{role}@alpha"], ("alpha-*",), IN_SCOPE)]
                cases.append((keys[f"{role}@alpha"], ("alpha-*",), OUT_OF_SCOPE))
                for key, scope, model in cases:
                    principal = Principal("walker", Role(role), scope)
                    allowed = principal.may(rule.permission, model if rule.model else None)
                    response = client.request(method, _fill(template, model), json=body, headers=auth(key))
                    status = response.status_code
                    ok = (status not in (401, 403) and status < 500) if allowed else status == 403
                    if not ok:
                        what = f"{method} {template} as {role} limited to {scope} on {model}"
                        failures.append(f"{what}: expected {'allowed' if allowed else '403'}, got {status}")
    assert failures == [], "\n".join(failures)
    assert registry_state(process.home) == before


def test_wrong_role_is_forbidden_and_changes_nothing(
    server: tuple[ServerProcess, dict[str, str]], iris_joblib: Path
) -> None:
    process, keys = server
    before = registry_state(process.home)
    url = process.url
    viewer_infer = httpx.post(f"{url}/v2/models/iris/infer", json=IRIS_ROW, headers=auth(keys["viewer"]))
    assert viewer_infer.status_code == 403
    assert "lacks the 'infer' permission on model 'iris'" in viewer_infer.json()["error"]
    with iris_joblib.open("rb") as artifact:
        push = httpx.post(
            f"{url}/api/v1/models/iris/versions", files={"artifact": artifact}, headers=auth(keys["predictor"])
        )
    assert push.status_code == 403
    assert httpx.delete(f"{url}/api/v1/models/iris", headers=auth(keys["viewer"])).status_code == 403
    alias = httpx.put(f"{url}/api/v1/models/iris/aliases/production", json={"version": 1}, headers=auth(keys["viewer"]))
    assert alias.status_code == 403
    key = httpx.post(f"{url}/api/v1/keys", json={"role": "admin"}, headers=auth(keys["deployer"]))
    assert key.status_code == 403
    scoped_admin = httpx.post(f"{url}/api/v1/keys", json={"role": "admin"}, headers=auth(keys["admin@iris"]))
    assert scoped_admin.status_code == 403
    assert "limited to some models" in scoped_admin.json()["error"]
    assert registry_state(process.home) == before


def test_right_role_on_the_wrong_model_is_forbidden(server: tuple[ServerProcess, dict[str, str]]) -> None:
    process, keys = server
    before = registry_state(process.home)
    url = process.url
    deployer = auth(keys["deployer@iris"])
    refused = httpx.put(f"{url}/api/v1/models/fraud/aliases/production", json={"version": 1}, headers=deployer)
    assert refused.status_code == 403
    assert "may not use 'alias' on model 'fraud'" in refused.json()["error"]
    assert httpx.delete(f"{url}/api/v1/models/fraud", headers=deployer).status_code == 403
    predictor = auth(keys["predictor@iris"])
    assert httpx.post(f"{url}/v2/models/fraud/infer", json=IRIS_ROW, headers=predictor).status_code == 403
    assert httpx.post(f"{url}/v2/models/iris/infer", json=IRIS_ROW, headers=predictor).status_code == 200
    assert registry_state(process.home) == before


def test_model_lists_show_only_the_models_in_scope(server: tuple[ServerProcess, dict[str, str]]) -> None:
    process, keys = server
    listed = httpx.get(f"{process.url}/api/v1/models", headers=auth(keys["viewer@iris"])).json()["models"]
    assert [m["name"] for m in listed] == ["iris"]
    everything = httpx.get(f"{process.url}/api/v1/models", headers=auth(keys["viewer"])).json()["models"]
    assert [m["name"] for m in everything] == ["fraud", "iris"]


def test_pinning_a_version_needs_traffic_or_rollout_rights(server: tuple[ServerProcess, dict[str, str]]) -> None:
    process, keys = server
    pinned = {"x-ferryman-version": "1"}
    refused = httpx.post(
        f"{process.url}/v2/models/iris/infer", json=IRIS_ROW, headers={**pinned, **auth(keys["predictor"])}
    )
    assert refused.status_code == 403
    assert refused.json()["error"].startswith("x-ferryman-version:")
    allowed = httpx.post(
        f"{process.url}/v2/models/iris/infer", json=IRIS_ROW, headers={**pinned, **auth(keys["deployer"])}
    )
    assert allowed.status_code == 200, allowed.text


def test_management_actions_are_audited_with_principal_target_outcome_and_address(
    server: tuple[ServerProcess, dict[str, str]],
) -> None:
    process, keys = server
    deployer = keys["deployer"]
    url = process.url
    assert httpx.put(
        f"{url}/api/v1/models/fraud/aliases/staging", json={"version": 1}, headers=auth(deployer)
    ).is_success
    missing = httpx.put(f"{url}/api/v1/models/fraud/aliases/staging", json={"version": 9}, headers=auth(deployer))
    assert missing.status_code == 404
    registry = open_registry(process.home)

    def records() -> list[dict[str, object]]:
        return [r.to_dict() for r in registry.list_audit(action="alias.set", target_prefix="models/fraud")]

    wait_for(lambda: len(records()) >= 2, "the alias changes to be audited", deadline_s=5)
    failed, done = records()[:2]
    principal = f"key:{deployer.split('_')[1]}"
    assert done["principal"] == principal and done["outcome"] == "success"
    assert done["target"] == "models/fraud/aliases/staging" and done["source_address"] == "127.0.0.1"
    assert failed["outcome"] == "failed" and "no version 9" in str(failed["details"])
