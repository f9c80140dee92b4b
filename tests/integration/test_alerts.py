"""Alerts, webhooks and live accuracy on real servers: real signals, a real webhook receiver, restarts."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from ferryman.cli.main import app
from tests.conftest import ServerFactory, ServerProcess, free_port, wait_for
from tests.integration.test_many_models import push_with_config
from tests.integration.test_releases_served import poll
from tests.integration.test_v2_rest import write_model_folder
from tests.security.conftest import auth, make_key

pytestmark = pytest.mark.timeout(240)

#: Echoes the class of x[:, 0] > 0 (shifted by the version's ``offset``); fails for any x > 100.
FLAKY_MODEL = """
import numpy as np
import ferryman
from ferryman import TensorSpec

class Flaky(ferryman.Model):
    inputs = [TensorSpec("x", "FP64", (-1, 2))]
    outputs = [TensorSpec("label", "INT64", (-1,))]

    def load(self):
        self.offset = int(self.options.get("offset", 0))

    def predict(self, inputs):
        x = inputs["x"]
        if (x > 100).any():
            raise RuntimeError("input out of the model's range")
        return {"label": (x[:, 0] > 0).astype(np.int64) + self.offset}
"""

#: Evaluate often, retry quickly: the test's clock, not production defaults.
FAST = {
    "FERRYMAN_ALERTS_EVAL_SECONDS": "0.25",
    "FERRYMAN_WEBHOOK_BACKOFF_SECONDS": "0.2",
    "FERRYMAN_WEBHOOK_MAX_ATTEMPTS": "3",
    "FERRYMAN_WEBHOOK_TIMEOUT_SECONDS": "2",
}
GOOD_SECRET = "receiver-secret-0123456789abcdef"


def row(x: float) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [x, 1.0]}]}


@dataclass
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


@dataclass
class Receiver:
    """A webhook receiver on a free port; ``/flaky`` answers 500 to the first two posts of its firing event."""

    url: str
    received: list[Received] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=lambda: {"/flaky firing": 2})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self, path: str, kind: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path and (kind is None or r.event["event"] == kind)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server: ThreadingHTTPServer | None = None
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            key = f"{self.path} {received.event['event']}"
            with state.lock:
                state.received.append(received)
                left = state.failures.get(key, 0)
                if left:
                    state.failures[key] = left - 1
            self.send_response(500 if left else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def verify(received: Received, secret: str) -> bool:
    """What a receiver does: recompute the HMAC over ``timestamp.body`` and refuse stale timestamps."""
    timestamp = received.headers["x-ferryman-timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(received.headers["x-ferryman-signature"], f"sha256={expected}")


@pytest.fixture(scope="module")
def flaky_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flaky")
    for number in (1, 2):
        write_model_folder(root, f"flaky{number}", f"{FLAKY_MODEL}\n# build {number}\n")
    return root


def push(server: ServerProcess, name: str, folder: Path, config: dict[str, Any]) -> None:
    response = push_with_config(server.url, name, folder, config)
    assert response.status_code == 201, response.text


def send(client: httpx.Client, server: ServerProcess, name: str, x: float, count: int) -> list[int]:
    return [client.post(f"{server.url}/v2/models/{name}/infer", json=row(x)).status_code for _ in range(count)]


def alerts(server: ServerProcess, headers: Any = None) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/v1/alerts", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def state_of(server: ServerProcess, rule: str, target: str) -> str | None:
    for alert in alerts(server)["alerts"]:
        if alert["rule"] == rule and alert["target"] == target:
            return str(alert["state"])
    return None


def metric(server: ServerProcess, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    return 0.0


def test_error_rate_alert_fires_and_resolves_through_signed_retried_webhooks(
    server_factory: ServerFactory, receiver: Receiver, flaky_folder: Path
) -> None:
    server = server_factory(env=FAST)
    push(server, "flaky", flaky_folder / "flaky1", {})
    api = f"{server.url}/api/v1/alerts"
    good = httpx.post(
        f"{api}/webhooks", json={"name": "good", "url": f"{receiver.url}/good", "secret": GOOD_SECRET}
    ).json()
    assert "secret" not in good  # the caller chose it: never echoed
    flaky = httpx.post(f"{api}/webhooks", json={"name": "flaky", "url": f"{receiver.url}/flaky"}).json()
    generated = flaky["secret"]  # made by the server, shown this once
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    assert httpx.post(f"{api}/webhooks", json={"name": "dead", "url": dead_url}).status_code == 201
    listed = httpx.get(f"{api}/webhooks").json()["webhooks"]
    assert {hook["name"] for hook in listed} == {"good", "flaky", "dead"}
    assert all("secret" not in hook for hook in listed)
    rule = {
        "name": "flaky-errors",
        "model": "flak*",
        "signal": "error_rate",
        "comparison": ">",
        "threshold": 0.2,
        "window": "2s",
        "min_samples": 5,
        "severity": "critical",
    }
    created = httpx.post(f"{api}/rules", json=rule)
    assert created.status_code == 201, created.text

    with httpx.Client(timeout=30) as client:
        assert set(send(client, server, "flaky", 1.0, 5)) == {200}
        # Half the requests fail: the error rate crosses 20% and the rule fires, once.
        statuses: list[int] = []

        def firing() -> bool:
            statuses.extend(send(client, server, "flaky", 500.0, 2) + send(client, server, "flaky", 1.0, 2))
            return bool(receiver.posts("/good", "firing"))

        wait_for(firing, "the firing event at the good webhook", deadline_s=30)
        assert statuses.count(500) == statuses.count(200) and set(statuses) == {200, 500}
        # The dead webhook retries in the background: requests keep being answered meanwhile.
        started = time.monotonic()
        assert set(send(client, server, "flaky", 1.0, 20)) == {200}
        assert time.monotonic() - started < 10  # generous: a blocked path would wait on 2 s timeouts

        # Recovery: only good requests, until the window forgets the failures.
        wait_for(
            lambda: send(client, server, "flaky", 1.0, 3) and receiver.posts("/good", "resolved"),
            "the resolved event",
            deadline_s=30,
        )

    fired = receiver.posts("/good", "firing")
    assert len(fired) == 1
    event = fired[0].event
    assert verify(fired[0], GOOD_SECRET) and not verify(fired[0], "some-other-secret")
    assert fired[0].headers["x-ferryman-event"] == "firing"
    assert event["rule"]["name"] == "flaky-errors" and event["rule"]["severity"] == "critical"
    assert event["model"] == "flaky" and event["version"] == 1 and event["target"] == "flaky:1"
    assert event["value"] > 0.2 and event["threshold"] == 0.2
    resolved = receiver.posts("/good", "resolved")
    assert len(resolved) == 1 and verify(resolved[0], GOOD_SECRET) and resolved[0].event["value"] <= 0.2

    # The flaky receiver answered 500 twice; the third attempt of the same delivery got through.
    wait_for(
        lambda: receiver.posts("/flaky", "resolved") and len(receiver.posts("/flaky", "firing")) >= 3,
        "the firing event's third attempt at the flaky webhook",
    )
    flaky_firing = receiver.posts("/flaky", "firing")
    assert len(flaky_firing) == 3
    assert len({r.headers["x-ferryman-delivery"] for r in flaky_firing}) == 1
    assert all(verify(r, generated) for r in flaky_firing)

    # The unreachable webhook: given up after 3 attempts per event, logged as failed.
    def dead_failed() -> list[dict[str, Any]]:
        deliveries = httpx.get(f"{api}/deliveries").json()["deliveries"]
        return [d for d in deliveries if d["webhook"] == "dead" and d["state"] == "failed"]

    failed = poll(lambda: len(dead_failed()) == 2 and dead_failed(), "both dead deliveries to fail")
    assert all(d["attempts"] == 3 and d["last_error"] for d in failed)
    logs = server.logs()
    assert "webhook delivery" in logs and "not delivered after 3 attempts" in logs
    assert "alert firing: rule=flaky-errors target=flaky:1 severity=critical" in logs
    assert GOOD_SECRET not in logs and generated not in logs

    document = alerts(server)
    assert [e["kind"] for e in document["events"]] == ["resolved", "firing"]
    assert state_of(server, "flaky-errors", "flaky:1") == "ok"
    audit = httpx.get(f"{server.url}/api/v1/audit", params={"limit": 100})
    assert audit.status_code == 200, audit.text
    assert "webhook.create" in audit.text and "alert_rule.create" in audit.text
    assert GOOD_SECRET not in audit.text and generated not in audit.text


def test_alert_state_and_outbox_survive_a_restart_without_a_second_firing_event(
    server_factory: ServerFactory, receiver: Receiver, flaky_folder: Path, tmp_path: Path
) -> None:
    home = tmp_path / "restart-home"
    # A retry 10 s after a failed attempt: the server is stopped before it is due.
    server = server_factory(home=home, env={**FAST, "FERRYMAN_WEBHOOK_BACKOFF_SECONDS": "10"})
    push(server, "flaky", flaky_folder / "flaky1", {})
    api = f"{server.url}/api/v1/alerts"
    hook = {"name": "good", "url": f"{receiver.url}/good", "secret": GOOD_SECRET}
    assert httpx.post(f"{api}/webhooks", json=hook).status_code == 201
    receiver.failures["/later firing"] = 1
    later = {"name": "later", "url": f"{receiver.url}/later", "secret": GOOD_SECRET}
    assert httpx.post(f"{api}/webhooks", json=later).status_code == 201
    rule = {"name": "errors", "model": "flaky", "signal": "error_rate", "comparison": ">=", "threshold": 0.5}
    assert httpx.post(f"{api}/rules", json={**rule, "window": "1h", "min_samples": 4}).status_code == 201
    with httpx.Client(timeout=30) as client:
        send(client, server, "flaky", 500.0, 4)
    wait_for(lambda: receiver.posts("/good", "firing") and receiver.posts("/later"), "the firing event")
    assert state_of(server, "errors", "flaky:1") == "firing"
    server.stop()
    assert len(receiver.posts("/later")) == 1  # refused once; the retry waits in the outbox

    restarted = server_factory(home=home, env=FAST)
    assert state_of(restarted, "errors", "flaky:1") == "firing"
    with httpx.Client(timeout=30) as client:
        # The new process measures the failures afresh: still breached, still the same alert.
        send(client, restarted, "flaky", 500.0, 4)
        evaluated = metric(restarted, "ferryman_alert_evaluations")
        wait_for(lambda: metric(restarted, "ferryman_alert_evaluations") >= evaluated + 4, "four evaluation rounds")
    assert state_of(restarted, "errors", "flaky:1") == "firing"
    assert len(receiver.posts("/good", "firing")) == 1
    # The pending delivery went out from the restarted process, the same delivery retried.
    wait_for(lambda: len(receiver.posts("/later")) == 2, "the retried delivery after the restart", deadline_s=30)
    attempts = receiver.posts("/later")
    assert attempts[0].headers["x-ferryman-delivery"] == attempts[1].headers["x-ferryman-delivery"]
    assert attempts[1].event["event"] == "firing" and verify(attempts[1], GOOD_SECRET)
    assert [e["kind"] for e in alerts(restarted)["events"]] == ["firing"]


def test_malformed_rules_are_refused_naming_the_field(ferryman_server: ServerProcess) -> None:
    rules = f"{ferryman_server.url}/api/v1/alerts/rules"
    base = {"name": "r1", "model": "m", "signal": "error_rate", "comparison": ">", "threshold": 0.1}
    cases = {
        "name": {"name": "bad name!"},
        "signal": {"signal": "cpu"},
        "comparison": {"comparison": "=="},
        "threshold": {"threshold": "high"},
        "window": {"window": "soon"},
        "for": {"for": "forever"},
        "severity": {"severity": "apocalyptic"},
        "version": {"version": 0},
        "feature": {"feature": "age"},  # error_rate has no features
        "model": {"model": "no spaces"},
        "min_samples": {"min_samples": 0},
        "colour": {"colour": "red"},
    }
    for field_name, change in cases.items():
        response = httpx.post(rules, json={**base, **change})
        assert response.status_code == 400, (field_name, response.text)
        assert response.json()["error"].startswith(f"{field_name}:"), (field_name, response.text)
    missing = httpx.post(rules, json={k: v for k, v in base.items() if k != "threshold"})
    assert missing.status_code == 400 and missing.json()["error"].startswith("threshold:")
    assert httpx.post(rules, json=base).status_code == 201
    assert httpx.post(rules, json=base).status_code == 409
    hooks = f"{ferryman_server.url}/api/v1/alerts/webhooks"
    bad_hook = httpx.post(hooks, json={"name": "h", "url": "ftp://example.com/x"})
    assert bad_hook.status_code == 400 and bad_hook.json()["error"].startswith("url:")
    short = httpx.post(hooks, json={"name": "h", "url": "http://127.0.0.1:9/x", "secret": "short"})
    assert short.status_code == 400 and short.json()["error"].startswith("secret:")
    assert "short" not in short.json()["error"]
    assert httpx.delete(f"{rules}/r1").status_code == 204
    assert httpx.delete(f"{rules}/r1").status_code == 404


def test_viewers_read_alerts_and_deployers_manage_them(server_factory: ServerFactory, tmp_path: Path) -> None:
    home = tmp_path / "auth-home"
    viewer, deployer = make_key(home, "viewer"), make_key(home, "deployer")
    limited = make_key(home, "deployer", ["fraud-*"])
    server = server_factory(home=home)
    rules = f"{server.url}/api/v1/alerts/rules"
    rule = {"name": "lat", "model": "*", "signal": "p99_latency_ms", "comparison": ">", "threshold": 250}
    assert httpx.post(rules, json=rule).status_code == 401
    refused = httpx.post(rules, json=rule, headers=auth(viewer))
    assert refused.status_code == 403 and "alerts" in refused.json()["error"]
    assert httpx.post(rules, json=rule, headers=auth(deployer)).status_code == 201
    assert httpx.get(rules, headers=auth(viewer)).json()["rules"][0]["name"] == "lat"
    assert httpx.get(f"{server.url}/api/v1/alerts", headers=auth(viewer)).status_code == 200
    hooks = f"{server.url}/api/v1/alerts/webhooks"
    assert httpx.get(hooks, headers=auth(viewer)).status_code == 403  # webhook URLs may carry tokens
    hook = {"name": "h", "url": "http://127.0.0.1:9/x"}
    assert httpx.post(hooks, json=hook, headers=auth(viewer)).status_code == 403
    assert httpx.post(hooks, json=hook, headers=auth(deployer)).status_code == 201
    # A deployer limited to fraud-*: rules on its models only; webhooks that hear its models only.
    assert httpx.post(rules, json=rule, headers=auth(limited)).status_code == 403
    mine = {**rule, "name": "fraud-lat", "model": "fraud-a"}
    assert httpx.post(rules, json=mine, headers=auth(limited)).status_code == 201
    assert [r["name"] for r in httpx.get(rules, headers=auth(limited)).json()["rules"]] == ["fraud-lat"]
    scoped = httpx.post(hooks, json={**hook, "name": "fraud-hook"}, headers=auth(limited))
    assert scoped.status_code == 201 and scoped.json()["models"] == ["fraud-*"]
    wider = httpx.post(hooks, json={**hook, "name": "all", "models": ["*"]}, headers=auth(limited))
    assert wider.status_code == 403
    assert [h["name"] for h in httpx.get(hooks, headers=auth(limited)).json()["webhooks"]] == ["fraud-hook"]
    assert httpx.delete(f"{hooks}/h", headers=auth(limited)).status_code == 403
    assert httpx.delete(f"{rules}/lat", headers=auth(viewer)).status_code == 403
    assert httpx.delete(f"{rules}/lat", headers=auth(deployer)).status_code == 204


def test_live_accuracy_per_version_and_window_matches_a_computation_here(
    server_factory: ServerFactory, flaky_folder: Path
) -> None:
    server = server_factory(env={**FAST, "FERRYMAN_LIVE_ACCURACY_WINDOW_SECONDS": "600"})
    for number in (1, 2):
        push(server, "acc", flaky_folder / f"flaky{number}", {"offset": number - 1})
    url = f"{server.url}/api/v1/models/acc"
    policy = {"split": [{"target": "1", "weight": 50}, {"target": "2", "weight": 50}]}
    assert httpx.put(f"{url}/traffic", json=policy, timeout=60).status_code == 200
    served: list[tuple[str, int, int]] = []  # request id, version, prediction
    with httpx.Client(timeout=30) as client:
        for index in range(60):
            response = client.post(f"{server.url}/v2/models/acc/infer", json=row(1.0 if index % 3 else -1.0))
            assert response.status_code == 200, response.text
            body = response.json()
            served.append((response.headers["x-request-id"], int(body["model_version"]), body["outputs"][0]["data"][0]))
    assert {version for _, version, _ in served} == {1, 2}
    truth = {request_id: (index % 4 != 0) * 1 for index, (request_id, _, _) in enumerate(served)}
    items = [{"request_id": request_id, "label": truth[request_id]} for request_id, _, _ in served]
    items += [{"request_id": f"unknown-{n}", "label": 1} for n in range(5)]
    posted = httpx.post(f"{url}/feedback", json={"items": items}).json()
    assert posted["matched"] == 60 and posted["unmatched"] == 5

    expected: dict[int, dict[str, float]] = {}
    for version in (1, 2):
        pairs = [(truth[rid], prediction) for rid, v, prediction in served if v == version]
        labels, predictions = [p[0] for p in pairs], [p[1] for p in pairs]
        expected[version] = {
            "n": len(pairs),
            "accuracy": sum(a == b for a, b in pairs) / len(pairs),
            "macro_f1": float(f1_score(labels, predictions, average="macro")),
        }
    result = httpx.get(f"{url}/accuracy", params={"window": "10m", "buckets": 6}).json()
    assert result["window"] == 600 and result["buckets"] == 6
    by_version = {entry["version"]: entry for entry in result["versions"]}
    for version, figures in expected.items():
        entry = by_version[version]
        assert entry["kind"] == "classification"
        assert entry["total"]["n"] == figures["n"]
        assert entry["total"]["accuracy"] == pytest.approx(figures["accuracy"])
        assert entry["total"]["macro_f1"] == pytest.approx(figures["macro_f1"])
        last = entry["buckets"][-1]  # all of it arrived just now: the newest bucket
        assert last["n"] == figures["n"] and all(b["n"] == 0 for b in entry["buckets"][:-1])
    assert result["unmatched"]["total"] == 5 and result["unmatched"]["buckets"][-1]["count"] == 5
    only = httpx.get(f"{url}/accuracy", params={"window": "1h", "buckets": 1, "version": 2}).json()
    assert [entry["version"] for entry in only["versions"]] == [2]
    assert httpx.get(f"{url}/accuracy", params={"window": "soon"}).json()["error"].startswith("window:")

    cli = CliRunner().invoke(app, ["accuracy", "acc", "--window", "1h", "--json", "--url", server.url])
    assert cli.exit_code == 0, cli.output
    assert {e["version"]: e["total"]["n"] for e in json.loads(cli.output)["versions"]} == {
        v: f["n"] for v, f in expected.items()
    }

    # The gauges, refreshed by the evaluator off the request path, and a rule on live accuracy.
    def gauge(version: int) -> float | None:
        for line in httpx.get(f"{server.url}/metrics").text.splitlines():
            if line.startswith(f'ferryman_live_accuracy{{model="acc",version="{version}"}}'):
                return float(line.split()[-1])
        return None

    wait_for(lambda: gauge(1) is not None and gauge(2) is not None, "the live accuracy gauges")
    assert gauge(1) == pytest.approx(expected[1]["accuracy"]) and gauge(2) == pytest.approx(expected[2]["accuracy"])
    worse = min(expected, key=lambda v: expected[v]["accuracy"])
    rule = {
        "name": "acc-drop",
        "model": "acc",
        "signal": "live_accuracy",
        "comparison": "<",
        "threshold": (expected[1]["accuracy"] + expected[2]["accuracy"]) / 2,
        "window": "10m",
    }
    assert expected[1]["accuracy"] != expected[2]["accuracy"]
    assert httpx.post(f"{server.url}/api/v1/alerts/rules", json=rule).status_code == 201
    wait_for(lambda: state_of(server, "acc-drop", f"acc:{worse}") == "firing", "the accuracy alert")
    assert state_of(server, "acc-drop", f"acc:{3 - worse}") in (None, "ok")

    cli = CliRunner().invoke(app, ["alerts", "list", "--json", "--url", server.url])
    assert cli.exit_code == 0, cli.output
    assert any(a["target"] == f"acc:{worse}" and a["state"] == "firing" for a in json.loads(cli.output)["alerts"])


def test_cli_manages_rules_and_webhooks_and_a_quality_rule_fires(
    server_factory: ServerFactory, flaky_folder: Path
) -> None:
    server = server_factory(env=FAST)
    push(server, "flaky", flaky_folder / "flaky1", {})
    runner = CliRunner()

    def cli(*args: str) -> Any:
        result = runner.invoke(app, [*args, "--url", server.url])
        assert result.exit_code == 0, result.output
        return result.output

    create = ["alerts", "rules", "create", "bad-inputs", "--model", "flaky", "--signal", "quality_rejected"]
    cli(*create, "--threshold", "2", "--window", "1m", "--severity", "info")
    refused = runner.invoke(app, [*create, "--threshold", "2", "--window", "never", "--url", server.url])
    assert refused.exit_code == 1 and "window:" in refused.output
    assert "bad-inputs" in cli("alerts", "rules", "list")
    assert [r["name"] for r in json.loads(cli("alerts", "rules", "list", "--json"))] == ["bad-inputs"]
    made = cli("alerts", "webhooks", "create", "ops", "--target", "http://127.0.0.1:9/hook")
    assert "Signing secret (shown once):" in made
    listed = json.loads(cli("alerts", "webhooks", "list", "--json"))
    assert [h["name"] for h in listed] == ["ops"] and "secret" not in listed[0]

    # Requests refused for a schema violation are counted per version: three of them cross the threshold.
    wrong = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            assert client.post(f"{server.url}/v2/models/flaky/infer", json=wrong).status_code == 400
    wait_for(lambda: state_of(server, "bad-inputs", "flaky:1") == "firing", "the data-quality alert")
    document = json.loads(cli("alerts", "list", "--json"))
    assert [(e["rule"], e["kind"], e["value"]) for e in document["events"]] == [("bad-inputs", "firing", 3.0)]
    assert "firing" in cli("alerts", "list")

    cli("alerts", "webhooks", "delete", "ops")
    cli("alerts", "rules", "delete", "bad-inputs")
    assert json.loads(cli("alerts", "rules", "list", "--json")) == []
    assert json.loads(cli("alerts", "webhooks", "list", "--json")) == []
