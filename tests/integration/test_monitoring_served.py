"""Drift, data quality and reference profiles on a real server, over HTTP and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from typer.testing import CliRunner

import ferryman
from ferryman.cli.main import app
from tests.conftest import ServerFactory, ServerProcess
from tests.integration.test_metrics import key, scrape

pytestmark = pytest.mark.timeout(240)

WINDOW = 200
#: Monitor every request, whatever the default sample rate; windows of 200 rows.
MONITORED = {"FERRYMAN_MONITORING_SAMPLE_RATE": "1", "FERRYMAN_MONITORING_WINDOW_ROWS": str(WINDOW)}


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A classifier on 4 standard-normal features (label from the first two) that handles NaN, and its sample."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3000, 4))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    folder = tmp_path_factory.mktemp("churn")
    model = folder / "churn.joblib"
    joblib.dump(HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(features, labels), model)
    sample = folder / "sample.npy"
    np.save(sample, features[:1000])
    return model, sample


def infer(server: ServerProcess, name: str, rows: np.ndarray) -> httpx.Response:
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    return httpx.post(f"{server.url}/v2/models/{name}/infer", content=json.dumps(body), timeout=30)


def send(server: ServerProcess, name: str, rows: np.ndarray, per_request: int = 50) -> None:
    for start in range(0, len(rows), per_request):
        response = infer(server, name, rows[start : start + per_request])
        assert response.status_code == 200, response.text


def drift(server: ServerProcess, name: str, version: int = 1) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/v1/models/{name}/versions/{version}/drift", timeout=30)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def test_sample_profile_drift_quality_and_metrics(server_factory: ServerFactory, churn: tuple[Path, Path]) -> None:
    server = server_factory(env=MONITORED)
    model, sample = churn
    pushed = CliRunner().invoke(
        app, ["push", str(model), "--name", "churn", "--sample", str(sample), "--json", "--url", server.url]
    )
    assert pushed.exit_code == 0, pushed.output

    before = drift(server, "churn")
    assert before["status"] == "no traffic"
    assert before["source"] == "sample" and before["profile"] == {"source": "sample", "rows": 1000}
    assert before["verdict"] == "not enough data"

    rng = np.random.default_rng(7)
    for window in range(3):  # in distribution: no false alarm, window after window
        send(server, "churn", rng.normal(size=(WINDOW, 4)))
        report = drift(server, "churn")
        assert report["status"] == "monitoring"
        assert report["rows"] == WINDOW and report["rows_observed"] == WINDOW * (window + 1)
        assert report["verdict"] == "no drift", report
        assert set(report["features"]) == {"input[0]", "input[1]", "input[2]", "input[3]"}
        assert report["features"]["input[0]"]["test"] == "ks"
        assert report["predictions"]["predict"]["test"] == "chi2"

    shifted = rng.normal(size=(WINDOW, 4))
    shifted[:, 2] += 1.0
    send(server, "churn", shifted)  # exactly one window
    report = drift(server, "churn")
    assert report["verdict"] == "drift"
    assert report["drifted_features"] == ["input[2]"]
    assert report["features"]["input[2]"]["psi"] > 0.2

    quality_before = report["quality"]["features"]
    rows = rng.normal(size=(10, 4))
    rows[:, 1] = np.nan  # the model accepts NaN (allow_nan from its tags)
    rows[0, 0] = 1e6
    send(server, "churn", rows)
    bad = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]}
    assert httpx.post(f"{server.url}/v2/models/churn/infer", json=bad).status_code == 400
    quality = drift(server, "churn")["quality"]
    assert quality["features"]["input[1]"]["nan"] - quality_before["input[1]"]["nan"] == 10
    assert quality["features"]["input[0]"]["above_range"] - quality_before["input[0]"]["above_range"] == 1
    assert quality["features"]["input"]["rejected"] == 1
    assert quality["totals"]["rejected"] == 1

    samples = scrape(server.url)
    labels = {"model": "churn", "version": "1"}
    assert samples[key("ferryman_drift_detected", **labels)] == 1  # the latest report: the one just asked for
    assert samples[key("ferryman_drift_window_rows", **labels)] == WINDOW
    assert samples[key("ferryman_drift_psi", **labels, feature="input[2]")] > 0
    assert samples[key("ferryman_data_quality_total", **labels, feature="input[1]", issue="nan")] >= 10
    assert samples[key("ferryman_data_quality_total", **labels, feature="input", issue="rejected")] == 1
    assert samples[key("ferryman_data_quality_rows_total", **labels)] == 4 * WINDOW + 10
    assert samples[key("ferryman_monitoring_dropped_total")] == 0
    assert key("ferryman_drift_score", **labels) in samples

    runner = CliRunner()
    as_json = runner.invoke(app, ["drift", "churn", "--json", "--url", server.url])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["source"] == "sample"
    table = runner.invoke(app, ["drift", "churn", "--version", "1", "--url", server.url], env={"COLUMNS": "240"})
    assert table.exit_code == 0, table.output
    assert "churn version 1:" in table.stdout and "reference from sample (1000 rows)" in table.stdout
    assert "input[2]" in table.stdout and "Data quality" in table.stdout


def test_profile_learned_from_traffic_and_kept(server_factory: ServerFactory, churn: tuple[Path, Path]) -> None:
    env = {**MONITORED, "FERRYMAN_MONITORING_PROFILE_ROWS": "300"}
    server = server_factory(env=env)
    with ferryman.Client(server.url) as client:
        client.push(churn[0], "learned")
    rng = np.random.default_rng(11)
    send(server, "learned", rng.normal(size=(100, 4)))
    learning = drift(server, "learned")
    assert learning["status"] == "learning" and learning["verdict"] == "not enough data"
    assert learning["profile"]["learned_rows"] == 100 and learning["profile"]["needed_rows"] == 300
    assert "learning a reference profile" in learning["note"]
    assert learning["quality"]["rows"] == 100

    send(server, "learned", rng.normal(size=(200, 4)))
    learned = drift(server, "learned")
    assert learned["status"] == "monitoring" and learned["source"] == "traffic"
    assert learned["profile"]["source"] == "traffic" and learned["profile"]["rows"] == 300
    assert learned["rows"] == 0 and learned["verdict"] == "not enough data"  # the reference never tests itself
    send(server, "learned", rng.normal(size=(WINDOW, 4)))
    assert drift(server, "learned")["verdict"] == "no drift"
    assert drift(server, "learned")["quality"]["rows"] == 300 + WINDOW  # counted before and after the profile

    home = server.home
    server.stop()
    again = server_factory(home=home, env=env)
    stored = drift(again, "learned")
    assert stored["status"] == "no traffic" and stored["source"] == "traffic"
    assert stored["profile"] == {"source": "traffic", "rows": 300}


def test_drift_of_unknown_model_or_version_is_404(server_factory: ServerFactory, churn: tuple[Path, Path]) -> None:
    server = server_factory(env={"FERRYMAN_MONITORING_ENABLED": "false"})
    assert httpx.get(f"{server.url}/api/v1/models/nope/versions/1/drift").status_code == 404
    with ferryman.Client(server.url) as client:
        client.push(churn[0], "churn")
    missing = httpx.get(f"{server.url}/api/v1/models/churn/versions/7/drift")
    assert missing.status_code == 404 and "no version 7" in missing.json()["error"]
    send(server, "churn", np.zeros((5, 4)))
    off = drift(server, "churn")
    assert off["status"] == "disabled" and off["verdict"] == "not enough data"
    assert "monitoring_enabled" in off["note"]
