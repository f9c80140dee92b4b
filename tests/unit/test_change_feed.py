"""The registry's change feed on a real PostgreSQL: NOTIFY at commit only, LISTEN that survives a restart,
and an unreachable database reported as one 503 naming the registry."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.errors import Conflict, NotReady
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.notify import ChangeFeed
from ferryman.registry.service import RegistryService
from ferryman.registry.store import RegistryUnavailable, create_registry_engine, upgrade_to_head
from ferryman.tensors import Signature, TensorSpec
from tests.conftest import free_port
from tests.pg import PostgresCluster, postgres  # noqa: F401 (fixture)

SIGNATURE = Signature(inputs=(TensorSpec("input", "FP64", (-1, 4)),), outputs=(TensorSpec("label", "INT64", (-1,)),))
DEADLINE_S = 5.0


@pytest.fixture
def pg_registry(tmp_path: Path, postgres: PostgresCluster) -> Iterator[tuple[str, RegistryService]]:  # noqa: F811
    url = postgres.create_database()
    engine = create_registry_engine(url)
    upgrade_to_head(engine)
    yield url, RegistryService(engine, ArtifactStore(tmp_path / "artifacts"))
    engine.dispose()


def push(registry: RegistryService, data: bytes) -> int:
    staged = registry.artifacts.stage(io.BytesIO(data), "model.joblib", max_bytes=1 << 20)
    record, _ = registry.register_version("churn", staged, framework="sklearn", signature=SIGNATURE, runtime_config={})
    return record.version


async def woken(event: asyncio.Event) -> bool:
    """True when ``event`` is set within the deadline (then cleared for the next wait)."""
    try:
        await asyncio.wait_for(event.wait(), DEADLINE_S)
    except TimeoutError:
        return False
    event.clear()
    return True


async def connected(feed: ChangeFeed, event: asyncio.Event) -> None:
    """Wait for the feed's first (re)connection, which wakes followers by itself."""
    assert await woken(event), "the feed never connected"
    assert feed.connected


def test_a_committed_write_wakes_followers_and_a_rolled_back_one_does_not(
    pg_registry: tuple[str, RegistryService],
) -> None:
    url, registry = pg_registry

    async def scenario() -> None:
        feed = ChangeFeed(url)
        event = feed.follow()
        feed.start()
        loop = asyncio.get_running_loop()
        try:
            await connected(feed, event)
            await loop.run_in_executor(None, push, registry, b"v1")
            assert await woken(event)
            assert feed.notifications == 1
            # A refused write rolls back: nothing is sent, so the next write is the second notification.
            with pytest.raises(Conflict):
                await loop.run_in_executor(
                    None, lambda: registry.set_alias("churn", "production", 1, expected_version=7)
                )
            await loop.run_in_executor(None, registry.set_alias, "churn", "production", 1)
            assert await woken(event)
            assert feed.notifications == 2
        finally:
            await loop.run_in_executor(None, feed.close)

    asyncio.run(scenario())


def test_the_feed_reconnects_after_a_database_restart_and_wakes_followers(
    pg_registry: tuple[str, RegistryService],
    postgres: PostgresCluster,  # noqa: F811
) -> None:
    url, registry = pg_registry

    async def scenario() -> None:
        feed = ChangeFeed(url, backoff_max_s=0.5)
        event = feed.follow()
        feed.start()
        loop = asyncio.get_running_loop()
        try:
            await connected(feed, event)
            await loop.run_in_executor(None, postgres.restart)
            assert await woken(event), "no wake-up after the reconnection"
            assert feed.reconnects >= 1
            await loop.run_in_executor(None, push, registry, b"after restart")
            assert await woken(event)
        finally:
            await loop.run_in_executor(None, feed.close)

    asyncio.run(scenario())


def test_on_sqlite_the_feed_does_not_listen(tmp_path: Path) -> None:
    feed = ChangeFeed(f"sqlite:///{tmp_path / 'registry.db'}")
    feed.start()
    assert not feed.listening and not feed.connected
    feed.close()


def test_an_unreachable_database_is_a_503_naming_the_registry(tmp_path: Path) -> None:
    engine = create_registry_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
    registry = RegistryService(engine, ArtifactStore(tmp_path / "artifacts"))
    with pytest.raises(RegistryUnavailable, match="registry database is unavailable") as caught:
        registry.set_alias("churn", "production", 1)
    assert isinstance(caught.value, NotReady) and caught.value.status == 503
    engine.dispose()
