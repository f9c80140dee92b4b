"""The audit trail on a real SQLite file and a real PostgreSQL database: the hash chain, filters, redaction,
concurrent appenders, tampering."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from ferryman.errors import InvalidInput
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head
from ferryman.security import AuditEntry, redact, redact_text
from ferryman.security.audit import GENESIS_HASH, ChainVerifier, canonical_details, record_hash
from ferryman.security.keys import generate_key
from tests.pg import database_url, postgres  # noqa: F401 (fixtures)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = "fm_abcdefghijkl_" + "S" * 43
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


#: The audit trail stores no blobs; every service here shares one (empty) artifact folder.
ARTIFACTS = Path(tempfile.gettempdir()) / "ferryman-audit-test-artifacts"


def open_registry(url: str) -> RegistryService:
    engine = create_registry_engine(url)
    upgrade_to_head(engine)
    return RegistryService(engine, ArtifactStore(ARTIFACTS))


@pytest.fixture
def db(database_url: str) -> str:  # noqa: F811
    """The registry's URL: SQLite or PostgreSQL."""
    return database_url


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def registry(db: str) -> Iterator[RegistryService]:
    service = open_registry(db)
    yield service
    service._engine.dispose()


def entry(n: int, **overrides: object) -> AuditEntry:
    fields: dict[str, object] = {
        "principal": f"user{n % 3}",
        "action": "alias.set" if n % 2 else "version.push",
        "target": f"models/churn/{n}",
        "outcome": "success",
        "source_address": "127.0.0.1",
        "details": {"n": n},
        "at": T0 + timedelta(minutes=n),
    }
    fields.update(overrides)
    return AuditEntry(**fields)  # type: ignore[arg-type]


def fill(registry: RegistryService, count: int) -> None:
    registry.append_audit_many([entry(n) for n in range(1, count + 1)])


def sql(db: str, statement: str) -> None:
    engine = create_registry_engine(db)
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


def test_records_form_a_chain_from_the_genesis_hash(registry: RegistryService) -> None:
    assert registry.verify_audit().to_dict() == {
        "ok": True,
        "checked": 0,
        "first_bad_seq": None,
        "reason": "0 records intact",
    }
    assert registry.audit_head() == (0, GENESIS_HASH)
    first = registry.append_audit(entry(1))
    second, third = registry.append_audit_many([entry(2), entry(3)])
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert first.prev_hash == GENESIS_HASH
    assert (second.prev_hash, third.prev_hash) == (first.hash, second.hash)
    assert first.hash == record_hash(
        seq=1,
        at=T0 + timedelta(minutes=1),
        principal="user1",
        action="alias.set",
        target="models/churn/1",
        outcome="success",
        source_address="127.0.0.1",
        details='{"n":1}',
        prev_hash=GENESIS_HASH,
    )
    assert registry.audit_head() == (3, third.hash)
    assert registry.list_audit() == [third, second, first]
    assert registry.verify_audit().ok
    assert registry.verify_audit().checked == 3
    assert registry.append_audit_many([]) == []


def test_appends_do_not_move_the_registry_revision(registry: RegistryService) -> None:
    revision = registry.revision()
    fill(registry, 5)
    assert registry.revision() == revision


def test_the_default_time_is_the_append_time_in_utc(registry: RegistryService) -> None:
    before = datetime.now(UTC)
    record = registry.append_audit(AuditEntry("alice", "auth.failed", "/api/v1/models", "denied"))
    assert before <= record.at <= datetime.now(UTC)
    assert record.at.tzinfo == UTC
    east = datetime(2026, 3, 1, 14, 0, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    assert registry.append_audit(entry(1, at=east)).at == datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
    assert registry.verify_audit().ok


def test_list_filters(registry: RegistryService) -> None:
    fill(registry, 12)
    registry.append_audit(entry(13, action="key.create", target="key/abc", outcome="success"))
    registry.append_audit(entry(14, action="auth.failed", target="models/a_b%", outcome="denied"))
    registry.append_audit(entry(15, action="auth.failed", target="models/axb", outcome="denied"))

    def seqs(**filters: object) -> list[int]:
        return [r.seq for r in registry.list_audit(**filters)]  # type: ignore[arg-type]

    assert seqs() == list(range(15, 0, -1))
    assert seqs(principal="user0") == [15, 12, 9, 6, 3]
    assert seqs(action="version.push") == [12, 10, 8, 6, 4, 2]
    assert seqs(action="key.*") == [13]
    assert seqs(action="auth.*", outcome="denied") == [15, 14]
    assert seqs(outcome="success", limit=2) == [13, 12]
    assert seqs(target_prefix="models/churn/1") == [12, 11, 10, 1]
    assert seqs(target_prefix="models/a_b%") == [14], "LIKE wildcards in the prefix are literal"
    assert seqs(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=12)) == [11, 10]
    assert seqs(before_seq=4) == [3, 2, 1]
    assert seqs(principal="nobody") == []
    for filters, message in (
        ({"limit": 0}, "^limit: "),
        ({"limit": 10_001}, "^limit: "),
        ({"outcome": "maybe"}, "^outcome: expected one of success, denied, failed"),
        ({"since": datetime(2026, 1, 1)}, "^since: expected a timezone-aware time"),
    ):
        with pytest.raises(InvalidInput, match=message):
            registry.list_audit(**filters)  # type: ignore[arg-type]


