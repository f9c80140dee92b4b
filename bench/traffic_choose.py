"""Nanoseconds per ``CompiledTraffic.choose()``: unkeyed split, sticky (keyed) split, and bandits.

Usage: python bench/traffic_choose.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from ferryman.serving.traffic import CompiledTraffic, compile_policy, parse_traffic_policy

ALIASES = {"production": 4, "candidate": 5}


def resolve(target: str) -> int:
    return ALIASES[target] if target in ALIASES else int(target)


def traffic(raw: dict[str, object]) -> CompiledTraffic:
    return compile_policy(parse_traffic_policy(raw), resolve, rng=random.Random(1), namespace="bench")


def ns_per_call(call: Callable[[], object], calls: int) -> float:
    for _ in range(1_000):
        call()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    calls = parser.parse_args().calls
    split = {"split": [{"target": "production", "weight": 90}, {"target": "candidate", "weight": 10}]}
    three = {"split": [{"target": "3", "weight": 80}, {"target": "4", "weight": 10}, {"target": "5", "weight": 10}]}
    unkeyed = traffic(split)
    keyed = traffic({**split, "sticky": {}})
    keyed3 = traffic({**three, "sticky": {}})
    key = b"user-1234567"
    cases: list[tuple[str, Callable[[], object]]] = [
        ("empty call (loop overhead)", lambda: None),
        ("split 90/10, unkeyed", unkeyed.choose),
        ("split 90/10, sticky key", lambda: keyed.choose(key)),
        ("split 80/10/10, sticky key", lambda: keyed3.choose(key)),
    ]
    for algorithm, reward in [("epsilon_greedy", "binary"), ("thompson", "binary"), ("thompson", "continuous")]:
        bandit = traffic({"bandit": {"algorithm": algorithm, "arms": ["4", "5"], "reward": reward}})
        env = random.Random(2)
        for _ in range(200):
            for arm in (4, 5):
                bandit.record_reward(arm, float(env.random() < 0.5) if reward == "binary" else env.gauss(1, 1))
        cases.append((f"bandit {algorithm} ({reward})", bandit.choose))
    reward_sink = traffic({"bandit": {"algorithm": "thompson", "arms": ["4", "5"]}})
    cases.append(("record_reward (bandit)", lambda: reward_sink.record_reward(5, 1.0)))
    print(f"{'case':34} ns/call")
    for name, call in cases:
        print(f"{name:34} {ns_per_call(call, calls):7.0f}")


if __name__ == "__main__":
    main()
