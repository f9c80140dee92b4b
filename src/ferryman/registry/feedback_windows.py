"""Labelled feedback by time: what live accuracy reads (part of RegistryService)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ferryman.registry import queries
from ferryman.registry.core import RegistryCore
from ferryman.registry.store import feedback

__all__ = ["MAX_WINDOW_ROWS", "LabelledFeedback", "LabelledRow"]

#: At most this many feedback rows (the newest) feed one live-accuracy computation.
MAX_WINDOW_ROWS = 200_000


@dataclass(frozen=True, slots=True)
class LabelledRow:
    """One labelled feedback row: version and prediction are None when the server could not join them."""

    version: int | None
    label: Any
    prediction: Any
    received_at: datetime


class LabelledFeedback(RegistryCore):
    """Reads of the labels a model received since a moment."""

    def labelled_feedback_since(self, name: str, since: datetime) -> list[LabelledRow]:
        """The model's feedback rows with a label received at or after ``since``, oldest first."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            rows = conn.execute(
                select(feedback.c.version, feedback.c.label, feedback.c.prediction, feedback.c.received_at)
                .where(
                    feedback.c.model_id == model.id,
                    feedback.c.received_at >= since,
                    feedback.c.label.is_not(None),
                )
                .order_by(feedback.c.id.desc())
                .limit(MAX_WINDOW_ROWS)
            ).all()
        return [
            LabelledRow(
                row.version,
                json.loads(row.label),
                None if row.prediction is None else json.loads(row.prediction),
                row.received_at,
            )
            for row in reversed(rows)
        ]
