"""The response cache: keys that change exactly when the model's view of the request does, LRU limits,
counters, the runtime-config block, and the handler serving hits (in process, real components)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferryman.app import Components, build_components
from ferryman.archive import pack_folder
from ferryman.config import Settings
from ferryman.errors import InvalidInput
from ferryman.registry.intake import IntakeRequest
from ferryman.serving.cache import CacheLimits, ResponseCache, cache_for, check_cache_config
from ferryman.tensors import InferenceRequest

KEY = ResponseCache.key


def arrays(**named: Any) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in named.items()}


def test_equal_inputs_share_a_key_and_any_difference_changes_it() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    base = KEY("m", 1, {"x": x}, None)
    assert KEY("m", 1, {"x": x.copy()}, None) == base
    assert KEY("m", 1, {"x": np.asfortranarray(x)}, None) == base  # layout is not content
    variants = [
        KEY("n", 1, {"x": x}, None),
        KEY("m", 2, {"x": x}, None),
        KEY("m", 1, {"y": x}, None),
        KEY("m", 1, {"x": x.astype(np.float64)}, None),
        KEY("m", 1, {"x": x.reshape(3, 2)}, None),
        KEY("m", 1, {"x": x + 1}, None),
        KEY("m", 1, {"x": x}, ["y"]),
        KEY("m", 1, {"x": x}, ["y", "z"]),
        KEY("m", 1, {"x": x}, ["z", "y"]),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_bytes_tensors_are_keyed_element_by_element() -> None:
    def key(*items: Any) -> bytes:
        return KEY("m", 1, {"text": np.array(list(items), dtype=object)}, None)

    assert key(b"ab", b"c") == key(b"ab", b"c")
    assert key(b"ab", b"c") != key(b"a", b"bc")
    assert key(b"1") != key("1") != key(1)


def test_hits_misses_and_stored_copies() -> None:
    cache = ResponseCache(CacheLimits(max_entries=4))
    key = KEY("m", 1, arrays(x=[1.0]), None)
    assert cache.get(key) is None
    batch = np.array([[1.0, 2.0], [3.0, 4.0]])
    cache.put(key, {"y": batch[:1]}, {"y": "FP64"})
    batch[0, 0] = 99.0  # the model's buffer changing later must not change the stored answer
    hit = cache.get(key)
    assert hit is not None
    np.testing.assert_array_equal(hit.outputs["y"], [[1.0, 2.0]])
    assert hit.datatypes == {"y": "FP64"}
    assert not hit.outputs["y"].flags.writeable
    assert (cache.hits, cache.misses, cache.evictions, cache.entries) == (1, 1, 0, 1)


def test_least_recently_used_entries_go_first() -> None:
    cache = ResponseCache(CacheLimits(max_entries=2))
    a, b, c = (KEY("m", 1, arrays(x=[float(i)]), None) for i in range(3))
    for key in (a, b):
        cache.put(key, arrays(y=[1.0]), {"y": "FP64"})
    assert cache.get(a) is not None  # a is now the most recently used
    cache.put(c, arrays(y=[1.0]), {"y": "FP64"})
    assert cache.get(b) is None
    assert cache.get(a) is not None and cache.get(c) is not None
    assert cache.evictions == 1


def test_the_byte_limit_bounds_the_cache_and_skips_oversized_entries() -> None:
    cache = ResponseCache(CacheLimits(max_entries=100, max_bytes=3 * 800))
    for i in range(5):
        cache.put(KEY("m", 1, arrays(x=[float(i)]), None), {"y": np.zeros(100)}, {"y": "FP64"})
    assert cache.entries == 3 and cache.nbytes == 2400 and cache.evictions == 2
    cache.put(b"big", {"y": np.zeros(1000)}, {"y": "FP64"})
    assert cache.get(b"big") is None and cache.entries == 3


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, None),
        ({"cache": False}, None),
        ({"cache": True}, CacheLimits(7, 2**20)),
        ({"cache": {"max_entries": 3}}, CacheLimits(3, 2**20)),
        ({"cache": {"max_mb": 0.5}}, CacheLimits(7, 2**19)),
        ({"cache": {"enabled": False, "max_entries": 3}}, None),
    ],
)
def test_cache_is_off_unless_the_runtime_config_asks(config: dict[str, Any], expected: CacheLimits | None) -> None:
    cache = cache_for(config, CacheLimits(7, 2**20))
    assert (cache.limits if cache is not None else None) == expected
    check_cache_config(config)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ([1], "must be true, false or an object"),
        ({"size": 3}, "unknown keys size"),
        ({"max_entries": 0}, "cache.max_entries must be a positive integer"),
        ({"max_entries": True}, "cache.max_entries must be a positive integer"),
        ({"max_mb": -1}, "cache.max_mb must be a positive number"),
        ({"enabled": "yes"}, "cache.enabled must be true or false"),
    ],
)
def test_a_malformed_cache_block_is_refused_naming_the_field(block: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_cache_config({"cache": block})


COUNTER_MODEL = """
import numpy as np
import ferryman
from ferryman import TensorSpec