def test_secrets_never_reach_the_log(registry: RegistryService) -> None:
    record = registry.append_audit(
        AuditEntry(
            principal=f"someone with {KEY}",
            action="auth.failed",
            target=f"/v2/models/x?api_key={KEY}",
            outcome="denied",
            source_address="10.1.2.3",
            details={
                "key_id": "abcdefghijkl",
                "api_key": KEY,
                "headers": {"Authorization": f"Bearer {JWT}", "x-api-key": KEY, "accept": "*/*"},
                "password": "hunter2",
                "note": f"client sent {KEY} and {JWT}",
                "attempts": [KEY, {"token": "t0ps3cret"}],
            },
        )
    )
    assert record.details == {
        "key_id": "abcdefghijkl",
        "api_key": "[redacted]",
        "headers": {"Authorization": "[redacted]", "x-api-key": "[redacted]", "accept": "*/*"},
        "password": "[redacted]",
        "note": "client sent fm_abcdefghijkl_[redacted] and [redacted]",
        "attempts": ["fm_abcdefghijkl_[redacted]", {"token": "[redacted]"}],
    }
    assert record.principal == "someone with fm_abcdefghijkl_[redacted]"
    assert record.target == "/v2/models/x?api_key=fm_abcdefghijkl_[redacted]"
    with registry._engine.connect() as conn:
        dump = "\n".join(str(row) for row in conn.execute(text("SELECT * FROM audit_log")))
    for secret in ("S" * 43, "c2lnbmF0dXJl", "hunter2", "t0ps3cret"):
        assert secret not in dump


def test_redact_keeps_json_safe_values() -> None:
    class Thing:
        def __str__(self) -> str:
            return f"thing holding {KEY}"

    nested: dict[str, object] = {"level": 0}
    cursor = nested
    for depth in range(1, 12):
        cursor["inner"] = {"level": depth}
        cursor = cursor["inner"]  # type: ignore[assignment]
    details = redact(
        {
            "ratio": float("nan"),
            "big": float("inf"),
            "count": 3,
            "flag": True,
            "none": None,
            "token": None,
            "thing": Thing(),
            "tags": ("a", "b"),
            "deep": nested,
            7: "seven",
        }
    )
    assert details["ratio"] == "nan" and details["big"] == "inf"
    assert (details["count"], details["flag"], details["none"], details["token"]) == (3, True, None, None)
    assert details["thing"] == "thing holding fm_abcdefghijkl_[redacted]"
    assert details["tags"] == ["a", "b"]
    assert details["7"] == "seven"
    assert "[too deep]" in canonical_details({"deep": nested})
    assert redact_text("Authorization: Basic dXNlcjpwYXNzd29yZA==") == "Authorization: Basic [redacted]"
    assert redact_text("nothing to hide") == "nothing to hide"
    huge = canonical_details({"blob": "x" * 20_000})
    assert huge == '{"chars":20011,"truncated":true}'


def test_entries_check_the_callers_constants_and_clip_user_text() -> None:
    for bad_action in ("", "Alias.Set", "alias set", "alias.", ".set", "a" * 65):
        with pytest.raises(ValueError, match="dotted lowercase"):
            AuditEntry("p", bad_action, "t", "success")
    with pytest.raises(ValueError, match="must be one of success, denied, failed"):
        AuditEntry("p", "alias.set", "t", "ok")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        AuditEntry("p", "alias.set", "t", "success", at=datetime(2026, 1, 1))
    long = AuditEntry("p" * 1000, "alias.set", "t" * 1000, "success", "s" * 1000)
    assert (len(long.principal), len(long.target), len(long.source_address)) == (255, 512, 128)
    assert long.target.endswith("…")


