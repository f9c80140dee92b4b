"""Versions in production, served for real: splits, sticky keys, pinned versions, shadows, bandits,
experiment reports and progressive rollouts — each observed through real HTTP requests."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess, wait_for
from tests.integration.test_many_models import push_with_config
from tests.integration.test_v2_rest import write_model_folder

pytestmark = pytest.mark.timeout(240)

#: y = x + offset, so every answer shows which version computed it; ``fail`` versions raise on any
#: non-zero input (warm-up sends zeros, so they load fine and fail only under traffic).
OFFSET_MODEL = """
import numpy as np
import ferryman
from ferryman import TensorSpec

class Offset(ferryman.Model):
    inputs = [TensorSpec("x", "FP64", (-1, 2))]
    outputs = [TensorSpec("label", "INT64", (-1,)), TensorSpec("y", "FP64", (-1, 2))]

    def load(self):
        self.offset = float(self.options.get("offset", 0))
        self.fail = bool(self.options.get("fail", False))

    def predict(self, inputs):
        if self.fail and inputs["x"].any():
            raise RuntimeError("this version is broken")
        x = inputs["x"]
        return {"label": np.full(len(x), round(self.offset * 10), dtype=np.int64), "y": x + self.offset}
"""

ROW = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]}]}


def poll(condition: Any, what: str, deadline_s: float = 30.0) -> Any:
    """``wait_for`` that returns the condition's truthy value."""
    found: list[Any] = []

    def check() -> bool:
        value = condition()
        if value:
            found.append(value)
        return bool(value)

    wait_for(check, what, deadline_s)
    return found[-1]


@pytest.fixture(scope="module")
def offset_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one model folder per version number (the bytes differ, so each push is new)."""
    root = tmp_path_factory.mktemp("offset")
    for number in range(1, 6):
        write_model_folder(root, f"offset{number}", f"{OFFSET_MODEL}\n# build {number}\n")
    return root


def push_versions(server: ServerProcess, name: str, folders: Path, *configs: dict[str, Any]) -> str:
    """Push one version per runtime config (versions 1, 2, …), production → 1; returns the model's API URL."""
    for number, config in enumerate(configs, start=1):
        response = push_with_config(server.url, name, folders / f"offset{number}", config)
        assert response.status_code == 201, response.text
        assert response.json()["version"]["version"] == number
    url = f"{server.url}/api/v1/models/{name}"
    assert httpx.put(f"{url}/aliases/production", json={"version": 1}).status_code == 200
    return url


def set_policy(url: str, policy: dict[str, Any]) -> None:
    response = httpx.put(f"{url}/traffic", json=policy, timeout=60)
    assert response.status_code == 200, response.text


