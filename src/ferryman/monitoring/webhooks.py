"""Webhook deliveries: the outbox in the registry, sent from a background task with timeouts.

Every process runs one :class:`WebhookDispatcher`. It wakes when the evaluator recorded events (and
every ``poll_s`` otherwise), claims due deliveries with a lease (``registry/webhooks.py``), POSTs
them concurrently with a per-attempt timeout, and records the outcome: ``delivered`` on a 2xx;
otherwise ``pending`` again after an exponential backoff (``backoff_s * 2**attempt``), and
``failed`` — logged — after ``max_attempts``. Nothing here runs on the request path, and a slow or
unreachable receiver costs the dispatcher one timeout per attempt, never the evaluator or a request.

Each POST carries the event as JSON and three headers: ``x-ferryman-event`` (``firing`` or
``resolved``), ``x-ferryman-timestamp`` (Unix seconds) and ``x-ferryman-signature:
sha256=<hex>``, the HMAC-SHA256 with the webhook's secret of ``<timestamp>.`` followed by the body.
A receiver recomputes it and refuses old timestamps, so a captured delivery cannot be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, Metric

from ferryman import __version__
from ferryman.registry.core import utc_now
from ferryman.registry.service import RegistryService
from ferryman.registry.webhooks import Delivery

if TYPE_CHECKING:
    import httpx

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookDispatcher", "sign"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-ferryman-signature"
TIMESTAMP_HEADER = "x-ferryman-timestamp"
_BATCH = 20


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookDispatcher:
    """Sends the outbox's due deliveries; one per process (see the module docstring)."""

    def __init__(
        self,
        registry: RegistryService,
        executor: Executor,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        backoff_s: float = 2.0,
        poll_s: float = 1.0,
    ) -> None:
        self._registry = registry
        self._executor = executor
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._poll_s = poll_s
        self._wake: asyncio.Event | None = None
        #: Attempts by result in this process (for tests and logs): delivered, retried, failed.
        self.results = {"delivered": 0, "retried": 0, "failed": 0}

    def metric_families(self) -> Iterator[Metric]:
        """``ferryman_webhook_attempts{result}``: delivered, retried (failed, will retry) and failed (gave up)."""
        family = CounterMetricFamily(
            "ferryman_webhook_attempts", "Webhook delivery attempts made by this process, by result.", labels=["result"]
        )
        for result, count in self.results.items():
            family.add_metric([result], count)
        yield family

    def wake(self) -> None:
        """Look at the outbox now (call on the event loop)."""
        if self._wake is not None:
            self._wake.set()

    async def run_forever(self) -> None:
        """Deliver until cancelled."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        # The HTTP client (and httpx's import) waits for the first delivery: most servers never send
        # one, and start-up is faster without it.
        client: httpx.AsyncClient | None = None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
                self._wake.clear()
                try:
                    while True:
                        claimed = await loop.run_in_executor(
                            self._executor, self._registry.claim_deliveries, self._timeout_s + 30.0, _BATCH
                        )
                        if not claimed:
                            break
                        if client is None:
                            import httpx

                            client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
                        await asyncio.gather(*(self._attempt(client, delivery) for delivery in claimed))
                        if len(claimed) < _BATCH:
                            break
                except Exception:
                    logger.exception("webhook delivery round failed; retrying at the next one")
        finally:
            if client is not None:
                await client.aclose()

    async def _attempt(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        import httpx  # imported already: the client exists

        body = json.dumps(delivery.payload, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "user-agent": f"ferryman/{__version__}",
            "x-ferryman-event": str(delivery.payload.get("event")),
            "x-ferryman-delivery": str(delivery.id),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(delivery.secret, timestamp, body),
        }
        error: str | None = None
        try:
            response = await client.post(delivery.url, content=body, headers=headers)
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        attempt = delivery.attempts + 1
        what = f"{delivery.payload.get('event')} event {delivery.payload.get('id')} to webhook '{delivery.webhook}'"
        if error is None:
            state, retry_at = "delivered", None
            logger.info("webhook delivery %d: delivered %s (attempt %d)", delivery.id, what, attempt)
        elif attempt >= self._max_attempts:
            state, retry_at = "failed", None
            logger.error(
                "webhook delivery %d failed: %s not delivered after %d attempts; last error: %s",
                delivery.id,
                what,
                attempt,
                error,
            )
        else:
            state = "pending"
            retry_at = utc_now() + timedelta(seconds=self._backoff_s * 2 ** (attempt - 1))
            logger.warning(
                "webhook delivery %d: %s attempt %d failed (%s); retrying at %s",
                delivery.id,
                what,
                attempt,
                error,
                retry_at.isoformat(),
            )
        self.results["retried" if state == "pending" else state] += 1
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor,
            lambda: self._registry.finish_delivery(delivery.id, state=state, error=error, retry_at=retry_at),
        )
        if retry_at is not None:
            loop.call_later(self._backoff_s * 2 ** (attempt - 1), self.wake)
