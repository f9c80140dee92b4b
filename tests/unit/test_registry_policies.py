"""Versions in production, in the registry: rollback, optimistic writes, traffic and version policies.

Real SQLite files; concurrency through real threads on one database file.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select

from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.registry import store
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.records import ChangeEvent, VersionPolicy
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, metadata, upgrade_to_head
from ferryman.tensors import Signature, TensorSpec
from tests.pg import database_url, postgres  # noqa: F401 (fixtures)

SIGNATURE = Signature(inputs=(TensorSpec("input", "FP64", (-1, 4)),), outputs=(TensorSpec("label", "INT64", (-1,)),))
SPLIT = {"split": [{"target": "production", "weight": 90}, {"target": "candidate", "weight": 10}]}


def open_registry(home: Path, url: str | None = None) -> RegistryService:
    engine = create_registry_engine(url or f"sqlite:///{home / 'registry.db'}")
    upgrade_to_head(engine)
    return RegistryService(engine, ArtifactStore(home / "artifacts"))


def push(registry: RegistryService, name: str, data: bytes) -> int:
    staged = registry.artifacts.stage(io.BytesIO(data), "model.joblib", max_bytes=1 << 20)
    record, _ = registry.register_version(name, staged, framework="sklearn", signature=SIGNATURE, runtime_config={})
    return record.version


@pytest.fixture
def registry(tmp_path: Path, database_url: str) -> RegistryService:  # noqa: F811
    return open_registry(tmp_path / "home", database_url)


@pytest.fixture
def churn(registry: RegistryService) -> RegistryService:
    """``churn`` with versions 1-3, production → 1, candidate → 2."""
    for i in range(3):
        push(registry, "churn", f"v{i}".encode())
    registry.set_alias("churn", "production", 1)
    registry.set_alias("churn", "candidate", 2)
    return registry


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls on threads released together; each result is a value or the exception raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# -- schema --------------------------------------------------------------------------------------


def _alembic(engine: Any, action: Callable[[Config, str], None], target: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(store.MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        action(config, target)


def test_upgrading_from_0001_keeps_the_data_and_adds_the_tables(tmp_path: Path) -> None:
    home = tmp_path / "home"
    engine = create_registry_engine(f"sqlite:///{home / 'registry.db'}")
    _alembic(engine, command.upgrade, "0001")
    assert "traffic_policies" not in inspect(engine).get_table_names()
    now = datetime.now(UTC)
    with engine.begin() as conn:  # rows as a 0001 server wrote them
        conn.execute(insert(store.models).values(id=1, name="churn", description="", created_at=now, last_version=1))
        conn.execute(
            insert(store.versions).values(
                model_id=1,
                number=1,
                framework="sklearn",
                sha256="0" * 64,
                size=1,
                filename="model.joblib",
                signature='{"inputs": [], "outputs": []}',
                runtime_config="{}",
                description="",
                created_by="local",
                created_at=now,
            )
        )
        conn.execute(
            insert(store.aliases).values(
                model_id=1, name="production", version_number=1, updated_at=now, updated_by="local"
            )
        )

    upgrade_to_head(engine)
    with engine.connect() as conn:
        assert list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)) == []
    tables = set(inspect(engine).get_table_names())
    assert {"traffic_policies", "traffic_policy_history", "version_policies", "rollouts", "feedback"} <= tables
    registry = RegistryService(engine, ArtifactStore(home / "artifacts"))
    assert registry.aliases("churn") == {"production": 1}
    assert registry.get_traffic_policy("churn") == (None, 0)

    assert registry.get_version("churn", 1).framework == "sklearn"
    registry.set_traffic_policy("churn", {"split": [{"target": "production", "weight": 100}]})

    _alembic(engine, command.downgrade, "0001")
    assert "traffic_policies" not in set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(select(store.aliases.c.name, store.aliases.c.version_number)).all() == [("production", 1)]


# -- rollback ------------------------------------------------------------------------------------


def test_rollback_returns_to_the_previous_version_and_twice_toggles(churn: RegistryService) -> None:
    heard: list[ChangeEvent] = []
    churn.subscribe(heard.append)
    churn.set_alias("churn", "production", 3, changed_by="alice")
    revision = churn.revision()
    assert churn.rollback_target("churn", "production") == (3, 1)
    assert churn.rollback_alias("churn", "production", changed_by="bob") == (3, 1)
    assert churn.revision() == revision + 1
    assert churn.aliases("churn")["production"] == 1
    assert heard[-1] == ChangeEvent("alias_set", "churn", version=1, alias="production")
    history = churn.alias_history("churn", "production")
    assert [(h.from_version, h.to_version, h.changed_by) for h in history[:2]] == [(3, 1, "bob"), (1, 3, "alice")]

    assert churn.rollback_alias("churn", "production") == (1, 3), "a second rollback undoes the first"
    assert churn.aliases("churn")["production"] == 3


def test_rollback_refusals_name_the_reason(churn: RegistryService) -> None:
    with pytest.raises(Conflict, match=r"alias 'production' of 'churn' has no previous version to roll back to"):
        churn.rollback_alias("churn", "production")
    with pytest.raises(NotFound, match=r"model 'churn' has no alias 'staging'"):
        churn.rollback_alias("churn", "staging")
    with pytest.raises(NotFound, match=r"model 'fraud' not found"):
        churn.rollback_alias("fraud", "production")

    churn.set_alias("churn", "production", 3)
    churn.delete_version("churn", 1)
    revision = churn.revision()
    with pytest.raises(
        Conflict, match=r"cannot roll back alias 'production' of 'churn' to version 1: that version was deleted"
    ):
        churn.rollback_alias("churn", "production")
    assert churn.revision() == revision
    assert churn.aliases("churn")["production"] == 3

    churn.set_alias("churn", "production", 2)
    with pytest.raises(Conflict, match=r"points at version 2, not the expected version 3"):
        churn.rollback_alias("churn", "production", expected_version=3)
    assert churn.rollback_alias("churn", "production", expected_version=2) == (2, 3)


# -- optimistic alias writes ---------------------------------------------------------------------


def test_set_alias_with_expected_version(churn: RegistryService) -> None:
    revision = churn.revision()
    with pytest.raises(Conflict) as caught:
        churn.set_alias("churn", "production", 3, expected_version=2)
    assert str(caught.value) == (
        "alias 'production' of 'churn' points at version 1, not the expected version 2; read it again and retry"
    )
    with pytest.raises(Conflict, match=r"alias 'staging' of 'churn' is not set, not the expected version 1"):
        churn.set_alias("churn", "staging", 3, expected_version=1)
    assert churn.revision() == revision
    assert churn.set_alias("churn", "production", 3, expected_version=1) == 1
    assert churn.aliases("churn")["production"] == 3


def test_concurrent_alias_writes_expecting_the_same_version_one_wins(
    churn: RegistryService,
    tmp_path: Path,
    database_url: str,  # noqa: F811
) -> None:
    first, second = open_registry(tmp_path / "home", database_url), open_registry(tmp_path / "home", database_url)
    results = race(
        lambda: first.set_alias("churn", "production", 2, expected_version=1, changed_by="alice"),
        lambda: second.set_alias("churn", "production", 3, expected_version=1, changed_by="bob"),
    )
    winners = [r for r in results if r == 1]
    losers = [r for r in results if isinstance(r, Conflict)]
    assert len(winners) == 1 and len(losers) == 1, results
    final = churn.aliases("churn")["production"]
    assert f"points at version {final}, not the expected version 1" in str(losers[0])
    history = churn.alias_history("churn", "production")
    assert [(h.from_version, h.to_version) for h in history] == [(1, final), (None, 1)]


def test_concurrent_policy_writes_expecting_the_same_revision_one_wins(
    churn: RegistryService,
    tmp_path: Path,
    database_url: str,  # noqa: F811
) -> None:
    first, second = open_registry(tmp_path / "home", database_url), open_registry(tmp_path / "home", database_url)
    other = {"split": [{"target": "production", "weight": 50}, {"target": "candidate", "weight": 50}]}
    results = race(
        lambda: first.set_traffic_policy("churn", SPLIT, expected_revision=0),
        lambda: second.set_traffic_policy("churn", other, expected_revision=0),
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "int"], results
    loser = next(r for r in results if isinstance(r, Conflict))
    assert "the traffic policy of 'churn' is at revision 1, not the expected revision 0" in str(loser)
    policy, revision = churn.get_traffic_policy("churn")
    assert revision == 1 and policy in (SPLIT, other)
    assert len(churn.traffic_policy_history("churn")) == 1


# -- traffic policies ----------------------------------------------------------------------------


def test_traffic_policy_lifecycle_with_history(churn: RegistryService) -> None:
    heard: list[ChangeEvent] = []
    churn.subscribe(heard.append)
    assert churn.get_traffic_policy("churn") == (None, 0)
    assert churn.set_traffic_policy("churn", SPLIT, expected_revision=0, changed_by="alice") == 1
    assert churn.get_traffic_policy("churn") == (SPLIT, 1)
    revision = churn.revision()
    assert churn.set_traffic_policy("churn", SPLIT) == 1, "the same policy again changes nothing"
    assert churn.revision() == revision

    shadowed = {**SPLIT, "shadow": {"target": "3", "fraction": 0.25}}
    assert churn.set_traffic_policy("churn", shadowed, expected_revision=1, changed_by="bob") == 2
    assert churn.traffic_policies() == {"churn": (shadowed, 2)}
    with pytest.raises(Conflict, match="at revision 2, not the expected revision 1"):
        churn.clear_traffic_policy("churn", expected_revision=1)
    assert churn.clear_traffic_policy("churn", expected_revision=2, changed_by="carol") == 3
    assert churn.get_traffic_policy("churn") == (None, 3)
    assert churn.traffic_policies() == {}
    with pytest.raises(NotFound, match="model 'churn' has no traffic policy"):
        churn.clear_traffic_policy("churn")
    # The revision keeps growing after a clear, so an old ETag can never match again.
    assert churn.set_traffic_policy("churn", SPLIT, expected_revision=3) == 4

    history = churn.traffic_policy_history("churn")
    assert [(h.revision, h.old_policy, h.new_policy, h.changed_by) for h in history] == [
        (4, None, SPLIT, "local"),
        (3, shadowed, None, "carol"),
        (2, SPLIT, shadowed, "bob"),
        (1, None, SPLIT, "alice"),
    ]
    assert history[0].to_dict()["new_policy"] == SPLIT
    assert [e.kind for e in heard] == [
        "traffic_policy_set",
        "traffic_policy_set",
        "traffic_policy_cleared",
        "traffic_policy_set",
    ]


@pytest.mark.parametrize(
    ("policy", "error", "message"),
    [
        (
            {"split": [{"target": "production", "weight": 90}, {"target": "7", "weight": 10}]},
            NotFound,
            "the traffic policy names version 7, but 'churn' has no version 7",
        ),
        (
            {"shadow": {"target": "staging"}},
            NotFound,
            "names alias 'staging', but 'churn' has no alias",
        ),
        ({"bandit": {"algorithm": "thompson", "arms": ["1", "9"]}}, NotFound, "has no version 9"),
        ({"split": [{"target": "production", "weight": 90}]}, InvalidInput, "traffic.split weights must sum to 100"),
        ({"split": [{"target": "production", "weight": "x"}]}, InvalidInput, "traffic.split[0].weight"),
        ({"splitt": []}, InvalidInput, "splitt"),
        ([1, 2], InvalidInput, "must be"),
    ],
)
def test_bad_traffic_policies_are_refused_naming_the_field(
    churn: RegistryService, policy: Any, error: type[Exception], message: str
) -> None:
    revision = churn.revision()
    with pytest.raises(error) as caught:
        churn.set_traffic_policy("churn", policy)
    assert message in str(caught.value)
    assert churn.revision() == revision
    assert churn.get_traffic_policy("churn") == (None, 0)


def test_unknown_model_has_no_traffic_policy(registry: RegistryService) -> None:
    with pytest.raises(NotFound, match="model 'ghost' not found"):
        registry.get_traffic_policy("ghost")
    with pytest.raises(NotFound, match="model 'ghost' not found"):
        registry.set_traffic_policy("ghost", SPLIT)


# -- nothing is deleted from under a policy, rollout or alias ------------------------------------


def test_deletes_are_refused_while_a_policy_names_the_version_or_alias(churn: RegistryService) -> None:
    churn.set_traffic_policy("churn", {**SPLIT, "shadow": {"target": 3}})
    with pytest.raises(Conflict) as caught:
        churn.delete_version("churn", 3)
    assert str(caught.value) == (
        "version 3 of 'churn' is named by the traffic policy; change or clear the traffic policy first"
    )
    with pytest.raises(Conflict) as caught:
        churn.delete_alias("churn", "candidate")
    assert str(caught.value) == (
        "alias 'candidate' of 'churn' is named by the traffic policy; change or clear the policy first"
    )
    churn.set_alias("churn", "production", 3)
    with pytest.raises(Conflict) as caught:
        churn.delete_version("churn", 3)
    assert str(caught.value) == (
        "version 3 of 'churn' is the target of alias 'production' and named by the traffic policy; "
        "move or delete the alias, and change or clear the traffic policy first"
    )
    churn.clear_traffic_policy("churn")
    churn.delete_alias("churn", "candidate")
    churn.delete_version("churn", 2)
    assert [v.version for v in churn.list_versions("churn")] == [1, 3]


def test_delete_model_takes_its_policies_rollouts_and_feedback_along(churn: RegistryService) -> None:
    churn.set_traffic_policy("churn", SPLIT)
    churn.set_version_policy("churn", {"keep": "aliased_and_latest", "latest": 2})
    churn.start_rollout("churn", to_version=3, steps=[50, 100], interval=60)
    churn.abort_rollout("churn")
    churn.record_feedback("churn", [{"request_id": "r1", "reward": 1}])
    churn.clear_traffic_policy("churn")
    churn.delete_alias("churn", "production")
    churn.delete_alias("churn", "candidate")
    churn.delete_model("churn")
    push(churn, "churn", b"new")
    assert churn.get_traffic_policy("churn") == (None, 0)
    assert churn.traffic_policy_history("churn") == []
    assert churn.get_version_policy("churn") == VersionPolicy()
    assert churn.list_rollouts("churn") == []
    assert churn.read_feedback("churn") == []


# -- version policies ----------------------------------------------------------------------------


def test_version_policy_default_set_and_keep(churn: RegistryService) -> None:
    assert churn.get_version_policy("churn") == VersionPolicy("aliased_and_latest", 1)
    assert churn.get_version_policy("churn").to_dict() == {"keep": "aliased_and_latest", "latest": 1}
    assert churn.version_policies() == {}
    heard: list[ChangeEvent] = []
    churn.subscribe(heard.append)

    latest = churn.set_version_policy("churn", {"keep": "aliased_and_latest", "latest": 2})
    assert latest.versions_to_keep([1, 2, 3], aliased=[1]) == {1, 2, 3}
    assert VersionPolicy("aliased_and_latest", 0).versions_to_keep([1, 2, 3], aliased=[2]) == {2}
    assert VersionPolicy().versions_to_keep([1, 2, 3], aliased=[1]) == {1, 3}

    explicit = churn.set_version_policy("churn", {"keep": "explicit", "versions": [3, 1, 3]})
    assert explicit.to_dict() == {"keep": "explicit", "versions": [1, 3]}
    assert churn.get_version_policy("churn") == explicit
    assert explicit.versions_to_keep([1, 2], aliased=[2]) == {1}
    revision = churn.revision()
    churn.set_version_policy("churn", {"keep": "explicit", "versions": [1, 3]})
    assert churn.revision() == revision, "the same policy again changes nothing"
    assert churn.version_policies() == {"churn": explicit}
    assert [e.kind for e in heard] == ["version_policy_set", "version_policy_set"]

    with pytest.raises(Conflict, match=r"version 3 of 'churn' is kept by the explicit version policy"):
        churn.delete_version("churn", 3)


@pytest.mark.parametrize(
    ("policy", "error", "message"),
    [
        ({"keep": "everything"}, InvalidInput, "keep: expected 'aliased_and_latest' or 'explicit', got 'everything'"),
        ({"latest": 2}, InvalidInput, "keep: expected"),
        ({"keep": "aliased_and_latest", "latest": -1}, InvalidInput, "latest: expected a whole number from 0 to 1000"),
        ({"keep": "aliased_and_latest", "latest": True}, InvalidInput, "latest: expected a whole number"),
        ({"keep": "aliased_and_latest", "versions": [1]}, InvalidInput, "versions: not a field of"),
        ({"keep": "explicit", "versions": []}, InvalidInput, "versions: expected a non-empty list"),
        ({"keep": "explicit", "versions": [1, "2"]}, InvalidInput, "versions[1]: expected a positive version number"),
        ({"keep": "explicit", "versions": [1, 9]}, NotFound, "versions[1]: model 'churn' has no version 9"),
        ("explicit", InvalidInput, "must be a JSON object"),
    ],
)
def test_bad_version_policies_are_refused_naming_the_field(
    churn: RegistryService, policy: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        churn.set_version_policy("churn", policy)
    assert message in str(caught.value)
    assert churn.get_version_policy("churn") == VersionPolicy()


def test_a_stored_policy_is_seen_by_another_service_on_the_same_file(
    churn: RegistryService,
    tmp_path: Path,
    database_url: str,  # noqa: F811
) -> None:
    churn.set_traffic_policy("churn", SPLIT, changed_by="alice")
    other = open_registry(tmp_path / "home", database_url)
    assert other.get_traffic_policy("churn") == (SPLIT, 1)
    assert [h.changed_by for h in other.traffic_policy_history("churn")] == ["alice"]
