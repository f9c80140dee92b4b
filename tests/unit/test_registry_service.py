"""The registry service on a real SQLite file and a real PostgreSQL database: versions, duplicates, aliases,
deletes, events."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path

import pytest

from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.registry.artifacts import ArtifactStore, StagedArtifact
from ferryman.registry.records import ChangeEvent, VersionRecord
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head
from ferryman.tensors import Signature, TensorSpec
from tests.pg import database_url, postgres  # noqa: F401 (fixtures)

SIGNATURE = Signature(
    inputs=(TensorSpec("input", "FP64", (-1, 4)),),
    outputs=(TensorSpec("label", "INT64", (-1,)),),
)


def open_registry(home: Path, url: str | None = None) -> RegistryService:
    """A service on ``url`` (default: SQLite in ``home``) with its artifacts in ``home``."""
    engine = create_registry_engine(url or f"sqlite:///{home / 'registry.db'}")
    upgrade_to_head(engine)
    return RegistryService(engine, ArtifactStore(home / "artifacts"))


@pytest.fixture
def registry(tmp_path: Path, database_url: str) -> Iterator[RegistryService]:  # noqa: F811
    service = open_registry(tmp_path / "home", database_url)
    yield service


def stage(registry: RegistryService, data: bytes, filename: str = "model.joblib") -> StagedArtifact:
    return registry.artifacts.stage(io.BytesIO(data), filename, max_bytes=1 << 20)


def push(registry: RegistryService, name: str, data: bytes, **kwargs: object) -> tuple[VersionRecord, bool]:
    options: dict[str, object] = {"framework": "sklearn", "signature": SIGNATURE, "runtime_config": {}}
    options.update(kwargs)
    return registry.register_version(name, stage(registry, data), **options)  # type: ignore[arg-type]


def blob_count(registry: RegistryService) -> int:
    return sum(1 for p in (registry.artifacts.root / "blobs").rglob("*") if p.is_file())


def test_versions_are_numbered_one_two_three(registry: RegistryService) -> None:
    numbers = [push(registry, "churn", f"v{i}".encode())[0].version for i in range(3)]
    assert numbers == [1, 2, 3]
    assert [v.version for v in registry.list_versions("churn")] == [1, 2, 3]
    model = registry.get_model("churn")
    assert (model.name, model.latest_version, model.version_count, model.aliases) == ("churn", 3, 3, {})
    assert model.created_at.tzinfo is not None


def test_version_record_round_trips_and_serialises(registry: RegistryService) -> None:
    record, created = push(
        registry,
        "churn",
        b"bytes",
        runtime_config={"threads": 2},
        description="first",
        created_by="alice",
    )
    assert created
    assert registry.get_version("churn", 1) == record
    assert record.created_at.tzinfo == UTC
    assert record.signature == SIGNATURE
    assert not record.is_folder
    data = record.to_dict()
    assert list(data) == [
        "model",
        "version",
        "framework",
        "sha256",
        "size",
        "filename",
        "signature",
        "runtime_config",
        "description",
        "created_by",
        "created_at",
        "artifact_signature",
    ]
    assert data["signature"] == SIGNATURE.to_dict()
    assert data["artifact_signature"] is None
    assert data["runtime_config"] == {"threads": 2}
    assert data["created_at"].endswith("+00:00")
    assert registry.get_model("churn").to_dict()["latest_version"] == 1


def test_duplicate_bytes_are_detected_per_model(registry: RegistryService) -> None:
    first, created = push(registry, "churn", b"same bytes")
    assert created
    staged = stage(registry, b"same bytes")
    again, created = registry.register_version(
        "churn", staged, framework="sklearn", signature=SIGNATURE, runtime_config={}
    )
    assert (again, created) == (first, False)
    assert not staged.path.exists()
    assert registry.get_model("churn").version_count == 1

    other, created = push(registry, "fraud", b"same bytes")
    assert created
    assert (other.model, other.version, other.sha256) == ("fraud", 1, first.sha256)
    assert blob_count(registry) == 1
    assert registry.find_by_sha("fraud", first.sha256) == other
    assert registry.find_by_sha("fraud", "0" * 64) is None
    assert registry.find_by_sha("unknown", first.sha256) is None


def test_not_found_messages(registry: RegistryService) -> None:
    push(registry, "churn", b"v1")
    with pytest.raises(NotFound, match=r"^model 'nope' not found$"):
        registry.get_model("nope")
    with pytest.raises(NotFound, match=r"^model 'nope' not found$"):
        registry.list_versions("nope")
    with pytest.raises(NotFound, match=r"^model 'churn' has no version 3$"):
        registry.get_version("churn", 3)
    with pytest.raises(NotFound, match=r"^model 'churn' has no version 3$"):
        registry.set_alias("churn", "production", 3)
    with pytest.raises(NotFound, match=r"^model 'churn' has no alias 'staging'$"):
        registry.delete_alias("churn", "staging")
    with pytest.raises(NotFound, match=r"^model 'nope' not found$"):
        registry.aliases("nope")


def test_invalid_names_are_refused_and_the_staged_file_dropped(registry: RegistryService) -> None:
    staged = stage(registry, b"x")
    with pytest.raises(InvalidInput, match=r"invalid model name 'bad/name'"):
        registry.register_version("bad/name", staged, framework="sklearn", signature=SIGNATURE, runtime_config={})
    assert not staged.path.exists()
    push(registry, "churn", b"x")
    with pytest.raises(InvalidInput, match=r"invalid alias name 'Prod'"):
        registry.set_alias("churn", "Prod", 1)
    with pytest.raises(InvalidInput, match="runtime_config must be JSON-serialisable"):
        push(registry, "churn", b"y", runtime_config={"bad": object()})
    assert registry.revision() == 1


def test_delete_is_refused_while_aliased_and_changes_nothing(registry: RegistryService) -> None:
    push(registry, "churn", b"v1")
    push(registry, "churn", b"v2")
    registry.set_alias("churn", "production", 1)
    revision = registry.revision()
    with pytest.raises(Conflict) as caught:
        registry.delete_version("churn", 1)
    assert str(caught.value) == (
        "version 1 of 'churn' is the target of alias 'production'; move or delete the alias first"
    )
    assert registry.revision() == revision
    assert [v.version for v in registry.list_versions("churn")] == [1, 2]
    assert blob_count(registry) == 2

    registry.set_alias("churn", "staging", 1)
    with pytest.raises(Conflict, match=r"aliases 'production', 'staging'; move or delete the aliases first"):
        registry.delete_version("churn", 1)


def test_delete_version_removes_unreferenced_blob_only(registry: RegistryService) -> None:
    v1, _ = push(registry, "churn", b"shared")
    push(registry, "fraud", b"shared")
    push(registry, "churn", b"own")
    registry.delete_version("churn", 1)
    assert registry.artifacts.materialize(v1.sha256, v1.filename).read_bytes() == b"shared"
    registry.delete_version("churn", 2)
    assert blob_count(registry) == 1
    registry.delete_version("fraud", 1)
    assert blob_count(registry) == 0
    with pytest.raises(NotFound, match="has no version 1"):
        registry.delete_version("fraud", 1)


def test_version_numbers_are_never_reused(registry: RegistryService) -> None:
    push(registry, "churn", b"v1")
    push(registry, "churn", b"v2")
    registry.delete_version("churn", 2)
    assert push(registry, "churn", b"v3")[0].version == 3
    assert registry.get_model("churn").latest_version == 3


def test_alias_set_returns_previous_and_keeps_history(registry: RegistryService) -> None:
    for i in range(3):
        push(registry, "churn", f"v{i}".encode())
    assert registry.set_alias("churn", "production", 1, changed_by="alice") is None
    assert registry.set_alias("churn", "production", 2, changed_by="bob") == 1
    revision = registry.revision()
    assert registry.set_alias("churn", "production", 2) == 2
    assert registry.revision() == revision, "a no-op set writes nothing"
    assert registry.set_alias("churn", "staging", 3) is None
    assert registry.aliases("churn") == {"production": 2, "staging": 3}
    assert registry.get_model("churn").aliases == {"production": 2, "staging": 3}

    registry.delete_alias("churn", "staging", changed_by="carol")
    assert registry.aliases("churn") == {"production": 2}

    history = registry.alias_history("churn", "production")
    assert [(h.from_version, h.to_version, h.changed_by) for h in history] == [
        (1, 2, "bob"),
        (None, 1, "alice"),
    ]
    assert history[0].changed_at >= history[1].changed_at
    assert history[0].to_dict() == {
        "model": "churn",
        "alias": "production",
        "from_version": 1,
        "to_version": 2,
        "changed_by": "bob",
        "changed_at": history[0].changed_at.isoformat(),
    }
    staging = registry.alias_history("churn", "staging")
    assert [(h.from_version, h.to_version, h.changed_by) for h in staging] == [
        (3, None, "carol"),
        (None, 3, "local"),
    ]
    assert registry.alias_history("churn", "never") == []


def test_delete_model(registry: RegistryService) -> None:
    push(registry, "churn", b"v1")
    push(registry, "churn", b"v2")
    push(registry, "fraud", b"v1")
    registry.set_alias("churn", "production", 2)
    with pytest.raises(Conflict, match=r"model 'churn' has alias 'production'; delete the alias first"):
        registry.delete_model("churn")
    registry.delete_alias("churn", "production")
    registry.delete_model("churn")
    assert [m.name for m in registry.list_models()] == ["fraud"]
    assert blob_count(registry) == 1, "fraud's v1 has the same bytes as churn's v1"
    with pytest.raises(NotFound):
        registry.get_model("churn")
    assert push(registry, "churn", b"new")[0].version == 1
    assert registry.alias_history("churn", "production") == []


def test_list_models_sorted_with_summaries(registry: RegistryService) -> None:
    push(registry, "zeta", b"z")
    push(registry, "alpha", b"a1")
    push(registry, "alpha", b"a2")
    registry.set_alias("alpha", "production", 1)
    models = registry.list_models()
    assert [(m.name, m.latest_version, m.version_count, m.aliases) for m in models] == [
        ("alpha", 2, 2, {"production": 1}),
        ("zeta", 1, 1, {}),
    ]
    registry.delete_version("zeta", 1)
    assert registry.get_model("zeta").to_dict()["latest_version"] is None


def test_listeners_hear_committed_changes_and_cannot_break_writes(
    registry: RegistryService, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[tuple[ChangeEvent, int]] = []
    registry.subscribe(lambda event: heard.append((event, registry.revision())))

    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("listener bug")

    registry.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="ferryman.registry.service"):
        push(registry, "churn", b"v1")
        push(registry, "churn", b"v2")
        registry.set_alias("churn", "production", 1)
        registry.set_alias("churn", "production", 1)
        registry.delete_alias("churn", "production")
        registry.delete_version("churn", 2)
    assert heard == [
        (ChangeEvent("version_added", "churn", version=1), 1),
        (ChangeEvent("version_added", "churn", version=2), 2),
        (ChangeEvent("alias_set", "churn", version=1, alias="production"), 3),
        (ChangeEvent("alias_deleted", "churn", version=1, alias="production"), 4),
        (ChangeEvent("version_deleted", "churn", version=2), 5),
    ]
    assert registry.revision() == 5
    assert sum("listener" in r.getMessage() for r in caplog.records) == 5


def test_change_event_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown change kind"):
        ChangeEvent("model_renamed", "churn")


def test_a_second_service_on_the_same_database_sees_changes(
    registry: RegistryService,
    tmp_path: Path,
    database_url: str,  # noqa: F811
) -> None:
    other = open_registry(tmp_path / "home", database_url)
    before = other.revision()
    push(registry, "churn", b"v1")
    assert other.revision() == before + 1
    assert other.get_version("churn", 1).sha256 == registry.get_version("churn", 1).sha256


def test_concurrent_registrations_get_distinct_consecutive_numbers(
    tmp_path: Path,
    database_url: str,  # noqa: F811
) -> None:
    home = tmp_path / "home"
    open_registry(home, database_url)
    services = [open_registry(home, database_url) for _ in range(4)]
    barrier = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        service = services[index % len(services)]
        staged = stage(service, f"model {index}".encode())
        barrier.wait()
        try:
            record, created = service.register_version(
                "churn", staged, framework="sklearn", signature=SIGNATURE, runtime_config={}
            )
            assert created
            with lock:
                results.append(record.version)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(results) == list(range(1, 9))
    assert [v.version for v in services[0].list_versions("churn")] == list(range(1, 9))
    assert services[0].revision() == 8


def wait_for(condition: Callable[[], bool], child: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert child.poll() is None, f"the child exited before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # sync-ok: polling interval while waiting on a condition with a deadline


def run_until_killed(script: str, home: Path, condition: Callable[[], bool], what: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(home)])
    try:
        wait_for(condition, child, what)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL


_CHILD_SETUP = """
    import sys, time
    from pathlib import Path
    from ferryman.registry.artifacts import ArtifactStore
    from ferryman.registry.service import RegistryService
    from ferryman.registry.store import create_registry_engine, upgrade_to_head
    from ferryman.tensors import Signature

    home = Path(sys.argv[1])
    engine = create_registry_engine(f"sqlite:///{home / 'registry.db'}")
    upgrade_to_head(engine)
