"""Alert rules, windowed signals, live-accuracy figures and the optimistic alert state, on a real registry."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ferryman.errors import Conflict, InvalidInput
from ferryman.monitoring.accuracy import accuracy_document, figures_of
from ferryman.monitoring.alert_rules import AlertRule, parse_rule
from ferryman.monitoring.alert_signals import SignalHistory
from ferryman.monitoring.alerts import AlertEvaluator
from ferryman.monitoring.metrics import RequestMetrics
from ferryman.monitoring.webhooks import sign
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.feedback_windows import LabelledRow
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head

BASE = {"name": "r", "model": "fraud-*", "signal": "error_rate", "comparison": ">", "threshold": 0.05}


def open_registry(home: Path) -> RegistryService:
    engine = create_registry_engine(f"sqlite:///{home / 'registry.db'}")
    upgrade_to_head(engine)
    return RegistryService(engine, ArtifactStore(home / "artifacts"))


def test_a_rule_parses_with_defaults_and_round_trips() -> None:
    rule = parse_rule({**BASE, "window": "10m", "for": "1m", "severity": "critical", "version": 3})
    assert (rule.window_s, rule.for_s, rule.severity, rule.version, rule.min_samples) == (600, 60, "critical", 3, 1)
    assert parse_rule(rule.to_dict()) == rule
    defaults = parse_rule(BASE)
    assert (defaults.window_s, defaults.for_s, defaults.severity, defaults.feature) == (300, 0, "warning", None)
    drift = parse_rule({**BASE, "signal": "drift_score", "feature": "age", "threshold": 0.2})
    assert drift.feature == "age"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"model": "a b"}, "model"),
        ({"signal": "cpu"}, "signal"),
        ({"comparison": "!="}, "comparison"),
        ({"threshold": math.inf}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"window": "0s"}, "window"),
        ({"window": "31d"}, "window"),
        ({"for": "2d"}, "for"),
        ({"severity": "page"}, "severity"),
        ({"version": -1}, "version"),
        ({"feature": "age"}, "feature"),
        ({"min_samples": 1.5}, "min_samples"),
        ({"description": 5}, "description"),
        ({"extra": 1}, "extra"),
    ],
)
def test_malformed_rules_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_rule({**BASE, **change})
    assert raised.value.message.startswith(f"{field}:")


def test_comparisons() -> None:
    for comparison, hits in ((">", [2.0]), (">=", [1.0, 2.0]), ("<", [0.0]), ("<=", [0.0, 1.0])):
        rule = AlertRule("r", "m", "error_rate", comparison, 1.0, 60.0)
        assert [v for v in (0.0, 1.0, 2.0) if rule.breached(v)] == hits


def test_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    body = b'{"event":"firing"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", "1700000000", body) == f"sha256={expected}"
    assert sign("s3cret", "1700000001", body) != sign("s3cret", "1700000000", body)


def test_error_rate_and_latency_are_measured_over_the_window() -> None:
    metrics = RequestMetrics()
    history = SignalHistory(metrics, None)
    stats = metrics.stats("m", "1")
    rule = AlertRule("r", "m", "error_rate", ">", 0.1, 60.0, min_samples=10)
    no_live: Any = lambda model, window: {}  # noqa: E731
    history.take(60.0, now=0.0)
    stats.outcomes["ok"] += 90
    stats.outcomes["failed"] += 10
    for _ in range(100):
        stats.latency.observe(0.004)
    history.take(60.0, now=30.0)
    assert history.value(rule, ("m", 1), no_live) == pytest.approx(0.1)
    stats.outcomes["ok"] += 5  # a window later: only these 5 count, fewer than min_samples
    history.take(60.0, now=95.0)
    assert history.value(rule, ("m", 1), no_live) is None
    stats.outcomes["ok"] += 15
    stats.outcomes["deadline"] += 5
    history.take(60.0, now=100.0)
    assert history.value(rule, ("m", 1), no_live) == pytest.approx(5 / 25)
    latency = AlertRule("p", "m", "p99_latency_ms", ">", 100.0, 60.0)
    history.take(60.0, now=200.0)
    assert history.value(latency, ("m", 1), no_live) is None  # no request in the last minute
    assert history.value(rule, ("m", 2), no_live) is None  # never seen


def test_live_figures_match_sklearn_and_numpy() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 200).tolist()
    predictions = [label if rng.random() < 0.7 else int(rng.integers(0, 3)) for label in labels]
    rows = [LabelledRow(1, label, prediction, now) for label, prediction in zip(labels, predictions, strict=True)]
    rows.append(LabelledRow(1, 1, None, now))  # a version but no prediction: unmatched
    figures = figures_of(rows)
    assert figures.kind == "classification" and figures.n == 200 and figures.unmatched == 1
    assert figures.accuracy == pytest.approx(np.mean(np.array(labels) == np.array(predictions)))
    assert figures.macro_f1 == pytest.approx(f1_score(labels, predictions, average="macro"))
    truth = rng.normal(size=100)
    guesses = truth + rng.normal(scale=0.5, size=100)
    regression = figures_of([LabelledRow(2, float(t), float(g), now) for t, g in zip(truth, guesses, strict=True)])
    assert regression.kind == "regression" and regression.n == 100
    assert regression.mae == pytest.approx(np.mean(np.abs(truth - guesses)))
    assert regression.rmse == pytest.approx(np.sqrt(np.mean((truth - guesses) ** 2)))
    assert figures_of([LabelledRow(1, 1.0, 1, now), LabelledRow(1, "a", "a", now)]).accuracy == 1.0


def test_buckets_end_now_and_count_unmatched_labels() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    rows = [
        LabelledRow(1, 1, 1, now - timedelta(minutes=150)),  # outside 2 h of buckets
        LabelledRow(1, 1, 0, now - timedelta(minutes=90)),  # first bucket
        LabelledRow(1, 1, 1, now - timedelta(minutes=30)),  # second bucket
        LabelledRow(2, 0, 0, now - timedelta(minutes=1)),
        LabelledRow(None, 1, None, now - timedelta(minutes=5)),  # unknown request id
    ]
    document = accuracy_document("m", rows, now=now, window_s=3600, buckets=2)
    versions = {entry["version"]: entry for entry in document["versions"]}
    assert [b["n"] for b in versions[1]["buckets"]] == [1, 1]
    assert [b["accuracy"] for b in versions[1]["buckets"]] == [0.0, 1.0]
    assert versions[1]["total"]["accuracy"] == 0.5 and versions[2]["total"]["n"] == 1
    assert [b["count"] for b in document["unmatched"]["buckets"]] == [0, 1]
    assert document["start"] == (now - timedelta(hours=2)).isoformat()
    only = accuracy_document("m", rows, now=now, window_s=3600, buckets=2, version=2)
    assert [entry["version"] for entry in only["versions"]] == [2]


def test_rules_are_unique_and_deleting_keeps_events(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    stored = registry.create_alert_rule(parse_rule(BASE), created_by="key:abc")
    with pytest.raises(Conflict):
        registry.create_alert_rule(parse_rule(BASE))
    assert [s.rule for s in registry.list_alert_rules()] == [stored.rule]
    event = {"event": "firing", "rule": stored.rule.to_dict(), "model": "fraud-a", "target": "fraud-a:1", "value": 1}
    assert registry.transition(stored.id, "fraud-a:1", None, {"state": "firing", "value": 1.0}, event)
    registry.delete_alert_rule("r")
    assert registry.list_alert_rules() == [] and registry.list_alert_states() == []
    assert [e.kind for e in registry.list_alert_events()] == ["firing"]


def test_only_one_of_several_processes_moves_a_state(tmp_path: Path) -> None:
    """Each evaluator has its own registry connection, as separate processes do; all see the same breach."""
    open_registry(tmp_path).create_alert_rule(parse_rule({**BASE, "model": "m", "window": "1m"}))
    evaluators = []
    for _ in range(6):
        metrics = RequestMetrics()
        history = SignalHistory(metrics, None)
        history.take(60.0, now=0.0)
        metrics.stats("m", "1").outcomes["failed"] += 10
        history.take(60.0, now=1.0)
        evaluators.append(AlertEvaluator(open_registry(tmp_path), history, lambda: {"m": [1]}, None))  # type: ignore[arg-type]
    start = threading.Barrier(len(evaluators))
    recorded: list[int] = []

    def run(evaluator: AlertEvaluator) -> None:
        start.wait()
        recorded.append(evaluator.evaluate({"m": [1]}))

    threads = [threading.Thread(target=run, args=(evaluator,)) for evaluator in evaluators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registry = open_registry(tmp_path)
    assert sum(recorded) == 1
    assert [(s.target, s.state) for s in registry.list_alert_states()] == [("m:1", "firing")]
    assert [e.kind for e in registry.list_alert_events()] == ["firing"]
    # A stale expectation loses: the row moved since it was read.
    state = registry.list_alert_states()[0]
    assert registry.transition(state.rule_id, state.target, state, {"state": "ok"}) is True
    assert registry.transition(state.rule_id, state.target, state, {"state": "ok"}) is False


def test_pending_until_for_has_passed(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    registry.create_alert_rule(parse_rule({**BASE, "model": "m", "window": "1m", "for": "1h"}))
    metrics = RequestMetrics()
    history = SignalHistory(metrics, None)
    history.take(60.0, now=0.0)
    metrics.stats("m", "1").outcomes["failed"] += 3
    history.take(60.0, now=1.0)
    evaluator = AlertEvaluator(registry, history, lambda: {"m": [1]}, None)  # type: ignore[arg-type]
    assert evaluator.evaluate({"m": [1]}) == 0
    assert [s.state for s in registry.list_alert_states()] == ["pending"]
    metrics.stats("m", "1").outcomes["ok"] += 1000  # recovered before `for` passed: back to ok, no event
    history.take(60.0, now=2.0)
    history.take(60.0, now=120.0)
    metrics.stats("m", "1").outcomes["ok"] += 1000
    history.take(60.0, now=125.0)
    assert evaluator.evaluate({"m": [1]}) == 0
    assert [s.state for s in registry.list_alert_states()] == ["ok"]
    assert registry.list_alert_events() == []
