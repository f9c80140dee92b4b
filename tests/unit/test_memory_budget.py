"""Memory accounting and the budget: which versions go first, which never go, what a load is
estimated to cost, and warm-up; the manager is exercised in process over a real temporary registry."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferryman.app import Components, build_components
from ferryman.archive import pack_folder
from ferryman.config import Settings
from ferryman.errors import InvalidInput, ModelFailed, Overloaded
from ferryman.registry.intake import IntakeRequest
from ferryman.runtimes.base import RuntimeConfig
from ferryman.runtimes.custom import CustomRuntime
from ferryman.serving.loading import check_warmup_config, warm_up, warmup_inputs
from ferryman.serving.memory import MemoryBudget, MemorySnapshot, protected_keys
from ferryman.tensors import Signature, TensorSpec

MiB = 2**20


@dataclass
class Version:
    """A stand-in resident: the budget only reads these five attributes."""

    model: str
    version: int
    memory_bytes: int
    last_used: float
    inflight: int = 0


def names(chosen: list[Version]) -> list[str]:
    return [f"{v.model}:{v.version}" for v in chosen]


RESIDENTS = [
    Version("a", 1, 10 * MiB, last_used=3.0),
    Version("b", 1, 10 * MiB, last_used=1.0),
    Version("c", 1, 10 * MiB, last_used=2.0),
]


def test_nothing_is_unloaded_while_the_load_fits() -> None:
    assert MemoryBudget(40 * MiB).victims("x", 10 * MiB, RESIDENTS, set()) == []
    assert MemoryBudget(None).victims("x", 10**12, RESIDENTS, set()) == []


def test_least_recently_used_versions_go_first_and_only_as_many_as_needed() -> None:
    budget = MemoryBudget(40 * MiB)
    assert names(budget.victims("x", 15 * MiB, RESIDENTS, set())) == ["b:1"]
    assert names(budget.victims("x", 25 * MiB, RESIDENTS, set())) == ["b:1", "c:1"]


def test_busy_and_protected_versions_are_never_chosen() -> None:
    budget = MemoryBudget(40 * MiB)
    busy = [Version("b", 1, 10 * MiB, 1.0, inflight=1), *RESIDENTS[::2]]
    assert names(budget.victims("x", 15 * MiB, busy, set())) == ["c:1"]
    assert names(budget.victims("x", 15 * MiB, RESIDENTS, {("b", 1)})) == ["c:1"]


def test_a_load_that_cannot_fit_is_refused_with_503_naming_the_budget() -> None:
    budget = MemoryBudget(40 * MiB)
    busy = [Version(v.model, v.version, v.memory_bytes, v.last_used, inflight=1) for v in RESIDENTS]
    with pytest.raises(Overloaded, match=r"model 'x' version 1 needs about 15.0 MiB but the memory budget") as raised:
        budget.victims("model 'x' version 1", 15 * MiB, busy, set())
    assert raised.value.status == 503 and "memory_budget_mb" in raised.value.message
    with pytest.raises(Overloaded, match=r"more than the whole memory budget of 40.0 MiB"):
        budget.victims("model 'x' version 1", 41 * MiB, [], set())


def test_serving_defaults_of_models_with_traffic_are_protected() -> None:
    residents = [Version("a", 2, MiB, 1.0, inflight=1), Version("a", 1, MiB, 1.0), Version("b", 1, MiB, 1.0)]
    defaults = {"a": 1, "b": 1, "c": 4}
    assert protected_keys(residents, defaults, None) == {("a", 1)}
    assert protected_keys(residents, defaults, "b") == {("a", 1), ("b", 1)}
    assert protected_keys(residents, defaults, "unknown") == {("a", 1)}


def test_estimates_never_shrink_for_a_version_and_start_from_the_artifact_size() -> None:
    budget = MemoryBudget(None)
    key = ("m", 1)
    assert budget.expected(key, "sha", floor=5) == 5
    assert budget.record(key, "sha", measured=100, floor=5) == 100
    # A reload into memory the allocator kept reads low; the earlier figure stands.
    assert budget.record(key, "sha", measured=2, floor=5) == 100
    assert budget.expected(key, "sha", floor=5) == 100
    assert budget.expected(key, "other-sha", floor=5) == 5
    assert budget.expected(("m", 2), "sha", floor=5) == 5


def test_a_snapshot_sees_an_allocation() -> None:
    before = MemorySnapshot.take()
    ballast = np.ones(32 * MiB // 8)
    grown = MemorySnapshot.take().growth_since(before)
    assert 30 * MiB <= grown < 64 * MiB, grown
    del ballast


# -- warm-up -------------------------------------------------------------------------------------


def test_warm_up_batches_are_one_zero_row_per_input() -> None:
    signature = Signature(
        inputs=(
            TensorSpec("x", "FP32", (-1, 3)),
            TensorSpec("k", "INT64", (-1,)),
            TensorSpec("fixed", "BOOL", (2, 2)),
            TensorSpec("half", "BF16", (-1, 1)),
        ),
        outputs=(),
    )
    batch = warmup_inputs(signature)
    assert batch is not None
    assert {name: (a.shape, a.dtype.name) for name, a in batch.items()} == {
        "x": ((1, 3), "float32"),
        "k": ((1,), "int64"),
        "fixed": ((2, 2), "bool"),
        "half": ((1, 1), "float32"),
    }
    assert not any(a.any() for a in batch.values())


@pytest.mark.parametrize(
    "inputs",
    [(), (TensorSpec("text", "BYTES", (-1,)),), (TensorSpec("x", "FP32", (-1, -1)),)],
    ids=["no inputs", "bytes", "variable trailing dimension"],
)
def test_versions_whose_inputs_cannot_be_synthesised_are_not_warmed_up(inputs: tuple[TensorSpec, ...]) -> None:
    assert warmup_inputs(Signature(inputs=inputs, outputs=())) is None


def custom_runtime(tmp_path: Path, source: str) -> CustomRuntime:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(source))
    runtime = CustomRuntime()
    runtime.load(folder, RuntimeConfig())
    return runtime


RAISES_ON_ZEROS = """
import ferryman
from ferryman import TensorSpec

