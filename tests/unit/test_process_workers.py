"""Process workers: same answers as in-process, real parallel children, shared memory released."""

from __future__ import annotations

import os
import signal
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pytest

from ferryman.errors import ModelFailed
from ferryman.runtimes.base import RuntimeConfig
from ferryman.serving.workers import ProcessPoolRuntime

PID_MODEL = """
import os
import numpy as np
import ferryman

class Pid(ferryman.Model):
    def predict(self, inputs):
        x = inputs["x"]
        if x.dtype == object:
            return {"echo": x}
        if (x < 0).any():
            raise ValueError("negative input")
        return {"pid": np.full(len(x), os.getpid()), "double": x * 2}
"""


@pytest.fixture
def pid_model(tmp_path: Path) -> Path:
    folder = tmp_path / "pid"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(PID_MODEL))
    return folder


def segments() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def test_predictions_match_in_process(tmp_path: Path, iris_pipeline: object, iris_data: tuple) -> None:
    path = tmp_path / "iris.joblib"
    joblib.dump(iris_pipeline, path)
    runtime = ProcessPoolRuntime(1)
    runtime.load(path, RuntimeConfig(), "sklearn")
    try:
        assert runtime.inner_framework == "sklearn"
        assert [spec.name for spec in runtime.signature().outputs] == ["predict", "predict_proba"]
        features = iris_data[0][:20]
        result = runtime.predict({"input": features})
        np.testing.assert_array_equal(result["predict"], iris_pipeline.predict(features))  # type: ignore[attr-defined]
        np.testing.assert_allclose(result["predict_proba"], iris_pipeline.predict_proba(features))  # type: ignore[attr-defined]
    finally:
        runtime.unload()


def test_calls_spread_over_children_and_fall_back_to_pickling(pid_model: Path) -> None:
    before = segments()
    runtime = ProcessPoolRuntime(2, segment_bytes=4096)
    runtime.load(pid_model, RuntimeConfig(), "custom")
    try:
        assert len(segments() - before) == 2
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: runtime.predict({"x": np.full((3, 2), float(i))}), range(40)))
        for i, result in enumerate(results):
            np.testing.assert_array_equal(result["double"], np.full((3, 2), 2.0 * i))
        assert {int(r["pid"][0]) for r in results} == set(runtime.pids)
        big = np.arange(4096, dtype=np.float64).reshape(-1, 2)  # 32 KiB: does not fit the 4 KiB segment
        np.testing.assert_array_equal(runtime.predict({"x": big})["double"], big * 2)
        words = np.array([b"a", b"bc"], dtype=object)
        assert list(runtime.predict({"x": words})["echo"]) == [b"a", b"bc"]
        with pytest.raises(ModelFailed, match="negative input"):
            runtime.predict({"x": np.full((1, 2), -1.0)})
        np.testing.assert_array_equal(runtime.predict({"x": np.ones((1, 2))})["double"], [[2.0, 2.0]])
    finally:
        runtime.unload()
    assert segments() - before == set()


def test_a_dead_child_is_reported_and_a_bad_model_fails_the_load(pid_model: Path, tmp_path: Path) -> None:
    runtime = ProcessPoolRuntime(1)
    runtime.load(pid_model, RuntimeConfig(), "custom")
    try:
        os.kill(runtime.pids[0], signal.SIGKILL)
        with pytest.raises(ModelFailed, match="died"):
            runtime.predict({"x": np.ones((1, 2))})
    finally:
        runtime.unload()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ModelFailed, match="could not load"):
        ProcessPoolRuntime(1).load(broken, RuntimeConfig(), "onnx")
