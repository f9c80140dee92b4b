"""The management API by hand: versions, aliases with history, deletes, load/unload, OpenAPI docs."""

from __future__ import annotations

from pathlib import Path

import httpx
import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

from tests.conftest import ServerProcess
from tests.integration.test_v2_rest import assert_error, push

ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


def test_versions_aliases_history_and_guarded_deletes(
    ferryman_server: ServerProcess,
    iris_joblib: Path,
    iris_data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    url = f"{ferryman_server.url}/api/v1/models/flower"
    first = push(ferryman_server.url, "flower", iris_joblib)
    assert first["created"] and first["version"]["version"] == 1
    again = push(ferryman_server.url, "flower", iris_joblib)
    assert not again["created"] and again["version"]["sha256"] == first["version"]["sha256"]
    joblib.dump(LogisticRegression(C=0.1, max_iter=300).fit(*iris_data), tmp_path / "v2.joblib")
    assert push(ferryman_server.url, "flower", tmp_path / "v2.joblib")["version"]["version"] == 2

    model = httpx.get(url).json()
    assert (model["latest_version"], model["version_count"], model["default_version"]) == (2, 2, 2)
    assert [v["version"] for v in httpx.get(f"{url}/versions").json()["versions"]] == [1, 2]
    assert httpx.post(f"{ferryman_server.url}/v2/models/flower/infer", json=ROW).json()["model_version"] == "2"

    assert httpx.put(f"{url}/aliases/production", json={"version": 1}).json()["previous"] is None
    assert httpx.post(f"{ferryman_server.url}/v2/models/flower/infer", json=ROW).json()["model_version"] == "1"
    assert (
        httpx.post(f"{ferryman_server.url}/v2/models/flower/versions/production/infer", json=ROW).json()[
            "model_version"
        ]
        == "1"
    )
    assert httpx.put(f"{url}/aliases/production", json={"version": 2}).json()["previous"] == 1
    assert httpx.get(f"{url}/aliases").json() == {"aliases": {"production": 2}}
    history = httpx.get(f"{url}/aliases/production/history").json()["history"]
    assert [(h["from_version"], h["to_version"]) for h in history] == [(1, 2), (None, 1)]

    assert_error(httpx.delete(f"{url}/versions/2"), 409, "production")
    assert httpx.get(f"{url}/versions/2").json()["aliases"] == ["production"]
    assert_error(httpx.delete(url), 409, "alias")
    assert httpx.delete(f"{url}/versions/1").status_code == 204
    assert_error(httpx.get(f"{url}/versions/1"), 404, "no version 1")
    assert_error(httpx.put(f"{url}/aliases/production", json={"version": 9}), 404, "no version 9")
    assert_error(httpx.put(f"{url}/aliases/production", json={"version": "two"}), 400, "version")
    assert_error(httpx.put(f"{url}/aliases/Prod", json={"version": 2}), 400, "alias")
    assert_error(httpx.delete(f"{url}/aliases/staging"), 404, "staging")

    assert httpx.post(f"{url}/versions/2/unload").json()["state"] == "unloaded"
    assert httpx.post(f"{url}/versions/2/load").json()["state"] == "loaded"
    assert httpx.delete(f"{url}/aliases/production").status_code == 204
    assert httpx.delete(url).status_code == 204
    assert_error(httpx.get(url), 404, "model 'flower' not found")


def test_openapi_document_describes_both_surfaces(ferryman_server: ServerProcess) -> None:
    document = httpx.get(f"{ferryman_server.url}/openapi.json").json()
    for path in [
        "/v2/models/{model}/infer",
        "/v2/health/ready",
        "/api/v1/models/{name}/versions",
        "/api/v1/models/{name}/aliases/{alias}",
    ]:
        assert path in document["paths"], path
    docs = httpx.get(f"{ferryman_server.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_unknown_routes_and_methods_get_v2_errors(ferryman_server: ServerProcess) -> None:
    assert_error(httpx.get(f"{ferryman_server.url}/v3/nothing"), 404, "Not Found")
    assert_error(httpx.get(f"{ferryman_server.url}/v2/models/x/infer"), 405, "Method Not Allowed")
