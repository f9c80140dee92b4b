"""Rollout state and feedback in the registry, and the parsing of a rollout's plan."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from ferryman.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.records import ChangeEvent
from ferryman.registry.rollout_spec import (
    parse_duration,
    parse_fraction,
    parse_guards,
    parse_milliseconds,
    parse_steps,
)
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head
from ferryman.tensors import Signature, TensorSpec
from tests.pg import database_url, postgres  # noqa: F401 (fixtures)

SIGNATURE = Signature(inputs=(TensorSpec("input", "FP64", (-1, 4)),), outputs=(TensorSpec("label", "INT64", (-1,)),))


@pytest.fixture
def churn(tmp_path: Path, database_url: str) -> RegistryService:  # noqa: F811
    """``churn`` with versions 1-3 and production → 1."""
    engine = create_registry_engine(database_url)
    upgrade_to_head(engine)
    registry = RegistryService(engine, ArtifactStore(tmp_path / "artifacts"))
    for i in range(3):
        staged = registry.artifacts.stage(io.BytesIO(f"v{i}".encode()), "model.joblib", max_bytes=1 << 20)
        registry.register_version("churn", staged, framework="sklearn", signature=SIGNATURE, runtime_config={})
    registry.set_alias("churn", "production", 1)
    return registry


def start(registry: RegistryService, **options: Any) -> Any:
    plan: dict[str, Any] = {"to_version": 2, "steps": [5, 25, 50, 100], "interval": "10m"}
    plan.update(options)
    return registry.start_rollout("churn", **plan)


# -- starting ------------------------------------------------------------------------------------


def test_start_rollout_stores_the_plan(churn: RegistryService) -> None:
    heard: list[ChangeEvent] = []
    churn.subscribe(heard.append)
    assert churn.get_rollout("churn") is None
    rollout = start(churn, guards={"max_error_rate": "1%", "max_p99_ms": 50, "min_agreement": 0.95}, created_by="ann")
    assert (rollout.model, rollout.alias, rollout.from_version, rollout.to_version) == ("churn", "production", 1, 2)
    assert rollout.steps == (5, 25, 50, 100)
    assert (rollout.step_index, rollout.weight, rollout.state, rollout.active) == (0, 5, "running", True)
    assert rollout.interval_s == 600
    assert rollout.guards == {"max_error_rate": 0.01, "max_p99_ms": 50, "min_agreement": 0.95}
    assert rollout.created_by == "ann"
    assert rollout.revision == churn.revision()
    assert churn.get_rollout("churn") == rollout
    assert churn.list_rollouts("churn") == [rollout]
    assert churn.active_rollouts() == {"churn": rollout}
    assert heard == [ChangeEvent("rollout_started", "churn", version=2, alias="production")]
    document = rollout.to_dict()
    assert document["steps"] == [5, 25, 50, 100] and document["weight"] == 5
    assert document["created_at"].endswith("+00:00")
    assert churn.aliases("churn") == {"production": 1}, "the alias moves only when the rollout completes"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"to_version": 9}, NotFound, "model 'churn' has no version 9"),
        ({"to_version": 1}, Conflict, "alias 'production' of 'churn' already points at version 1"),
        ({"to_version": 0}, InvalidInput, "to: expected a positive version number, got 0"),
        ({"alias": "staging"}, NotFound, "model 'churn' has no alias 'staging'"),
        ({"alias": "Prod"}, InvalidInput, "invalid alias name 'Prod'"),
        ({"steps": [5, 50]}, InvalidInput, "steps: the last step must be 100"),
        ({"steps": [50, 25, 100]}, InvalidInput, "steps[1]: steps must increase"),
        ({"steps": [0, 100]}, InvalidInput, "steps[0]: expected a percentage above 0 and at most 100, got 0"),
        ({"steps": [5, "x", 100]}, InvalidInput, "steps[1]: expected a percentage"),
        ({"steps": []}, InvalidInput, "steps: expected a list of percentages"),
        ({"interval": "10 minutes"}, InvalidInput, "interval: expected a duration like 30s, 10m or 1h"),
        ({"interval": 0}, InvalidInput, "interval: must be from 1s to 30d, got 0"),
        (
            {"guards": {"max_error_rate": 5}},
            InvalidInput,
            "guards.max_error_rate: must be from 0 to 1 (0% to 100%), got 5 (did you mean 5%?)",
        ),
        ({"guards": {"max_p99": 5}}, InvalidInput, "guards.max_p99: unknown guard"),
        ({"guards": {"max_p99_ms": -1}}, InvalidInput, "guards.max_p99_ms: expected a positive number of milliseconds"),
        ({"guards": [1]}, InvalidInput, "guards: expected an object"),
    ],
)
def test_bad_rollouts_are_refused_naming_the_field(
    churn: RegistryService, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    revision = churn.revision()
    with pytest.raises(error) as caught:
        start(churn, **options)
    assert message in str(caught.value)
    assert churn.revision() == revision
    assert churn.list_rollouts("churn") == []


def test_only_one_active_rollout_per_model(churn: RegistryService) -> None:
    first = start(churn)
    with pytest.raises(Conflict, match=r"model 'churn' already has rollout #\d+ \(running, production 1 → 2\)"):
        start(churn, to_version=3)
    churn.pause_rollout("churn")
    with pytest.raises(Conflict, match=r"\(paused, production 1 → 2\)"):
        start(churn, to_version=3)
    churn.abort_rollout("churn", reason="wrong version")
    second = start(churn, to_version=3)
    assert second.id != first.id and second.revision > first.revision
    assert [r.id for r in churn.list_rollouts("churn")] == [second.id, first.id]


# -- the controller's writes ---------------------------------------------------------------------


def test_update_rollout_is_optimistic_and_completing_moves_the_alias(churn: RegistryService) -> None:
    rollout = start(churn)
    stepped = churn.update_rollout("churn", rollout.revision, step_index=1, reason="guards passed")
    assert (stepped.step_index, stepped.weight, stepped.reason) == (1, 25, "guards passed")
    assert stepped.revision > rollout.revision
    with pytest.raises(Conflict) as caught:
        churn.update_rollout("churn", rollout.revision, step_index=2)
    assert f"is at revision {stepped.revision}, not the expected revision {rollout.revision}" in str(caught.value)
    with pytest.raises(InvalidInput, match=r"step_index: expected 0 to 3, got 4"):
        churn.update_rollout("churn", stepped.revision, step_index=4)
    with pytest.raises(InvalidInput, match=r"state: expected one of running, paused, completed"):
        churn.update_rollout("churn", stepped.revision, state="done")

    heard: list[ChangeEvent] = []
    churn.subscribe(heard.append)
    done = churn.update_rollout("churn", stepped.revision, state="completed", reason="all steps passed")
    assert (done.state, done.step_index, done.weight, done.active) == ("completed", 3, 100, False)
    assert churn.aliases("churn") == {"production": 2}
    latest = churn.alias_history("churn", "production")[0]
    assert (latest.from_version, latest.to_version, latest.changed_by) == (1, 2, "rollout")
    assert heard == [
        ChangeEvent("rollout_changed", "churn", version=2, alias="production"),
        ChangeEvent("alias_set", "churn", version=2, alias="production"),
    ]
    assert churn.active_rollouts() == {}
    with pytest.raises(Conflict, match=r"rollout #\d+ of 'churn' is completed and can no longer change"):
        churn.update_rollout("churn", done.revision, step_index=0)


def test_a_rolled_back_rollout_leaves_the_alias(churn: RegistryService) -> None:
    rollout = start(churn)
    failed = churn.update_rollout("churn", rollout.revision, state="rolled_back", reason="error rate 3% > 1%")
    assert (failed.state, failed.weight, failed.reason) == ("rolled_back", 0, "error rate 3% > 1%")
    assert churn.aliases("churn") == {"production": 1}


def test_pause_resume_abort(churn: RegistryService) -> None:
    with pytest.raises(NotFound, match="model 'churn' has no rollout"):
        churn.pause_rollout("churn")
    start(churn)
    with pytest.raises(Conflict, match=r"rollout #\d+ of 'churn' is running, not paused"):
        churn.resume_rollout("churn")
    paused = churn.pause_rollout("churn", changed_by="ann")
    assert (paused.state, paused.reason, paused.weight) == ("paused", "paused by ann", 5)
    with pytest.raises(Conflict, match="is paused, not running"):
        churn.pause_rollout("churn")
    resumed = churn.resume_rollout("churn", reason="metrics look fine")
    assert (resumed.state, resumed.reason) == ("running", "metrics look fine")
    assert resumed.step_started_at >= paused.step_started_at
    aborted = churn.abort_rollout("churn", changed_by="bob")
    assert (aborted.state, aborted.reason, aborted.weight) == ("aborted", "aborted by bob", 0)
    with pytest.raises(Conflict, match="is aborted, not running or paused"):
        churn.abort_rollout("churn")
    assert churn.aliases("churn") == {"production": 1}


def test_an_active_rollout_guards_its_alias_and_versions(churn: RegistryService) -> None:
    churn.set_alias("churn", "staging", 3)
    start(churn)
    expected = r"alias 'production' of 'churn' is being rolled out from version 1 to 2 \(rollout #\d+, running\)"
    with pytest.raises(Conflict, match=expected):
        churn.set_alias("churn", "production", 3)
    with pytest.raises(Conflict, match=expected):
        churn.delete_alias("churn", "production")
    with pytest.raises(Conflict, match=r"version 2 of 'churn' is part of rollout #\d+ \(running\); abort the rollout"):
        churn.delete_version("churn", 2)
    churn.set_alias("churn", "staging", 2)  # other aliases move freely
    churn.pause_rollout("churn")
    with pytest.raises(Conflict, match=r"rollout #\d+, paused\); abort the rollout first"):
        churn.set_alias("churn", "production", 3)
    churn.abort_rollout("churn")
    churn.set_alias("churn", "production", 3)
    assert churn.rollback_alias("churn", "production") == (3, 1)


# -- feedback ------------------------------------------------------------------------------------


def test_feedback_is_stored_without_moving_the_registry_revision(churn: RegistryService) -> None:
    heard: list[ChangeEvent] = []
    churn.subscribe(heard.append)
    revision = churn.revision()
    items = [
        {"request_id": "r1", "reward": 1},
        {"request_id": "r2", "reward": 0.5, "version": 2},
        {"request_id": "r3", "label": {"churned": True}},
    ]
    assert churn.record_feedback("churn", items) == 3
    assert churn.record_feedback("churn", [{"request_id": "r4", "label": "yes", "reward": 0}]) == 1
    assert churn.revision() == revision
    assert heard == [ChangeEvent("feedback_recorded", "churn")] * 2
    stored = churn.read_feedback("churn")
    assert [(f.request_id, f.version, f.reward, f.label) for f in stored] == [
        ("r1", None, 1.0, None),
        ("r2", 2, 0.5, None),
        ("r3", None, None, {"churned": True}),
        ("r4", None, 0.0, "yes"),
    ]
    assert [f.request_id for f in churn.read_feedback("churn", after_id=stored[1].id, limit=1)] == ["r3"]
    assert stored[0].to_dict()["received_at"].endswith("+00:00")


@pytest.mark.parametrize(
    ("items", "error", "message"),
    [
        (
            [{"request_id": "a", "reward": 1}] * 3 + [{"request_id": "d", "reward": "high"}],
            InvalidInput,
            "items[3].reward: expected a finite number, got 'high'",
        ),
        ([{"request_id": "a", "reward": True}], InvalidInput, "items[0].reward: expected a finite number"),
        ([{"request_id": "", "reward": 1}], InvalidInput, "items[0].request_id: expected a non-empty printable string"),
        ([{"request_id": "a\nb", "reward": 1}], InvalidInput, "items[0].request_id"),
        ([{"request_id": "a"}], InvalidInput, "items[0]: needs a reward or a label"),
        ([{"request_id": "a", "reward": 1, "score": 2}], InvalidInput, "items[0].score: unknown field"),
        ([{"request_id": "a", "reward": 1, "version": 0}], InvalidInput, "items[0].version: expected a positive"),
        (
            [{"request_id": "a", "reward": 1, "version": 7}],
            NotFound,
            "items[0].version: model 'churn' has no version 7",
        ),
        (["a"], InvalidInput, "items[0]: expected an object"),
        ([], InvalidInput, "items: expected at least one feedback item"),
        ({"request_id": "a"}, InvalidInput, "items: expected a list"),
        ([{"request_id": "a", "reward": 1}] * 10_001, PayloadTooLarge, "items: at most 10000 items per request"),
    ],
)
def test_bad_feedback_is_refused_naming_the_item_and_field(
    churn: RegistryService, items: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        churn.record_feedback("churn", items)
    assert message in str(caught.value)
    assert churn.read_feedback("churn") == []


def test_single_feedback_errors_name_the_bare_field(churn: RegistryService) -> None:
    with pytest.raises(InvalidInput, match=r"^reward: expected a finite number"):
        churn.record_feedback("churn", [{"request_id": "a", "reward": "x"}], field=None)
    with pytest.raises(NotFound, match="model 'ghost' not found"):
        churn.record_feedback("ghost", [{"request_id": "a", "reward": 1}])


def test_feedback_for_a_deleted_version_is_still_accepted(churn: RegistryService) -> None:
    churn.delete_version("churn", 3)
    assert churn.record_feedback("churn", [{"request_id": "late", "reward": 1, "version": 3}]) == 1


# -- parsing a plan ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1.5h", 5400),
        ("90", 90),
        (45, 45),
        (" 10M ", 600),
        ("1500ms", 1.5),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10x", "10m5", "ten", "-5s", "1e999", True, None, [10]])
def test_bad_durations_name_the_option(text: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^--interval: "):
        parse_duration(text, "--interval")


@pytest.mark.parametrize(
    ("text", "fraction"),
    [("1%", 0.01), ("0.5%", 0.005), ("0.01", 0.01), (0.95, 0.95), ("95%", 0.95), (0, 0.0), (1, 1.0)],
)
def test_fractions(text: Any, fraction: float) -> None:
    assert parse_fraction(text, "--max-error-rate") == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("150%", "--max-error-rate: must be from 0 to 1 (0% to 100%), got '150%'"),
        ("5", "got '5' (did you mean 5%?)"),
        ("-1%", "must be from 0 to 1"),
        ("lots", "expected a fraction from 0 to 1 or a percentage like 1%, got 'lots'"),
        ("nan", "expected a fraction"),
    ],
)
def test_bad_fractions(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_fraction(text, "--max-error-rate")
    assert message in str(caught.value)


def test_steps_guards_and_milliseconds() -> None:
    assert parse_steps("5, 25,50%,100") == (5, 25, 50, 100)
    assert parse_steps([0.5, 100.0]) == (0.5, 100)
    with pytest.raises(InvalidInput, match=r"^--steps\[1\]: expected a percentage above 0 and at most 100, got 'x'"):
        parse_steps("5,x,100", "--steps")
    with pytest.raises(InvalidInput, match=r"at most 100 steps"):
        parse_steps(list(range(1, 102)))
    assert parse_guards(None) == {}
    assert parse_guards({"max_error_rate": None, "min_agreement": "99%"}) == {"min_agreement": 0.99}
    assert parse_milliseconds("50ms", "--max-p99-ms") == 50
    with pytest.raises(InvalidInput, match=r"^--max-p99-ms: expected a positive number of milliseconds, like 50"):
        parse_milliseconds("fast", "--max-p99-ms")
