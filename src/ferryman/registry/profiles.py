"""Reference profiles per version: written at push time from the sample, or learned from traffic.

A profile is appended data, like feedback: it is written with :func:`store.append_transaction`
and does not bump the registry revision (a profile learned at traffic time must not make every
process rebuild its catalog). A profile from the pushed sample replaces whatever is stored; one
learned from traffic is only stored when the version has none, so the processes of a server that
learn at the same time all end up using the first one stored.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import numpy as np
from sqlalchemy import insert, select, update

from ferryman.errors import InvalidInput
from ferryman.monitoring.profile import Profile, as_columns, build_profile
from ferryman.registry import queries, store
from ferryman.registry.core import RegistryCore, utc_now
from ferryman.registry.store import version_profiles
from ferryman.runtimes.base import Runtime
from ferryman.tensors import Signature, numpy_dtype

__all__ = ["MAX_PROFILE_CHARS", "ProfileStore", "profile_from_sample"]

logger = logging.getLogger(__name__)

#: A profile of 256 + 256 columns with 100 categories each stays well below this.
MAX_PROFILE_CHARS = 4 << 20

Source = Literal["sample", "traffic"]


class ProfileStore(RegistryCore):
    """Reads and writes version profiles, part of RegistryService."""

    def set_profile(self, name: str, version: int, profile: dict[str, Any], source: Source) -> bool:
        """Store ``profile`` for a version; returns False when a traffic profile lost to one already stored.

        InvalidInput for a malformed profile or source; NotFound for an unknown model or version.
        """
        if source not in ("sample", "traffic"):
            raise InvalidInput(f"profile source must be 'sample' or 'traffic', not {source!r}")
        Profile.from_dict(profile)  # refuses malformed profiles, naming the problem
        text = json.dumps(profile, separators=(",", ":"), allow_nan=False)
        if len(text) > MAX_PROFILE_CHARS:
            raise InvalidInput(f"a profile is at most {MAX_PROFILE_CHARS} characters of JSON, got {len(text)}")
        with store.append_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            queries.version_row(conn, model, version)
            key = (version_profiles.c.model_id == model.id) & (version_profiles.c.version == version)
            existing = conn.execute(select(version_profiles.c.source).where(key)).scalar_one_or_none()
            values = {"source": source, "profile": text, "created_at": utc_now()}
            if existing is None:
                conn.execute(insert(version_profiles).values(model_id=model.id, version=version, **values))
            elif source == "traffic":
                return False
            else:
                conn.execute(update(version_profiles).where(key).values(**values))
        return True

    def get_profile(self, name: str, version: int) -> tuple[dict[str, Any], Source] | None:
        """The stored profile of a version and its source, or None; NotFound for an unknown model."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            row = conn.execute(
                select(version_profiles.c.profile, version_profiles.c.source).where(
                    version_profiles.c.model_id == model.id, version_profiles.c.version == version
                )
            ).first()
        if row is None:
            return None
        source: Source = "sample" if row.source == "sample" else "traffic"
        return json.loads(row.profile), source


def profile_from_sample(runtime: Runtime, signature: Signature, sample: np.ndarray[Any, Any]) -> Profile | None:
    """The reference profile of a pushed sample: its rows and the model's predictions for them.

    ``signature`` is the one :func:`~ferryman.runtimes.samples.infer_signature` completed from the
    sample (so it has exactly one input). None, with a warning, when the sample cannot be
    profiled: the push still succeeds, and the server learns the profile from traffic instead.
    """
    if len(signature.inputs) != 1 or sample.ndim == 0 or sample.shape[0] == 0:
        return None
    spec = signature.inputs[0]
    try:
        inputs = {spec.name: sample.astype(numpy_dtype(spec.datatype), copy=False)}
        results = runtime.predict(inputs)
        rows = sample.shape[0]
        declared = set(signature.output_names())
        predictions = {
            name: np.asarray(value)
            for name, value in results.items()
            if (not declared or name in declared) and np.ndim(value) and as_columns(np.asarray(value)).shape[0] == rows
        }
        return build_profile(inputs, predictions, source="sample")
    except Exception as exc:  # the model ran on this sample a moment ago; a profile is never worth a failed push
        logger.warning("the sample of a push could not be profiled (%s); its profile will be learned from traffic", exc)
        return None