def test_concurrent_appenders_in_threads_keep_one_chain(db: str) -> None:
    open_registry(db)
    threads_n, each = 8, 25
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def work(worker: int) -> None:
        service = open_registry(db)  # one engine per thread, like separate processes
        try:
            barrier.wait()
            for n in range(each):
                service.append_audit(entry(n, principal=f"thread{worker}", at=None))
        except BaseException as exc:
            errors.append(exc)
        finally:
            service._engine.dispose()

    workers = [threading.Thread(target=work, args=(w,)) for w in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    registry = open_registry(db)
    result = registry.verify_audit()
    assert (result.ok, result.checked) == (True, threads_n * each), result
    records = registry.list_audit(limit=1000)
    assert sorted(r.seq for r in records) == list(range(1, threads_n * each + 1))
    assert {r.principal for r in records} == {f"thread{w}" for w in range(threads_n)}


def test_concurrent_appenders_in_processes_keep_one_chain(db: str) -> None:
    open_registry(db)
    script = """
        import sys
        from pathlib import Path
        from ferryman.registry.artifacts import ArtifactStore
        from ferryman.registry.service import RegistryService
        from ferryman.registry.store import create_registry_engine
        from ferryman.security import AuditEntry

        db, name, artifacts = sys.argv[1], sys.argv[2], Path(sys.argv[3])
        service = RegistryService(create_registry_engine(db), ArtifactStore(artifacts))
        for n in range(30):
            service.append_audit(AuditEntry(name, "auth.failed", f"/t/{n}", "denied", details={"n": n}))
    """
    children = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), db, f"proc{i}", str(ARTIFACTS)])
        for i in range(4)
    ]
    assert [child.wait(timeout=120) for child in children] == [0, 0, 0, 0]
    result = open_registry(db).verify_audit()
    assert (result.ok, result.checked) == (True, 120), result


def test_key_changes_and_appends_interleave_in_one_chain(registry: RegistryService) -> None:
    registry.append_audit(entry(1))
    record, _ = registry.create_key("viewer")
    registry.append_audit(entry(2))
    registry.revoke_key(record.key_id)
    assert [r.action for r in registry.list_audit()] == ["key.revoke", "version.push", "key.create", "alias.set"]
    assert registry.verify_audit().ok


# -- tampering: each edit made with raw SQL, as an attacker with database access would -------------


def broken(registry: RegistryService) -> tuple[int | None, str, int]:
    result = registry.verify_audit()
    assert not result.ok
    return result.first_bad_seq, result.reason, result.checked


def test_an_edited_detail_is_detected_at_its_record(registry: RegistryService, db: str) -> None:
    fill(registry, 6)
    sql(db, """UPDATE audit_log SET details = '{"n":99}' WHERE seq = 3""")
    assert broken(registry) == (3, "record 3 does not match its hash: it was edited or moved", 2)


@pytest.mark.parametrize("column", ["principal", "action", "target", "outcome", "source_address", "at"])
def test_any_edited_field_is_detected(registry: RegistryService, db: str, column: str) -> None:
    fill(registry, 4)
    value = "'2020-01-01 00:00:00.000000'" if column == "at" else "'x'"
    sql(db, f"UPDATE audit_log SET {column} = {value} WHERE seq = 2")
    assert broken(registry)[0] == 2


def test_an_edit_with_a_recomputed_hash_is_detected_at_the_next_record(registry: RegistryService, db: str) -> None:
    fill(registry, 5)
    original = registry.list_audit(before_seq=4, limit=1)[0]
    forged = record_hash(
        seq=3,
        at=original.at,
        principal="mallory",
        action=original.action,
        target=original.target,
        outcome=original.outcome,
        source_address=original.source_address,
        details='{"n":3}',
        prev_hash=original.prev_hash,
    )
    sql(db, f"UPDATE audit_log SET principal = 'mallory', hash = '{forged}' WHERE seq = 3")
    first_bad, reason, checked = broken(registry)
    assert (first_bad, checked) == (4, 3)
    assert reason == "record 4 does not follow record 3: a record before it was changed or removed"


def test_a_deleted_record_is_detected_at_its_seq(registry: RegistryService, db: str) -> None:
    fill(registry, 6)
    sql(db, "DELETE FROM audit_log WHERE seq = 4")
    assert broken(registry) == (4, "record 4 is missing (the next record is 5)", 3)


def test_a_deleted_first_record_is_detected(registry: RegistryService, db: str) -> None:
    fill(registry, 3)
    sql(db, "DELETE FROM audit_log WHERE seq = 1")
    assert broken(registry)[0] == 1