class Picky(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 2))]

    def predict(self, inputs):
        if not inputs["x"].any():
            raise ValueError("all zeros")
        return {"y": inputs["x"]}
"""


def test_a_failing_warm_up_says_so_and_can_be_turned_off(tmp_path: Path) -> None:
    runtime = custom_runtime(tmp_path, RAISES_ON_ZEROS)
    with pytest.raises(ModelFailed, match="warm-up failed: ValueError: all zeros"):
        warm_up(runtime, runtime.signature(), {})
    assert warm_up(runtime, runtime.signature(), {"warmup": False}) is False
    check_warmup_config({"warmup": False})
    with pytest.raises(InvalidInput, match="warmup must be true or false"):
        check_warmup_config({"warmup": "no"})


# -- the manager under a budget, in process --------------------------------------------------------

BALLAST_MODEL = """
import numpy as np
import ferryman
from ferryman import TensorSpec

class Ballast(ferryman.Model):
    inputs = [TensorSpec("x", "FP64", (-1, 1))]

    def load(self):
        self.ballast = np.ones(int(self.options["ballast_mb"]) * 2**20 // 8)
        self.offset = float(self.options["offset"])

    def predict(self, inputs):
        return {"y": inputs["x"] + self.offset}
"""


@pytest.fixture
def budgeted(tmp_path: Path) -> Iterator[Components]:
    """Real components with a 64 MiB budget and three 24 MiB models a, b, c (nothing loaded yet)."""
    built = build_components(Settings(home=tmp_path / "home", memory_budget_mb=64, load_on_startup=False))
    folder = tmp_path / "ballast"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(BALLAST_MODEL))
    tar = tmp_path / "ballast.tar"
    with tar.open("wb") as out:
        pack_folder(folder, out)
    for offset, name in enumerate("abc", start=1):
        config: dict[str, Any] = {"ballast_mb": 24, "offset": offset}
        built.intake.register(built.artifacts.stage_path(tar), IntakeRequest(name=name, runtime_config=config))
    built.catalog.refresh()
    yield built
    built.inference_pool.shutdown()
    built.io_pool.shutdown()


def loaded_names(components: Components) -> list[str]:
    return sorted(v.model for v in components.manager.loaded_versions())


def test_versions_with_requests_in_flight_are_never_unloaded(budgeted: Components) -> None:
    manager = budgeted.manager

    async def scenario() -> None:
        a = await manager.load("a", 1)
        b = await manager.load("b", 1)
        assert a.memory_bytes >= 24 * MiB and a.load_seconds > 0
        a.enter()
        b.enter()
        with pytest.raises(Overloaded, match=r"model 'c' version 1 needs about .* memory budget") as refused:
            await manager.load("c", 1)
        assert refused.value.status == 503
        assert loaded_names(budgeted) == ["a", "b"]
        assert manager.state("c", 1)[0].value == "unloaded"  # refused for now, not failed
        b.leave()  # b is now idle, though a was used longer ago
        await manager.load("c", 1)
        assert loaded_names(budgeted) == ["a", "c"]
        state, reason = manager.state("b", 1)
        assert state.value == "unloaded" and reason is not None and "memory budget" in reason
        assert manager.model_ready("b", 1)  # it loads again on demand
        a.leave()
        assert manager.evictions == 1

    asyncio.run(scenario())


def test_a_request_for_an_unloaded_version_is_a_cold_start(budgeted: Components) -> None:
    manager = budgeted.manager

    async def scenario() -> None:
        for name in "abc":
            await manager.acquire(name, None)  # c's load unloads a, the least recently used
        assert loaded_names(budgeted) == ["b", "c"]
        assert manager.cold_starts == 3
        back = await manager.acquire("a", None)
        assert back.runtime.predict({"x": np.array([[1.0]])})["y"].tolist() == [[2.0]]
        assert loaded_names(budgeted) == ["a", "c"] and manager.cold_starts == 4
        stats = manager.load_stats("a", 1)
        assert stats is not None and stats[0] > 0 and stats[1] >= 24 * MiB

    asyncio.run(scenario())
