"""Feedback about predictions: rewards for bandits, labels for live accuracy.

Feedback is appended data, not registry configuration: it is written in one ``executemany``
under SQLite's write lock but does not bump the registry revision (that would make every process
rebuild its catalog for each reward). Subscribers still hear a ``feedback_recorded`` event.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import func, insert, select, update

from ferryman.errors import InvalidInput, NotFound, PayloadTooLarge
from ferryman.registry import queries, store
from ferryman.registry.core import RegistryCore, utc_now
from ferryman.registry.records import ChangeEvent, FeedbackRecord
from ferryman.registry.store import feedback, models

__all__ = ["MAX_FEEDBACK_ITEMS", "MAX_LABEL_CHARS", "FeedbackStore"]

#: Items one call may record.
MAX_FEEDBACK_ITEMS = 10_000
#: Size of one label's JSON text.
MAX_LABEL_CHARS = 65_536
_MAX_REQUEST_ID = 255
_FIELDS = ("request_id", "reward", "label", "version", "prediction")


class FeedbackStore(RegistryCore):
    """Feedback writes and reads, part of RegistryService."""

    def record_feedback(self, name: str, items: list[dict[str, Any]], *, field: str | None = "items") -> int:
        """Store feedback items (``request_id`` with a ``reward`` and/or a ``label``, optional ``version``).

        Returns how many were stored. Errors name the item's field, ``items[3].reward``; with
        ``field=None`` the one item is addressed by its bare field names (``reward``).
        """
        if not isinstance(items, list):
            raise InvalidInput(f"{field or 'body'}: expected a list of feedback items")
        if not items:
            raise InvalidInput(f"{field or 'body'}: expected at least one feedback item")
        if len(items) > MAX_FEEDBACK_ITEMS:
            raise PayloadTooLarge(
                f"{field or 'body'}: at most {MAX_FEEDBACK_ITEMS} items per request, got {len(items)}"
            )
        rows = [_row(item, _where(field, index)) for index, item in enumerate(items)]
        with store.append_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            for index, row in enumerate(rows):
                version = row["version"]
                if version is not None and version > model.last_version:
                    raise NotFound(f"{_where(field, index)}version: model '{name}' has no version {version}")
            now = utc_now()
            conn.execute(insert(feedback), [{**row, "model_id": model.id, "received_at": now} for row in rows])
        self._notify([ChangeEvent("feedback_recorded", name)])
        return len(rows)

    def read_feedback(self, name: str, *, after_id: int = 0, limit: int = 1000) -> list[FeedbackRecord]:
        """The model's feedback with ids above ``after_id``, oldest first (read incrementally by id)."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            rows = conn.execute(
                select(feedback)
                .where(feedback.c.model_id == model.id, feedback.c.id > after_id)
                .order_by(feedback.c.id)
                .limit(limit)
            )
            return [
                FeedbackRecord(
                    id=row.id,
                    model=model.name,
                    request_id=row.request_id,
                    version=row.version,
                    reward=row.reward,
                    label=None if row.label is None else json.loads(row.label),
                    prediction=None if row.prediction is None else json.loads(row.prediction),
                    received_at=row.received_at,
                )
                for row in rows
            ]

    def unresolved_feedback(self, *, after_id: int, limit: int = 5000) -> list[tuple[int, str, str]]:
        """``(id, model, request_id)`` of feedback above ``after_id`` that names no version yet, oldest first.

        That is feedback whose request the process that received it had not answered: another
        process or replica may have, and fills the version in (:meth:`resolve_feedback`).
        """
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(feedback.c.id, models.c.name, feedback.c.request_id)
                .join(models, models.c.id == feedback.c.model_id)
                .where(feedback.c.id > after_id, feedback.c.version.is_(None))
                .order_by(feedback.c.id)
                .limit(limit)
            )
            return [(row.id, row.name, row.request_id) for row in rows]

    def last_feedback_id(self) -> int:
        """The newest feedback row's id (0 when there is none)."""
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.max(feedback.c.id))).scalar_one() or 0)

    def resolve_feedback(self, resolved: list[tuple[int, int, Any]]) -> int:
        """Set ``(id, version, prediction)`` on feedback rows that still name no version; returns rows set."""
        if not resolved:
            return 0
        done = 0
        with store.append_transaction(self._engine) as conn:
            for row_id, version, prediction in resolved:
                try:
                    encoded = None if prediction is None else json.dumps(prediction, allow_nan=False)
                except (TypeError, ValueError):  # a NaN score: the version alone still counts
                    encoded = None
                result = conn.execute(
                    update(feedback)
                    .where(feedback.c.id == row_id, feedback.c.version.is_(None))
                    .values(version=version, prediction=encoded)
                )
                done += result.rowcount
        return done


def _where(field: str | None, index: int) -> str:
    return "" if field is None else f"{field}[{index}]."


def _row(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where.rstrip('.') or 'body'}: expected an object with request_id and a reward or label")
    unknown = sorted(set(item) - set(_FIELDS))
    if unknown:
        raise InvalidInput(f"{where}{unknown[0]}: unknown field (fields: {', '.join(_FIELDS)})")
    request_id = item.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= _MAX_REQUEST_ID or not request_id.isprintable():
        raise InvalidInput(
            f"{where}request_id: expected a non-empty printable string of at most {_MAX_REQUEST_ID} characters, "
            f"got {request_id!r}"
        )
    reward = item.get("reward")
    if reward is not None and (
        isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward)
    ):
        raise InvalidInput(f"{where}reward: expected a finite number, got {reward!r}")
    label = item.get("label")
    encoded = _json_value(label, f"{where}label")
    prediction = _json_value(item.get("prediction"), f"{where}prediction")
    if reward is None and label is None:
        raise InvalidInput(f"{where.rstrip('.') or 'body'}: needs a reward or a label")
    version = item.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise InvalidInput(f"{where}version: expected a positive version number, got {version!r}")
    return {
        "request_id": request_id,
        "reward": None if reward is None else float(reward),
        "label": encoded,
        "version": version,
        "prediction": prediction,
    }


def _json_value(value: Any, field: str) -> str | None:
    if value is None:
        return None
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field}: must be a JSON value: {exc}") from None
    if len(encoded) > MAX_LABEL_CHARS:
        raise InvalidInput(f"{field}: at most {MAX_LABEL_CHARS} characters of JSON, got {len(encoded)}")
    return encoded