def test_a_deleted_tail_is_detected_against_the_head(registry: RegistryService, db: str) -> None:
    fill(registry, 6)
    sql(db, "DELETE FROM audit_log WHERE seq >= 5")
    assert broken(registry) == (5, "records 5 to 6 are missing (the chain ends at 4)", 4)
    sql(db, "DELETE FROM audit_log")
    assert broken(registry) == (1, "records 1 to 6 are missing (the chain ends at 0)", 0)


def test_a_deleted_record_with_renumbered_successors_is_detected(registry: RegistryService, db: str) -> None:
    fill(registry, 5)
    sql(db, "DELETE FROM audit_log WHERE seq = 2")
    for seq in (3, 4, 5):
        sql(db, f"UPDATE audit_log SET seq = {seq - 1} WHERE seq = {seq}")
    sql(db, "UPDATE audit_state SET last_seq = 4, last_hash = (SELECT hash FROM audit_log WHERE seq = 4)")
    assert broken(registry)[0] == 2


def test_swapped_records_are_detected_at_the_first_of_them(registry: RegistryService, db: str) -> None:
    fill(registry, 6)
    sql(db, "UPDATE audit_log SET seq = -1 WHERE seq = 3")
    sql(db, "UPDATE audit_log SET seq = 3 WHERE seq = 4")
    sql(db, "UPDATE audit_log SET seq = 4 WHERE seq = -1")
    assert broken(registry) == (3, "record 3 does not match its hash: it was edited or moved", 2)


def test_reordered_timestamps_are_detected(registry: RegistryService, db: str) -> None:
    fill(registry, 4)
    sql(db, "UPDATE audit_log SET at = (SELECT at FROM audit_log WHERE seq = 1) WHERE seq = 4")
    assert broken(registry)[0] == 4


def test_a_column_too_mangled_to_read_is_reported_not_raised(sqlite_db: str) -> None:
    # SQLite only: PostgreSQL's timestamptz column cannot hold such a value in the first place.
    registry = open_registry(sqlite_db)
    fill(registry, 4)
    sql(sqlite_db, "UPDATE audit_log SET at = 'not a time' WHERE seq = 3")
    first_bad, reason, checked = broken(registry)
    assert (first_bad, checked) == (3, 2)
    assert reason.startswith("record 3 cannot be read: ")


def test_a_forged_record_after_the_head_is_detected(registry: RegistryService, db: str) -> None:
    fill(registry, 3)
    _, head_hash = registry.audit_head()
    forged = record_hash(
        seq=4,
        at=T0,
        principal="mallory",
        action="alias.set",
        target="x",
        outcome="success",
        source_address="",
        details="{}",
        prev_hash=head_hash,
    )
    sql(
        db,
        "INSERT INTO audit_log (seq, at, principal, action, target, outcome, source_address, details, prev_hash, hash) "
        f"VALUES (4, '2026-03-01 12:00:00.000000', 'mallory', 'alias.set', 'x', 'success', '', '{{}}', "
        f"'{head_hash}', '{forged}')",
    )
    assert broken(registry) == (4, "records after 3, the chain's recorded head, were not appended by it", 3)


def test_a_moved_head_is_detected(registry: RegistryService, db: str) -> None:
    fill(registry, 3)
    sql(db, f"UPDATE audit_state SET last_hash = '{'f' * 64}'")
    assert broken(registry) == (3, "record 3 is not the chain's recorded head", 3)


def test_the_chain_verifier_stops_at_the_first_fault() -> None:
    verifier = ChainVerifier()
    assert verifier.feed(seq=1, prev_hash=GENESIS_HASH, stored_hash="a" * 64, content_hash="a" * 64)
    assert not verifier.feed(seq=2, prev_hash="b" * 64, stored_hash="c" * 64, content_hash="c" * 64)
    assert not verifier.feed(seq=3, prev_hash="c" * 64, stored_hash="d" * 64, content_hash="d" * 64)
    result = verifier.finish(3, "d" * 64)
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 2, 1)
    first = ChainVerifier()
    assert not first.feed(seq=1, prev_hash="e" * 64, stored_hash="a" * 64, content_hash="a" * 64)
    assert first.finish(1, "a" * 64).reason == (
        "record 1 does not follow the chain's start: a record before it was changed or removed"
    )


def test_generated_keys_in_details_are_redacted_whatever_their_id() -> None:
    _, plaintext = generate_key()
    redacted = redact({"note": plaintext})["note"]
    assert redacted.endswith("_[redacted]") and plaintext.rsplit("_", 1)[-1] not in redacted