"""

_KILLED_DURING_UPLOAD = (
    _CHILD_SETUP
    + """
    class Endless:
        def read(self, size=-1):
            return b"\\xab" * (size if size and size > 0 else 65536)

    service = RegistryService(engine, ArtifactStore(home / "artifacts"))
    staged = service.artifacts.stage(Endless(), "big.bin", max_bytes=1 << 40)
    service.register_version("churn", staged, framework="x", signature=Signature((), ()), runtime_config={})
"""
)

_KILLED_BEFORE_COMMIT = (
    _CHILD_SETUP
    + """
    class StallingStore(ArtifactStore):
        def publish(self, staged):
            super().publish(staged)
            (home / "published").touch()
            time.sleep(3600)  # sync-ok: holds the write transaction open until the parent kills us

    service = RegistryService(engine, StallingStore(home / "artifacts"))
    staged = service.artifacts.stage_path(home / "model.bin")
    service.register_version("churn", staged, framework="x", signature=Signature((), ()), runtime_config={})
"""
)


def test_killed_upload_leaves_no_version_and_sweep_cleans_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    staging = home / "artifacts" / "staging"

    def upload_under_way() -> bool:
        return staging.exists() and any(p.stat().st_size > 4 << 20 for p in staging.iterdir())

    run_until_killed(_KILLED_DURING_UPLOAD, home, upload_under_way, "the upload to get going")

    registry = open_registry(home)
    assert registry.list_models() == []
    assert registry.revision() == 0
    assert registry.artifacts.sweep_staging() == 1
    assert list(staging.iterdir()) == []
    assert not (home / "artifacts" / "blobs").exists()


def test_killed_between_publish_and_commit_leaves_no_version(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "model.bin").write_bytes(b"weights" * 1000)
    run_until_killed(_KILLED_BEFORE_COMMIT, home, (home / "published").exists, "the blob to be published")

    registry = open_registry(home)
    assert registry.list_models() == []
    assert registry.revision() == 0
    record, created = registry.register_version(
        "churn",
        registry.artifacts.stage_path(home / "model.bin"),
        framework="sklearn",
        signature=SIGNATURE,
        runtime_config={},
    )
    assert (record.version, created) == (1, True)
    assert registry.artifacts.materialize(record.sha256, record.filename).read_bytes() == b"weights" * 1000
    assert registry.artifacts.sweep_staging() == 0