class Counter(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 2))]
    outputs = [TensorSpec("y", "FP32", (-1, 2)), TensorSpec("calls", "INT64", (-1,))]
    calls = 0

    def predict(self, inputs):
        self.calls += 1
        return {"y": inputs["x"] * 2, "calls": np.full(len(inputs["x"]), self.calls, dtype=np.int64)}
"""


@pytest.fixture
def components(tmp_path: Path) -> Iterator[Components]:
    """Real components over a temporary registry holding 'cached' (cache on) and 'plain' (cache off)."""
    built = build_components(Settings(home=tmp_path / "home", load_on_startup=False))
    folder = tmp_path / "counter"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(COUNTER_MODEL))
    tar = tmp_path / "counter.tar"
    with tar.open("wb") as out:
        pack_folder(folder, out)
    for name, config in (("cached", {"cache": True, "warmup": False}), ("plain", {"warmup": False})):
        built.intake.register(built.artifacts.stage_path(tar), IntakeRequest(name=name, runtime_config=config))
    built.catalog.refresh()
    yield built
    built.inference_pool.shutdown()
    built.io_pool.shutdown()


def request(model: str, rows: list[list[float]], outputs: list[str] | None = None) -> InferenceRequest:
    return InferenceRequest(model, {"x": np.array(rows, dtype=np.float32)}, outputs=outputs)


def test_the_handler_answers_repeats_from_the_cache(components: Components) -> None:
    async def scenario() -> None:
        handler, manager = components.handler, components.manager
        first = await handler.infer(request("cached", [[1.0, 2.0]]))
        again = await handler.infer(request("cached", [[1.0, 2.0]]))
        assert again.outputs.keys() == first.outputs.keys()
        for name in first.outputs:
            np.testing.assert_array_equal(again.outputs[name], first.outputs[name])
        assert again.output_datatypes == first.output_datatypes == {"y": "FP32", "calls": "INT64"}
        assert again.outputs["calls"].tolist() == [1]  # the model did not run again
        other = await handler.infer(request("cached", [[2.0, 2.0]]))
        assert other.outputs["calls"].tolist() == [2]
        only_y = await handler.infer(request("cached", [[1.0, 2.0]], outputs=["y"]))
        assert list(only_y.outputs) == ["y"]  # asking for other outputs is another entry
        cache = (await manager.acquire("cached", None)).cache
        assert cache is not None
        assert (cache.hits, cache.misses, cache.entries) == (1, 3, 3)

        plain = [(await handler.infer(request("plain", [[1.0, 2.0]]))).outputs["calls"].tolist() for _ in range(2)]
        assert plain == [[1], [2]]
        assert (await manager.acquire("plain", None)).cache is None

    asyncio.run(scenario())
