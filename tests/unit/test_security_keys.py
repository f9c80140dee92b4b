"""API keys on real SQLite and PostgreSQL registries: create, verify from the cache, refuse, rotate, revoke."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head
from ferryman.security import KeyCache, KeyRejected, Permission, Principal, Role, StoredKey, parse_duration
from ferryman.security.keys import KeyRecord, generate_key, hash_key, key_id_of
from tests.pg import database_url, postgres  # noqa: F401 (fixtures)

KEY_FORMAT = re.compile(r"fm_[a-z0-9]{12}_[A-Za-z0-9_-]{43}")


class WallClock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path: Path, database_url: str) -> Iterator[RegistryService]:  # noqa: F811
    engine = create_registry_engine(database_url)
    upgrade_to_head(engine)
    yield RegistryService(engine, ArtifactStore(tmp_path / "artifacts"))
    engine.dispose()


def registry_is_sqlite(tmp_path: Path) -> bool:
    """True when the ``database_url`` of this test is the SQLite file under ``tmp_path``."""
    return (tmp_path / "home" / "registry.db").is_file()


def cache_of(registry: RegistryService, clock: WallClock | None = None) -> KeyCache:
    cache = KeyCache() if clock is None else KeyCache(clock=clock)
    cache.load(registry.key_table())
    return cache


def rejected(cache: KeyCache, plaintext: str) -> KeyRejected:
    with pytest.raises(KeyRejected) as caught:
        cache.verify(plaintext)
    error = caught.value
    assert error.status == 401
    assert error.message == "invalid, expired or revoked API key"
    assert not plaintext or plaintext not in str(error)
    return error


def test_a_new_key_is_printed_once_and_stored_only_as_a_hash(registry: RegistryService, tmp_path: Path) -> None:
    record, plaintext = registry.create_key(
        "deployer", ["fraud-*", "churn"], expires_in=timedelta(days=90), name="ci", created_by="alice"
    )
    assert KEY_FORMAT.fullmatch(plaintext)
    assert key_id_of(plaintext) == record.key_id
    assert (record.role, record.models, record.name, record.created_by) == (
        Role.DEPLOYER,
        ("churn", "fraud-*"),
        "ci",
        "alice",
    )
    assert record.expires_at == record.created_at + timedelta(days=90)
    assert record.revoked_at is record.last_used_at is record.replaces is None
    assert record.hint == f"fm_{record.key_id}_…"
    assert record.state(record.created_at) == "active"
    listed = registry.list_keys()
    assert listed == [record]
    assert plaintext not in repr(listed) and plaintext not in str(record.to_dict(record.created_at))

    secret = plaintext.rsplit("_", 1)[-1][-40:]
    with registry._engine.connect() as conn:
        stored = conn.execute(text("SELECT secret_hash FROM api_keys")).scalar_one()
    assert stored == hash_key(plaintext) and stored.startswith("sha256:") and len(stored) == 7 + 64
    if registry_is_sqlite(tmp_path):
        raw = (tmp_path / "home" / "registry.db").read_bytes() + (tmp_path / "home" / "registry.db-wal").read_bytes()
        assert secret.encode() not in raw


def test_the_cache_verifies_a_key_into_its_principal(registry: RegistryService) -> None:
    record, plaintext = registry.create_key(Role.PREDICTOR, ["churn"], name="app")
    principal = cache_of(registry).verify(plaintext)
    assert principal == Principal("app", Role.PREDICTOR, ("churn",), record.key_id, "key")
    assert principal.may(Permission.INFER, "churn") and not principal.may(Permission.INFER, "fraud")
    unnamed, unnamed_key = registry.create_key("viewer")
    assert cache_of(registry).verify(unnamed_key).name == f"key:{unnamed.key_id}"


def test_the_cache_needs_no_database() -> None:
    key_id, plaintext = generate_key()
    now = datetime.now(UTC)
    record = KeyRecord(key_id, "x", Role.ADMIN, None, now, "t", None, None, None, None, None)
    cache = KeyCache()
    cache.load([StoredKey(record, hash_key(plaintext))])
    assert len(cache) == 1
    assert cache.verify(plaintext).role is Role.ADMIN
    with pytest.raises(ValueError, match="unknown hash scheme"):
        cache.load([StoredKey(record, "bcrypt:xyz")])


def test_wrong_secret_unknown_id_and_malformed_keys_are_refused_alike(registry: RegistryService) -> None:
    record, plaintext = registry.create_key("admin")
    cache = cache_of(registry)
    other_secret = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    assert rejected(cache, other_secret).reason == "wrong secret"
    assert rejected(cache, other_secret).key_id == record.key_id
    _, stranger = generate_key()
    unknown = rejected(cache, stranger)
    assert (unknown.reason, unknown.key_id) == ("unknown", key_id_of(stranger))
    for malformed in (
        "",
        "fm_",
        plaintext[:-20],
        plaintext + "=",
        "Bearer " + plaintext,
        plaintext.upper(),
        "x" * 10_000,
    ):
        error = rejected(cache, malformed)
        assert (error.reason, error.key_id) == ("malformed", None)
    assert rejected(cache, None).reason == "malformed"  # type: ignore[arg-type]


def test_an_expired_key_is_refused_from_its_expiry_on(registry: RegistryService) -> None:
    record, plaintext = registry.create_key("viewer", expires_in=parse_duration("12h"))
    assert record.expires_at is not None
    clock = WallClock()
    cache = cache_of(registry, clock)
    clock.now = record.expires_at.timestamp() - 0.001
    assert cache.verify(plaintext).key_id == record.key_id
    clock.now = record.expires_at.timestamp()
    assert rejected(cache, plaintext).reason == "expired"
    assert record.state(record.expires_at) == "expired"
    assert not registry.has_active_key(now=record.expires_at)
    assert registry.has_active_key(now=record.expires_at - timedelta(seconds=1))


def test_a_revoked_key_is_refused_once_the_cache_reloads(registry: RegistryService) -> None:
    record, plaintext = registry.create_key("deployer")
    cache = cache_of(registry)
    revision = registry.revision()
    revoked = registry.revoke_key(record.key_id, by="bob")
    assert registry.revision() == revision + 1
    assert (revoked.revoked_by, revoked.state(datetime.now(UTC))) == ("bob", "revoked")
    assert cache.verify(plaintext)  # until this process notices the revision moved
    cache.load(registry.key_table())
    assert rejected(cache, plaintext).reason == "revoked"
    assert registry.revoke_key(record.key_id, by="carol") == revoked
    assert registry.revision() == revision + 1, "revoking twice changes nothing"
    assert not registry.has_active_key()
    assert registry.list_keys(include_revoked=False) == []


def test_a_repeat_caller_is_verified_from_memory_with_the_same_outcomes(registry: RegistryService) -> None:
    record, plaintext = registry.create_key("predictor", ["w1"], expires_in=parse_duration("1h"))
    assert record.expires_at is not None
    clock = WallClock()
    clock.now = record.expires_at.timestamp() - 10
    cache = cache_of(registry, clock)
    first = cache.verify(plaintext)
    assert cache.verify(plaintext) is first  # the remembered principal
    assert cache.drain_used() == {record.key_id}
    assert cache.verify(plaintext) is first
    assert cache.drain_used() == {record.key_id}, "a remembered key still counts as used"
    wrong = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")
    assert rejected(cache, wrong).reason == "wrong secret"
    clock.now = record.expires_at.timestamp()
    assert rejected(cache, plaintext).reason == "expired", "expiry is checked on every remembered hit"


def test_the_memory_of_verified_keys_is_bounded(registry: RegistryService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ferryman.security.keys._MAX_VERIFIED", 2)
    keys = [registry.create_key("viewer")[1] for _ in range(3)]
    cache = cache_of(registry)
    for plaintext in keys * 2:
        assert cache.verify(plaintext).role.value == "viewer"
    assert len(cache._verified) <= 2


def test_a_leaked_key_can_be_revoked_by_pasting_it_and_bad_ids_are_not_echoed(registry: RegistryService) -> None:
    record, plaintext = registry.create_key("admin")
    assert registry.revoke_key(plaintext).revoked_at is not None
    with pytest.raises(NotFound, match="no API key with id 'aaaaaaaaaaaa'"):
        registry.revoke_key("aaaaaaaaaaaa")
    typo = plaintext[:20] + "!" + plaintext[21:]
    with pytest.raises(InvalidInput) as caught:
        registry.get_key(typo)
    assert typo not in str(caught.value) and plaintext[16:] not in str(caught.value)
    assert registry.get_key(record.key_id).key_id == record.key_id


def test_rotation_replaces_the_key_and_revokes_the_old_one(registry: RegistryService) -> None:
    old, old_key = registry.create_key("deployer", ["churn"], expires_in=timedelta(days=30), name="ci")
    revision = registry.revision()
    new, new_key = registry.rotate_key(old.key_id, by="alice")
    assert registry.revision() == revision + 1
    assert new_key != old_key and new.key_id != old.key_id
    assert (new.role, new.models, new.name, new.created_by, new.replaces) == (
        Role.DEPLOYER,
        ("churn",),
        "ci",
        "alice",
        old.key_id,
    )
    assert new.expires_at == new.created_at + timedelta(days=30), "the lifetime carries over"
    cache = cache_of(registry)
    assert cache.verify(new_key).key_id == new.key_id
    assert rejected(cache, old_key).reason == "revoked"
    with pytest.raises(Conflict, match="was revoked; create a new key"):
        registry.rotate_key(old.key_id)


def test_rotation_with_grace_lets_the_old_key_work_until_the_grace_ends(registry: RegistryService) -> None:
    old, old_key = registry.create_key("predictor")
    new, new_key = registry.rotate_key(old.key_id, grace=timedelta(hours=1))
    retired = registry.get_key(old.key_id)
    assert retired.revoked_at is None
    assert retired.expires_at == new.created_at + timedelta(hours=1)
    assert new.expires_at is None
    clock = WallClock()
    clock.now = new.created_at.timestamp() + 3599
    cache = cache_of(registry, clock)
    assert cache.verify(old_key).key_id == old.key_id
    assert cache.verify(new_key).key_id == new.key_id
    clock.now += 1
    assert rejected(cache, old_key).reason == "expired"
    assert cache.verify(new_key).key_id == new.key_id
    for grace in (timedelta(0), timedelta(days=31)):
        with pytest.raises(InvalidInput, match=r"^grace: "):
            registry.rotate_key(new.key_id, grace=grace)


def test_key_changes_are_audited_atomically_and_never_contain_the_key(registry: RegistryService) -> None:
    created, first = registry.create_key("admin", created_by="root", source_address="10.0.0.1")
    rotated, second = registry.rotate_key(created.key_id, by="root")
    registry.revoke_key(rotated.key_id, by="root")
    records = registry.list_audit(action="key.*")
    assert [(r.action, r.principal, r.target, r.outcome) for r in records] == [
        ("key.revoke", "root", f"key/{rotated.key_id}", "success"),
        ("key.rotate", "root", f"key/{created.key_id}", "success"),
        ("key.create", "root", f"key/{created.key_id}", "success"),
    ]
    assert records[2].source_address == "10.0.0.1"
    assert records[2].details == {
        "expires_at": None,
        "key_id": created.key_id,
        "models": None,
        "name": "",
        "role": "admin",
    }
    assert records[1].details == {"grace_s": None, "key_id": rotated.key_id, "replaces": created.key_id}
    dumped = repr(records)
    assert first not in dumped and second not in dumped
    assert registry.verify_audit().ok


def test_last_use_is_bookkeeping_that_does_not_move_the_revision(registry: RegistryService) -> None:
    record, plaintext = registry.create_key("viewer")
    cache = cache_of(registry)
    cache.verify(plaintext)
    cache.verify(plaintext)
    used = cache.drain_used()
    assert used == {record.key_id}
    assert cache.drain_used() == set()
    revision = registry.revision()
    later = datetime(2030, 1, 1, tzinfo=UTC)
    assert registry.mark_keys_used(used, at=later) == 1
    assert registry.mark_keys_used(used, at=later - timedelta(hours=1)) == 0, "never moves backwards"
    assert registry.mark_keys_used([]) == 0
    assert registry.get_key(record.key_id).last_used_at == later
    assert registry.revision() == revision
    assert registry.list_audit() == [registry.list_audit()[0]], "only the key.create record"


def test_has_active_key_by_role(registry: RegistryService) -> None:
    assert not registry.has_active_key()
    registry.create_key("viewer")
    assert registry.has_active_key() and registry.has_active_key("viewer")
    assert not registry.has_active_key(Role.ADMIN)
    registry.create_key("admin", expires_in=timedelta(minutes=30))
    assert registry.has_active_key("admin")
    assert not registry.has_active_key("admin", now=datetime.now(UTC) + timedelta(hours=1))


def test_create_key_refuses_bad_input_naming_the_field(registry: RegistryService) -> None:
    revision = registry.revision()
    cases: list[tuple[dict[str, object], str]] = [
        ({"role": "root"}, "^role: expected one of"),
        ({"role": "viewer", "models": []}, "^models: expected at least one"),
        ({"role": "viewer", "models": ["a/b"]}, "^models: 'a/b' is neither"),
        ({"role": "viewer", "expires_in": timedelta(0)}, "^expires_in: expected a positive duration"),
        ({"role": "viewer", "name": "a\nb"}, "^name: expected printable text"),
        ({"role": "viewer", "created_by": "x" * 256}, "^created_by: expected printable text"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInput, match=message):
            registry.create_key(**kwargs)  # type: ignore[arg-type]
    assert registry.revision() == revision
    assert registry.list_keys() == []


def test_parse_duration() -> None:
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration(" 30m ") == timedelta(minutes=30)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "0d", "-1d", "10", "1.5h", "10x", "d", "1d2h", "01d"):
        with pytest.raises(InvalidInput, match=r"^--expires: expected a positive duration such as 90d"):
            parse_duration(bad)
    with pytest.raises(InvalidInput, match=r"^--grace: at most 3660d"):
        parse_duration("9999d", option="--grace")


def test_generated_keys_are_unique_and_well_formed() -> None:
    keys = {generate_key()[1] for _ in range(1000)}
    assert len(keys) == 1000
    assert all(KEY_FORMAT.fullmatch(key) for key in keys)
    assert len({key_id_of(key) for key in keys}) == 1000
