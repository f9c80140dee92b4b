"""Feedback names only request ids; whichever process answered a request joins its feedback to it."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ServerFactory, wait_for
from tests.integration.test_v2_rest import push


def test_feedback_posted_to_one_worker_joins_requests_the_other_answered(
    server_factory: ServerFactory, iris_joblib: Path, iris_data: tuple[np.ndarray, np.ndarray]
) -> None:
    server = server_factory(args=["--workers", "2"])
    push(server.url, "iris", iris_joblib)  # a plain model: no traffic policy, no rollout
    features, labels = iris_data
    answered: dict[str, tuple[int, str]] = {}  # request id -> (prediction, answering process's id prefix)
    truth: dict[str, int] = {}
    for index in range(0, 150, 3):
        row = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": features[index].tolist()}]}
        # A fresh connection each time, so the kernel spreads requests over both workers.
        response = httpx.post(f"{server.url}/v2/models/iris/infer", json=row, timeout=30)
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
        answered[request_id] = (response.json()["outputs"][0]["data"][0], request_id[:8])
        truth[request_id] = int(labels[index])
    prefixes = {prefix for _, prefix in answered.values()}
    assert len(prefixes) == 2, "both workers should have answered some requests"

    items = [{"request_id": request_id, "label": label} for request_id, label in truth.items()]
    items.append({"request_id": "never-answered", "label": 1})
    posted = httpx.post(f"{server.url}/api/v1/models/iris/feedback", json={"items": items}, timeout=30).json()
    # The receiving worker joined its own requests at once; the other worker's wait for its resolver.
    assert 0 < posted["unmatched"] - 1 < len(truth), posted

    expected = sum(answered[rid][0] == label for rid, label in truth.items()) / len(truth)

    def joined() -> dict[str, object] | None:
        figures = httpx.get(f"{server.url}/api/v1/models/iris/accuracy", params={"window": "1h"}, timeout=30).json()
        versions = figures["versions"]
        return versions[0]["total"] if versions and versions[0]["total"]["n"] == len(truth) else None

    wait_for(joined, "every answered request's feedback joined by the worker that answered it", deadline_s=30)
    total = joined()
    assert total is not None and total["accuracy"] == pytest.approx(expected)
    accuracy = httpx.get(f"{server.url}/api/v1/models/iris/accuracy", params={"window": "1h"}, timeout=30).json()
    assert accuracy["unmatched"]["total"] == 1  # the request nobody answered stays unmatched
