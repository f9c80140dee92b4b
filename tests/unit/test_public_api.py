"""The public surface of the package is deliberate: pin it so a change is a visible decision."""

from __future__ import annotations

import ferryman


def test_public_names_are_pinned() -> None:
    assert sorted(ferryman.__all__) == [
        "Client",
        "Conflict",
        "FerrymanError",
        "InferResult",
        "InvalidInput",
        "Model",
        "ModelFailed",
        "NotFound",
        "NotReady",
        "Signature",
        "TensorSpec",
        "__version__",
    ]
    for name in ferryman.__all__:
        assert getattr(ferryman, name) is not None


def test_errors_carry_their_status() -> None:
    statuses = {
        ferryman.InvalidInput: 400,
        ferryman.NotFound: 404,
        ferryman.Conflict: 409,
        ferryman.ModelFailed: 500,
        ferryman.NotReady: 503,
    }
    for error, status in statuses.items():
        assert error("x").status == status
        assert issubclass(error, ferryman.FerrymanError)