async def fire(
    url: str, count: int, headers: list[dict[str, str]] | None = None, connections: int = 32
) -> list[tuple[int, str | None, dict[str, Any]]]:
    """``count`` requests over ``connections`` connections: (status, served-version header, body) each."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def one(index: int) -> tuple[int, str | None, dict[str, Any]]:
            extra = headers[index] if headers else {}
            async with session.post(url, json=ROW, headers=extra) as response:
                return response.status, response.headers.get("x-ferryman-served-version"), await response.json()

        return await asyncio.gather(*(one(i) for i in range(count)))


def served_counts(results: list[tuple[int, str | None, dict[str, Any]]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for status, header, body in results:
        assert status == 200, body
        assert header == body["model_version"], (header, body)
        counts[header] += 1
    return counts


def test_weighted_split_lands_within_one_and_a_half_points(server_factory: ServerFactory, offset_folder: Path) -> None:
    server = server_factory()
    url = push_versions(server, "split", offset_folder, {"offset": 1}, {"offset": 2})
    set_policy(url, {"split": [{"target": "production", "weight": 90}, {"target": "2", "weight": 10}]})
    results = asyncio.run(fire(f"{server.url}/v2/models/split/infer", 10_000))
    counts = served_counts(results)
    assert set(counts) == {"1", "2"}
    share = counts["2"] / 10_000 * 100
    assert 8.5 <= share <= 11.5, counts
    # Each answer came from the version its header names (y = x + offset).
    for _, header, body in results[:200]:
        outputs = {output["name"]: output["data"] for output in body["outputs"]}
        assert outputs["y"] == [1.0 + int(header or 0), 2.0 + int(header or 0)]
    # Explicit versions bypass the policy; a pinned version header applies to unversioned requests.
    assert {
        served_counts(asyncio.run(fire(f"{server.url}/v2/models/split/versions/2/infer", 50))).most_common()[0][0]
    } == {"2"}
    pinned = asyncio.run(fire(f"{server.url}/v2/models/split/infer", 50, [{"x-ferryman-version": "2"}] * 50))
    assert served_counts(pinned) == Counter({"2": 50})
    ghost = httpx.post(f"{server.url}/v2/models/split/infer", json=ROW, headers={"x-ferryman-version": "9"})
    assert ghost.status_code == 404 and "version 9" in ghost.json()["error"]


def test_sticky_keys_keep_their_version_while_weights_stay(server_factory: ServerFactory, offset_folder: Path) -> None:
    server = server_factory()
    url = push_versions(server, "sticky", offset_folder, {"offset": 1}, {"offset": 2}, {"offset": 3})
    policy = {
        "split": [{"target": "1", "weight": 50}, {"target": "2", "weight": 30}, {"target": "3", "weight": 20}],
        "sticky": {"header": "x-user"},
    }
    set_policy(url, policy)
    keys = [{"x-user": f"user-{i}"} for i in range(600)]
    infer = f"{server.url}/v2/models/sticky/infer"
    first = [header for _, header, _ in asyncio.run(fire(infer, 600, keys))]
    second = [header for _, header, _ in asyncio.run(fire(infer, 600, keys))]
    assert first == second
    assert set(first) == {"1", "2", "3"}
    # Shifting weight from version 1 to version 3: no key moves into 1 (it shrank) or out of 3 (it grew).
    policy["split"] = [{"target": "1", "weight": 30}, {"target": "2", "weight": 30}, {"target": "3", "weight": 40}]
    set_policy(url, policy)
    third = [header for _, header, _ in asyncio.run(fire(infer, 600, keys))]
    moved = {(before, after) for before, after in zip(first, third, strict=True) if before != after}
    assert moved and all(after != "1" and before != "3" for before, after in moved), moved


def test_shadow_copies_are_compared_and_never_returned(server_factory: ServerFactory, offset_folder: Path) -> None:
    server = server_factory()
    url = push_versions(server, "mirror", offset_folder, {"offset": 1}, {"offset": 1.5})
    set_policy(url, {"split": [{"target": "production", "weight": 100}], "shadow": {"target": "2", "fraction": 1}})
    results = asyncio.run(fire(f"{server.url}/v2/models/mirror/infer", 300))
    assert served_counts(results) == Counter({"1": 300})

    def shadowed() -> dict[str, Any] | None:
        report = httpx.get(f"{url}/experiment", timeout=30).json()
        row = next(row for row in report["versions"] if row["version"] == 2)
        return report if row["shadow_comparisons"] >= 300 else None

    report = poll(shadowed, "300 shadow comparisons")
    rows = {row["version"]: row for row in report["versions"]}
    assert rows[2]["shadow_agreement"] == 0.0  # y differs by 0.5: numbers far from close
    assert rows[1]["requests"] >= 300 and rows[2]["requests"] == 0
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'ferryman_shadow_requests_total{model="mirror",outcome="ok",version="2"}' in metrics


def test_thompson_bandit_learns_from_feedback_by_request_id(server_factory: ServerFactory, offset_folder: Path) -> None:
    server = server_factory()
    url = push_versions(server, "bandit", offset_folder, {"offset": 1}, {"offset": 2})
    set_policy(url, {"bandit": {"algorithm": "thompson", "arms": ["1", "2"], "reward": "binary"}})
    infer = f"{server.url}/v2/models/bandit/infer"
    shares = []
    for _ in range(6):

        async def round_trip() -> Counter[str]:
            async with aiohttp.ClientSession() as session:
                counts: Counter[str] = Counter()
                items = []
                for _ in range(60):
                    async with session.post(infer, json=ROW) as response:
                        assert response.status == 200
                        version = response.headers["x-ferryman-served-version"]
                        counts[version] += 1
                        # Version 2 pleases users 90% of the time, version 1 20% (deterministic pattern).
                        good = (counts[version] % 10) < (9 if version == "2" else 2)
                        items.append({"request_id": response.headers["x-request-id"], "reward": 1 if good else 0})
                async with session.post(f"{url}/feedback", json={"items": items}) as response:
                    body = await response.json()
                    assert response.status == 202 and body["matched"] == 60, body
                return counts

        counts = asyncio.run(round_trip())
        shares.append(counts["2"] / 60)
        expected = sum(1 for _ in shares) * 60
        wait_for(lambda expected=expected: feedback_applied(server) >= expected, "rewards applied", 20)
    assert shares[-1] >= 0.8, shares
    report = httpx.get(f"{url}/experiment").json()
    assert {row["version"] for row in report["versions"]} == {1, 2}


def feedback_applied(server: ServerProcess) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("ferryman_bandit_rewards_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_experiment_report_turns_labels_into_accuracy_and_a_verdict(
    server_factory: ServerFactory, offset_folder: Path
) -> None:
    server = server_factory()
    url = push_versions(server, "exp", offset_folder, {"offset": 1}, {"offset": 2})
    set_policy(url, {"split": [{"target": "1", "weight": 50}, {"target": "2", "weight": 50}]})
    results = []
    with httpx.Client(timeout=30) as client:
        for _ in range(400):
            response = client.post(f"{server.url}/v2/models/exp/infer", json=ROW)
            results.append((response.headers["x-request-id"], response.json()["model_version"]))
    # The true label equals the predicted one for 95% of v2's answers, 60% of v1's.
    items = []
    seen: Counter[str] = Counter()
    for request_id, version in results:
        seen[version] += 1
        right = (seen[version] % 20) < (19 if version == "2" else 12)
        prediction = 10 * int(version)  # the label output: round(offset * 10)
        items.append({"request_id": request_id, "label": prediction if right else -1})
    response = httpx.post(f"{url}/feedback", json={"items": items})
    assert response.json()["matched"] == 400
    report = httpx.get(f"{url}/experiment").json()
    rows = {row["version"]: row for row in report["versions"]}
    assert rows[1]["labelled"] == seen["1"] and rows[2]["labelled"] == seen["2"]
    assert rows[2]["accuracy"] > rows[1]["accuracy"]
    verdict = report["comparisons"][0]["verdict"]
    assert verdict.startswith("v2 is better than v1 at 95% confidence"), verdict


def rollout_state(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/rollouts/current")
    assert response.status_code == 200, response.text
    return response.json()


async def steady_load(infer: str, stop: asyncio.Event, rate: float = 200.0) -> list[tuple[int, str | None]]:
    """Requests at about ``rate`` per second until ``stop``; (status, served version) of each."""
    results: list[tuple[int, str | None]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        tasks: set[asyncio.Task[None]] = set()

        async def one() -> None:
            async with session.post(infer, json=ROW) as response:
                await response.read()
                results.append((response.status, response.headers.get("x-ferryman-served-version")))

        started = time.monotonic()
        sent = 0
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate)
            while sent < due:
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.005)  # sync-ok: pacing the load generator, not waiting for a result
        await asyncio.gather(*tasks)
    return results


def test_rollout_completes_rolls_back_on_errors_and_drops_nothing(
    server_factory: ServerFactory, offset_folder: Path
) -> None:
    """Under steady load: a full rollout, a rollout that breaches its error guard, an alias swap and
    a rollback — every response a 200 from an allowed version."""
    server = server_factory()
    url = push_versions(
        server, "roll", offset_folder, {"offset": 1}, {"offset": 2}, {"offset": 3, "fail": True}, {"offset": 4}
    )
    infer = f"{server.url}/v2/models/roll/infer"

    async def scenario() -> tuple[list[tuple[int, str | None]], list[tuple[int, str | None]]]:
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(infer, stop))
        loop = asyncio.get_running_loop()

        def blocking() -> None:
            # 1. A full rollout 1 → 2 in two one-second steps.
            started = httpx.post(
                f"{url}/rollouts",
                json={"to": 2, "steps": [50, 100], "interval": "1s", "guards": {"max_error_rate": 0.01}},
            )
            assert started.status_code == 201, started.text
            done = poll(lambda: (s := rollout_state(url))["state"] != "running" and s, "rollout 1 → 2 to end")
            assert done["state"] == "completed", done
            assert httpx.get(f"{url}/aliases").json()["aliases"]["production"] == 2
            # 2. An alias swap and a rollback.
            assert httpx.put(f"{url}/aliases/production", json={"version": 4}).status_code == 200
            assert httpx.post(f"{url}/aliases/production/rollback").status_code == 200
            assert httpx.get(f"{url}/aliases").json()["aliases"]["production"] == 2

        await loop.run_in_executor(None, blocking)
        stop.set()
        clean = await load
        # 3. A rollout to a broken version: the guard rolls it back (the failing share is allowed to fail).
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(infer, stop))

        def broken() -> None:
            started = httpx.post(
                f"{url}/rollouts",
                json={"to": 3, "steps": [10, 50, 100], "interval": "30s", "guards": {"max_error_rate": 0.05}},
            )
            assert started.status_code == 201, started.text
            done = poll(lambda: (s := rollout_state(url))["state"] != "running" and s, "rollout to 3 to end", 60)
            assert done["state"] == "rolled_back", done
            assert "error rate" in done["reason"] and "step 1/3 (10%)" in done["reason"], done

        await loop.run_in_executor(None, broken)
        stop.set()
        return clean, await load

    clean, during_breach = asyncio.run(scenario())
    assert len(clean) > 200
    assert all(status == 200 for status, _ in clean), Counter(status for status, _ in clean)
    assert {version for _, version in clean} <= {"1", "2", "4"}
    assert {"1", "2"} <= {version for _, version in clean}
    # While the broken version had its 10%, only its requests failed, and it served nothing since.
    failures = [version for status, version in during_breach if status != 200]
    assert failures and all(version is None for version in failures)
    assert httpx.get(f"{url}/aliases").json()["aliases"]["production"] == 2
    after = asyncio.run(fire(infer, 200))
    assert served_counts(after) == Counter({"2": 200})


def test_rollout_to_a_version_that_cannot_load_changes_nothing(
    server_factory: ServerFactory, offset_folder: Path, tmp_path: Path
) -> None:
    server = server_factory()
    url = push_versions(server, "noload", offset_folder, {"offset": 1}, {"offset": 2})
    blob_dir = server.home / "artifacts" / "blobs"
    version = httpx.get(f"{url}/versions/2").json()
    blob = blob_dir / version["sha256"] / version["filename"]
    httpx.post(f"{url}/versions/2/unload")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    response = httpx.post(f"{url}/rollouts", json={"to": 2, "steps": [50, 100], "interval": "1s"}, timeout=60)
    assert response.status_code == 500 and "failed verification" in response.json()["error"], response.text
    assert httpx.get(f"{url}/rollouts/current").status_code == 404
    assert served_counts(asyncio.run(fire(f"{server.url}/v2/models/noload/infer", 100))) == Counter({"1": 100})


def loaded_versions(url: str) -> set[int]:
    versions = httpx.get(f"{url}/versions").json()["versions"]
    return {v["version"] for v in versions if v["state"] == "loaded"}


def test_version_policy_decides_what_stays_loaded(server_factory: ServerFactory, offset_folder: Path) -> None:
    server = server_factory()
    url = push_versions(server, "kept", offset_folder, *({"offset": n} for n in range(1, 6)))
    # Default: aliased (1) + the newest (5).
    assert poll(lambda: loaded_versions(url) == {1, 5}, "aliased + latest loaded")
    assert httpx.put(f"{url}/version-policy", json={"keep": "aliased_and_latest", "latest": 3}).status_code == 200
    assert poll(lambda: loaded_versions(url) == {1, 3, 4, 5}, "aliased + latest 3 loaded")
    assert httpx.put(f"{url}/version-policy", json={"keep": "explicit", "versions": [2]}).status_code == 200
    # 3, 4 and 5 leave at once; 1 stays as the serving default; 2 is loaded.
    assert poll(lambda: loaded_versions(url) == {1, 2}, "explicit policy applied")
    # A traffic policy's targets are kept too.
    set_policy(url, {"split": [{"target": "2", "weight": 50}, {"target": "4", "weight": 50}]})
    assert poll(lambda: loaded_versions(url) == {1, 2, 4}, "split targets loaded")


def test_rollout_guarded_by_agreement_rolls_back_when_the_new_version_decides_differently(
    server_factory: ServerFactory, offset_folder: Path
) -> None:
    server = server_factory()
    url = push_versions(server, "agree", offset_folder, {"offset": 1}, {"offset": 2})
    started = httpx.post(
        f"{url}/rollouts",
        json={"to": 2, "steps": [20, 100], "interval": "2s", "guards": {"min_agreement": 0.95}},
    )
    assert started.status_code == 201, started.text
    infer = f"{server.url}/v2/models/agree/infer"

    def ended() -> dict[str, Any] | None:
        asyncio.run(fire(infer, 100))
        state = rollout_state(url)
        return state if state["state"] != "running" else None

    done = poll(ended, "the agreement guard to decide", 60)
    assert done["state"] == "rolled_back" and "agreement" in done["reason"], done
    assert httpx.get(f"{url}/aliases").json()["aliases"]["production"] == 1


def test_a_restarted_server_continues_the_rollout(server_factory: ServerFactory, offset_folder: Path) -> None:
    server = server_factory()
    url = push_versions(server, "resume", offset_folder, {"offset": 1}, {"offset": 2})
    started = httpx.post(f"{url}/rollouts", json={"to": 2, "steps": [50, 100], "interval": "2s"})
    assert started.status_code == 201, started.text
    server.stop()
    again = server_factory(home=server.home)
    url = f"{again.url}/api/v1/models/resume"
    done = poll(lambda: (s := rollout_state(url))["state"] != "running" and s, "the rollout to finish", 30)
    assert done["state"] == "completed", done
    assert httpx.get(f"{url}/aliases").json()["aliases"]["production"] == 2
    history = httpx.get(f"{url}/aliases/production/history").json()["history"]
    assert history[0]["to_version"] == 2 and history[0]["changed_by"] == "rollout"


def test_cli_sends_feedback_from_csv_and_prints_the_report(
    server_factory: ServerFactory, offset_folder: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from ferryman.cli.main import app

    server = server_factory()
    url = push_versions(server, "cli", offset_folder, {"offset": 1}, {"offset": 2})
    set_policy(url, {"split": [{"target": "1", "weight": 50}, {"target": "2", "weight": 50}]})
    lines = ["request_id,label"]
    with httpx.Client(timeout=30) as client:
        for index in range(60):
            response = client.post(f"{server.url}/v2/models/cli/infer", json=ROW)
            label = 10 * int(response.headers["x-ferryman-served-version"]) if index % 3 else 0
            lines.append(f"{response.headers['x-request-id']},{label}")
    lines.append("never-served,10")
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    sent = runner.invoke(app, ["feedback", "cli", "--file", str(csv_file), "--url", server.url])
    assert sent.exit_code == 0, sent.output
    assert "Recorded 61 feedback items" in sent.output and "1 name request ids" in sent.output
    shown = runner.invoke(app, ["experiment", "report", "cli", "--url", server.url], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "v2 vs v1:" in shown.output and "acc" in shown.output
    bad = csv_file.with_name("bad.csv")
    bad.write_text("request_id,score\nx,1\n")
    refused = runner.invoke(app, ["feedback", "cli", "--file", str(bad), "--url", server.url], env={"COLUMNS": "200"})
    assert refused.exit_code == 2 and "label or reward" in refused.output
