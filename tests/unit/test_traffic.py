"""Traffic policies: validation naming the field, weighted and sticky splits, shadows, bandits that
learn the better version, and shadow/primary output comparison. Every random choice is seeded."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pytest

from ferryman.errors import InvalidInput, NotFound
from ferryman.registry.traffic_spec import (
    BanditSpec,
    ShadowSpec,
    SplitTarget,
    StickySpec,
    TrafficPolicy,
    parse_traffic_policy,
)
from ferryman.serving.agreement import compare_outputs
from ferryman.serving.bandits import Bandit, EpsilonGreedy, ThompsonSampling
from ferryman.serving.traffic import CompiledTraffic, compile_policy

ALIASES = {"production": 4, "candidate": 5, "staging": 5, "old": 3}
KEYS = [f"user-{i}".encode() for i in range(10_000)]


def resolve(target: str) -> int:
    if target.isdigit():
        return int(target)
    if target in ALIASES:
        return ALIASES[target]
    raise NotFound(f"no version or alias '{target}'")


def split_policy(*weights: tuple[str, float], sticky: bool = False) -> dict[str, Any]:
    raw: dict[str, Any] = {"split": [{"target": target, "weight": weight} for target, weight in weights]}
    if sticky:
        raw["sticky"] = {"header": "X-Ferryman-Route-Key"}
    return raw


def compiled(raw: dict[str, Any], seed: int = 7, namespace: str = "iris") -> CompiledTraffic:
    return compile_policy(parse_traffic_policy(raw), resolve, rng=random.Random(seed), namespace=namespace)


def assignment(traffic: CompiledTraffic) -> list[int | None]:
    return [traffic.choose(key) for key in KEYS]


# --- parsing --------------------------------------------------------------------------------------


def test_a_full_policy_parses_into_frozen_dataclasses_and_names_its_targets() -> None:
    policy = parse_traffic_policy(
        {
            "split": [{"target": "production", "weight": 90}, {"target": 5, "weight": 10.0}],
            "sticky": {"header": "X-User", "input": "user_id"},
            "shadow": {"target": "06", "fraction": 0.25},
        }
    )
    assert policy == TrafficPolicy(
        split=(SplitTarget("production", 90.0), SplitTarget("5", 10.0)),
        sticky=StickySpec(header="x-user", input="user_id"),
        shadow=ShadowSpec("6", 0.25),
    )
    assert policy.targets() == {"production", "5", "6"}
    assert parse_traffic_policy(policy.to_dict()) == policy
    with pytest.raises(AttributeError):
        policy.split = None  # type: ignore[misc]


def test_defaults_of_sticky_shadow_and_bandit() -> None:
    policy = parse_traffic_policy(
        {"bandit": {"algorithm": "epsilon_greedy", "arms": ["4", 5]}, "shadow": {"target": "candidate"}}
    )
    assert policy.bandit == BanditSpec(algorithm="epsilon_greedy", arms=("4", "5"), reward="binary", epsilon=0.1)
    assert policy.shadow == ShadowSpec("candidate", 1.0)
    assert policy.targets() == {"4", "5", "candidate"}
    assert parse_traffic_policy(policy.to_dict()) == policy
    sticky = parse_traffic_policy({"split": [{"target": "4", "weight": 100}], "sticky": {}})
    assert sticky.sticky == StickySpec(header="x-ferryman-route-key", input=None)


def test_weights_summing_to_100_within_the_tolerance_are_accepted() -> None:
    policy = parse_traffic_policy(split_policy(("a", 100 / 3), ("b", 100 / 3), ("c", 100 / 3 + 5e-7)))
    assert policy.split is not None and len(policy.split) == 3


INVALID: list[tuple[object, str]] = [
    ([], "traffic must be an object"),
    ({}, "traffic needs 'split', 'bandit' or 'shadow'"),
    ({"split": [{"target": "a", "weight": 100}], "color": 1}, "traffic has unknown key 'color'"),
    ({"shadow": {"target": "a"}, "x": 1, "y": 2}, "traffic has unknown keys 'x', 'y'"),
    (
        {"split": [{"target": "a", "weight": 100}], "bandit": {"algorithm": "thompson", "arms": ["a", "b"]}},
        "traffic.split and traffic.bandit cannot be used together",
    ),
    ({"shadow": {"target": "a"}, "sticky": {}}, "traffic.sticky needs traffic.split"),
    ({"split": []}, "traffic.split must be a non-empty list"),
    ({"split": {"a": 100}}, "traffic.split must be a non-empty list"),
    ({"split": ["a"]}, "traffic.split[0] must be an object"),
    ({"split": [{"weight": 100}]}, "traffic.split[0].target is required"),
    ({"split": [{"target": "a", "weight": 100, "w": 1}]}, "traffic.split[0] has unknown key 'w'"),
    ({"split": [{"target": "", "weight": 100}]}, "traffic.split[0].target must be a version number or an alias name"),
    ({"split": [{"target": 0, "weight": 100}]}, "traffic.split[0].target must be a version number or an alias name"),
    ({"split": [{"target": True, "weight": 100}]}, "traffic.split[0].target must be a version number or an alias"),
    ({"split": [{"target": 1.5, "weight": 100}]}, "traffic.split[0].target must be a version number or an alias"),
    ({"split": [{"target": "a", "weight": 90}, {"target": "b"}]}, "traffic.split[1].weight must be a number between"),
    (
        {"split": [{"target": "a", "weight": 110}, {"target": "b", "weight": -10}]},
        "traffic.split[0].weight must be a number between 0 and 100",
    ),
    (
        {"split": [{"target": "a", "weight": 90}, {"target": "b", "weight": "10"}]},
        "traffic.split[1].weight must be a number between 0 and 100",
    ),
    (
        {"split": [{"target": "a", "weight": 90}, {"target": "b", "weight": float("nan")}]},
        "traffic.split[1].weight must be a number between 0 and 100",
    ),
    ({"split": [{"target": "a", "weight": True}]}, "traffic.split[0].weight must be a number between 0 and 100"),
    (
        {"split": [{"target": "a", "weight": 90}, {"target": "b", "weight": 5}]},
        "traffic.split weights must sum to 100 (they sum to 95)",
    ),
    (
        {"split": [{"target": "5", "weight": 50}, {"target": 5, "weight": 50}]},
        "traffic.split[1].target '5' appears twice",
    ),
    ({"split": [{"target": "a", "weight": 100}], "sticky": "x"}, "traffic.sticky must be an object"),
    ({"split": [{"target": "a", "weight": 100}], "sticky": {"cookie": "x"}}, "traffic.sticky has unknown key 'cookie'"),
    ({"split": [{"target": "a", "weight": 100}], "sticky": {"header": "a b"}}, "traffic.sticky.header must be an HTTP"),
    ({"split": [{"target": "a", "weight": 100}], "sticky": {"input": ""}}, "traffic.sticky.input must be the name"),
    ({"shadow": {"fraction": 0.5}}, "traffic.shadow.target is required"),
    ({"shadow": {"target": "a", "fraction": 0}}, "traffic.shadow.fraction must be a number greater than 0"),
    ({"shadow": {"target": "a", "fraction": 1.5}}, "traffic.shadow.fraction must be a number greater than 0"),
    ({"shadow": {"target": "a", "percent": 5}}, "traffic.shadow has unknown key 'percent'"),
    ({"bandit": {"arms": ["a", "b"]}}, "traffic.bandit.algorithm must be 'thompson' or 'epsilon_greedy'"),
    ({"bandit": {"algorithm": "ucb", "arms": ["a", "b"]}}, "traffic.bandit.algorithm must be"),
    ({"bandit": {"algorithm": "thompson", "arms": ["a"]}}, "traffic.bandit.arms must be a list of at least two"),
    ({"bandit": {"algorithm": "thompson", "arms": "ab"}}, "traffic.bandit.arms must be a list of at least two"),
    ({"bandit": {"algorithm": "thompson", "arms": ["a", None]}}, "traffic.bandit.arms[1] must be a version number"),
    ({"bandit": {"algorithm": "thompson", "arms": ["a", "b", "a"]}}, "traffic.bandit.arms[2] 'a' appears twice"),
    ({"bandit": {"algorithm": "thompson", "arms": ["a", "b"], "reward": "real"}}, "traffic.bandit.reward must be"),
    (
        {"bandit": {"algorithm": "thompson", "arms": ["a", "b"], "epsilon": 0.1}},
        "traffic.bandit.epsilon applies only to algorithm 'epsilon_greedy'",
    ),
    (
        {"bandit": {"algorithm": "epsilon_greedy", "arms": ["a", "b"], "epsilon": 1.1}},
        "traffic.bandit.epsilon must be a number between 0 and 1",
    ),
    ({"bandit": {"algorithm": "thompson", "arms": ["a", "b"], "seed": 1}}, "traffic.bandit has unknown key 'seed'"),
]


@pytest.mark.parametrize(("raw", "message"), INVALID, ids=[message for _, message in INVALID])
def test_every_invalid_policy_is_refused_naming_the_field(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_traffic_policy(raw)
    assert message in str(caught.value)
    assert caught.value.status == 400


def test_compiling_a_policy_naming_an_unknown_target_raises_not_found() -> None:
    policy = parse_traffic_policy(split_policy(("production", 50), ("nightly", 50)))
    with pytest.raises(NotFound, match="nightly"):
        compile_policy(policy, resolve)


# --- weighted and sticky splits --------------------------------------------------------------------


def test_an_unkeyed_90_10_split_lands_within_one_and_a_half_points() -> None:
    traffic = compiled(split_policy(("production", 90), ("candidate", 10)))
    counts = Counter(traffic.choose() for _ in range(10_000))
    assert set(counts) == {4, 5}
    assert abs(counts[5] / 100 - 10) <= 1.5
    assert traffic.versions == {4, 5}


def test_a_key_always_reaches_the_same_version_and_keys_follow_the_weights() -> None:
    raw = split_policy(("production", 90), ("candidate", 10), sticky=True)
    first = assignment(compiled(raw, seed=1))
    assert assignment(compiled(raw, seed=1)) == first
    assert assignment(compiled(raw, seed=99)) == first  # the random generator plays no part
    counts = Counter(first)
    assert abs(counts[5] / 100 - 10) <= 1.5
    assert abs(counts[4] / 100 - 90) <= 1.5


def test_without_a_sticky_block_a_route_key_is_ignored() -> None:
    traffic = compiled(split_policy(("production", 50), ("candidate", 50)))
    assert len({traffic.choose(b"same-key") for _ in range(200)}) == 2


def test_shifting_weight_moves_only_keys_into_the_version_that_grew() -> None:
    before = assignment(compiled(split_policy(("production", 90), ("candidate", 10), sticky=True)))
    after = assignment(compiled(split_policy(("production", 80), ("candidate", 20), sticky=True)))
    moves = Counter((a, b) for a, b in zip(before, after, strict=True) if a != b)
    assert set(moves) == {(4, 5)}
    assert abs(moves[(4, 5)] / 100 - 10) <= 1.5  # only the share that had to move


def test_growing_one_of_three_versions_takes_keys_from_the_others_only() -> None:
    before = assignment(compiled(split_policy(("3", 50), ("4", 30), ("5", 20), sticky=True)))
    after = assignment(compiled(split_policy(("3", 40), ("4", 24), ("5", 36), sticky=True)))
    moves = Counter((a, b) for a, b in zip(before, after, strict=True) if a != b)
    assert {b for _, b in moves} == {5}
    assert abs(moves.total() / 100 - 16) <= 1.5
    # a key moves from A to B only when B's weight grew relative to A's: here 3 gains on 4, 5 on both
    uneven = assignment(compiled(split_policy(("3", 45), ("4", 25), ("5", 30), sticky=True)))
    assert {(a, b) for a, b in zip(before, uneven, strict=True) if a != b} == {(3, 5), (4, 5), (4, 3)}
    unchanged = assignment(compiled(split_policy(("3", 50), ("4", 30), ("5", 20), sticky=True)))
    assert unchanged == before


def test_assignments_are_independent_per_model_namespace() -> None:
    raw = split_policy(("production", 50), ("candidate", 50), sticky=True)
    iris = assignment(compiled(raw, namespace="iris"))
    wine = assignment(compiled(raw, namespace="wine"))
    same = sum(a == b for a, b in zip(iris, wine, strict=True))
    assert 4_500 < same < 5_500


def test_aliases_on_one_version_merge_and_zero_weights_are_never_chosen() -> None:
    traffic = compiled(split_policy(("candidate", 30), ("staging", 70), ("production", 0), sticky=True))
    assert traffic.versions == {5}
    assert {traffic.choose(), traffic.choose(b"k")} == {5}
    mixed = compiled(split_policy(("production", 0), ("old", 50), ("candidate", 50)))
    assert {mixed.choose() for _ in range(1_000)} == {3, 5}


# --- shadow ------------------------------------------------------------------------------------------


def test_a_shadow_only_policy_leaves_the_choice_to_the_serving_default_and_samples_its_fraction() -> None:
    traffic = compiled({"shadow": {"target": "candidate", "fraction": 0.25}})
    assert traffic.choose() is None and traffic.choose(b"key") is None
    assert traffic.shadow_target() == 5
    shadowed = sum(traffic.should_shadow() for _ in range(10_000))
    assert abs(shadowed / 100 - 25) <= 1.5
    always = compiled({"split": [{"target": "4", "weight": 100}], "shadow": {"target": "5"}})
    assert all(always.should_shadow() for _ in range(1_000))
    no_shadow = compiled(split_policy(("4", 100)))
    assert no_shadow.shadow_target() is None and not no_shadow.should_shadow()


# --- bandits -----------------------------------------------------------------------------------------


def bandit_policy(algorithm: str, reward: str = "binary") -> dict[str, Any]:
    return {"bandit": {"algorithm": algorithm, "arms": ["production", "candidate"], "reward": reward}}


def run_environment(traffic: CompiledTraffic, draw: dict[int, Any], rounds: int = 2_000) -> list[int]:
    pulls = []
    for _ in range(rounds):
        version = traffic.choose()
        assert version is not None
        assert traffic.record_reward(version, draw[version]())
        pulls.append(version)
    return pulls


@pytest.mark.parametrize("algorithm", ["thompson", "epsilon_greedy"])
def test_bandits_converge_to_the_better_arm_with_binary_rewards(algorithm: str) -> None:
    env = random.Random(11)
    draw = {4: lambda: float(env.random() < 0.2), 5: lambda: float(env.random() < 0.6)}
    pulls = run_environment(compiled(bandit_policy(algorithm), seed=3), draw)
    recent = pulls[-500:]
    assert recent.count(5) / len(recent) >= 0.8


@pytest.mark.parametrize("algorithm", ["thompson", "epsilon_greedy"])
def test_bandits_converge_to_the_better_arm_with_continuous_rewards(algorithm: str) -> None:
    env = random.Random(12)
    draw = {4: lambda: env.gauss(1.0, 1.0), 5: lambda: env.gauss(1.5, 1.0)}
    pulls = run_environment(compiled(bandit_policy(algorithm, "continuous"), seed=4), draw)
    recent = pulls[-500:]
    assert recent.count(5) / len(recent) >= 0.8


def test_thompson_counts_fractional_binary_rewards_proportionally() -> None:
    traffic = compiled(bandit_policy("thompson"))
    for _ in range(400):
        traffic.record_reward(4, 0.25)
        traffic.record_reward(5, 0.75)
    assert sum(traffic.choose() == 5 for _ in range(1_000)) >= 990


def test_untried_arms_are_pulled_first() -> None:
    traffic = compiled({"bandit": {"algorithm": "epsilon_greedy", "arms": ["3", "4", "5"], "epsilon": 0.0}})
    assert [traffic.choose(), traffic.choose(), traffic.choose()] == [3, 4, 5]
    traffic.record_reward(4, 1.0)
    assert traffic.choose() in {3, 5}


def test_rewards_are_checked_and_only_arms_learn() -> None:
    traffic = compiled(bandit_policy("thompson"))
    assert traffic.record_reward(9, 1.0) is False
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        traffic.record_reward(4, 2.0)
    with pytest.raises(InvalidInput, match="finite number"):
        traffic.record_reward(4, float("nan"))
    assert traffic.bandit is not None
    with pytest.raises(NotFound, match="version 9"):
        traffic.bandit.record_reward(9, 1.0)
    assert compiled(split_policy(("4", 100))).record_reward(4, 1.0) is False
    continuous = compiled(bandit_policy("epsilon_greedy", "continuous"))
    assert continuous.record_reward(4, 12.5)


@pytest.mark.parametrize("algorithm", ["thompson", "epsilon_greedy"])
@pytest.mark.parametrize("reward", ["binary", "continuous"])
def test_bandit_state_round_trips_and_the_restored_bandit_chooses_alike(algorithm: str, reward: str) -> None:
    env = random.Random(5)
    original = compiled(bandit_policy(algorithm, reward), seed=8)
    run_environment(original, {4: lambda: float(env.random() < 0.3), 5: lambda: float(env.random() < 0.5)}, 300)
    assert original.bandit is not None
    state = original.bandit.state()
    restored = compiled(bandit_policy(algorithm, reward), seed=8)
    assert restored.bandit is not None
    restored.bandit.restore(state)
    assert restored.bandit.state() == state
    twin = compiled(bandit_policy(algorithm, reward), seed=21)
    assert twin.bandit is not None
    twin.bandit.restore(state)
    again = compiled(bandit_policy(algorithm, reward), seed=21)
    assert again.bandit is not None
    again.bandit.restore(state)
    assert [twin.choose() for _ in range(200)] == [again.choose() for _ in range(200)]


def test_restore_keeps_arms_in_common_and_checks_entries() -> None:
    bandit = ThompsonSampling([4, 5], reward="binary", rng=random.Random(1))
    bandit.restore({"arms": {"4": {"pulls": 10, "count": 10, "mean": 0.5, "m2": 2.5}, "7": {"count": 3}}})
    arms = bandit.state()["arms"]
    assert arms == {
        "4": {"pulls": 10, "count": 10, "mean": 0.5, "m2": 2.5},
        "5": {"pulls": 0, "count": 0, "mean": 0.0, "m2": 0.0},
    }
    greedy = EpsilonGreedy([4, 5], reward="binary", epsilon=0.1, rng=random.Random(1))
    greedy.restore(bandit.state())  # statistics carry over between algorithms
    assert greedy.state()["arms"] == arms
    bad: list[tuple[Any, str]] = [
        ({}, "bandit state.arms must be an object"),
        ({"arms": {"4": 1}}, "bandit state.arms['4'] must be an object"),
        ({"arms": {"4": {"count": -1}}}, "bandit state.arms['4'].count must be a non-negative integer"),
        ({"arms": {"4": {"pulls": 1.5}}}, "bandit state.arms['4'].pulls must be a non-negative integer"),
        ({"arms": {"4": {"mean": "x"}}}, "bandit state.arms['4'].mean must be a finite number"),
        ({"arms": {"4": {"m2": -1.0}}}, "bandit state.arms['4'].m2 must not be negative"),
    ]
    for state, message in bad:
        with pytest.raises(InvalidInput) as caught:
            bandit.restore(state)
        assert message in str(caught.value)


def test_a_bandit_needs_distinct_arms_and_merges_aliases_on_one_version() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Bandit([4, 4], reward="binary", rng=random.Random(1))
    traffic = compiled({"bandit": {"algorithm": "thompson", "arms": ["candidate", "staging", "production"]}})
    assert traffic.bandit is not None and traffic.bandit.arms == (5, 4)
    assert traffic.versions == {4, 5}


# --- output comparison ---------------------------------------------------------------------------------


def test_equal_outputs_agree() -> None:
    primary = {"label": np.array([0, 1, 2]), "proba": np.array([[0.2, 0.8]], dtype=np.float32)}
    result = compare_outputs(primary, {k: v.copy() for k, v in primary.items()})
    assert result.agree
    label, proba = result.outputs
    assert (label.name, label.equal_rate) == ("label", 1.0)
    assert proba.max_abs_diff == 0.0 and proba.mean_rel_diff == 0.0


def test_classes_compare_by_equality_rate() -> None:
    result = compare_outputs({"label": np.array([0, 1, 2, 1])}, {"label": np.array([0, 1, 1, 1], dtype=np.int32)})
    assert not result.agree
    assert result.outputs[0].equal_rate == 0.75
    strings = compare_outputs(
        {"y": np.array([b"cat", b"dog"], dtype=object)}, {"y": np.array([b"cat", b"cow"], dtype=object)}
    )
    assert strings.outputs[0].equal_rate == 0.5
    mixed = compare_outputs({"y": np.array([b"cat", b"dog"], dtype=object)}, {"y": np.array([b"cat", b"dog"])})
    assert mixed.agree
    flags = compare_outputs({"y": np.array([True, False])}, {"y": np.array([True, False])})
    assert flags.agree


def test_floats_agree_within_tolerance_and_report_their_differences() -> None:
    a = np.array([1.0, 2.0, 0.0, 4.0])
    close = compare_outputs({"y": a}, {"y": a * (1 + 5e-4)})
    assert close.agree and close.outputs[0].max_abs_diff == pytest.approx(2e-3)
    far = compare_outputs({"y": a}, {"y": np.array([1.1, 2.0, 0.0, 3.0])})
    out = far.outputs[0]
    assert not far.agree
    assert out.mean_abs_diff == pytest.approx(0.275)
    assert out.max_abs_diff == pytest.approx(1.0)
    assert out.mean_rel_diff == pytest.approx((0.1 / 1 + 0 + 0 + 1 / 4) / 4)
    ints_vs_floats = compare_outputs({"y": np.array([1, 2])}, {"y": np.array([1.0, 2.0000001])})
    assert ints_vs_floats.agree and ints_vs_floats.outputs[0].max_abs_diff is not None


def test_nan_matches_nan_and_differences_skip_non_finite_elements() -> None:
    a = np.array([np.nan, 1.0, np.inf])
    same = compare_outputs({"y": a}, {"y": a.copy()})
    assert same.agree and same.outputs[0].max_abs_diff == 0.0
    one_nan = compare_outputs({"y": a}, {"y": np.array([0.0, 1.5, np.inf])})
    assert not one_nan.agree and one_nan.outputs[0].max_abs_diff == pytest.approx(0.5)


def test_shape_datatype_and_missing_outputs_disagree_with_a_reason() -> None:
    result = compare_outputs(
        {"a": np.zeros((2, 3)), "b": np.array([1, 2]), "c": np.array([1.0]), "d": np.zeros(0)},
        {"a": np.zeros((3, 2)), "b": np.array(["1", "2"]), "d": np.zeros(0), "extra": np.ones(1)},
    )
    assert not result.agree
    by_name = {output.name: output for output in result.outputs}
    assert set(by_name) == {"a", "b", "c", "d"}  # outputs only the shadow has are ignored
    assert by_name["a"].reason == "shape [3, 2] differs from the primary's [2, 3]"
    assert by_name["b"].reason is not None and "datatype" in by_name["b"].reason
    assert by_name["c"].reason == "missing from the shadow's outputs"
    assert by_name["d"].agree and by_name["d"].mean_abs_diff == 0.0
    assert result.to_dict()["outputs"][2] == {
        "name": "c",
        "agree": False,
        "reason": "missing from the shadow's outputs",
    }
    assert compare_outputs({}, {"x": np.ones(1)}).agree


def test_decision_agreement_ignores_probability_noise_but_not_a_different_class() -> None:
    primary = {"predict": np.array([1]), "predict_proba": np.array([[0.2, 0.8]])}
    same_class = compare_outputs(primary, {"predict": np.array([1]), "predict_proba": np.array([[0.3, 0.7]])})
    assert not same_class.agree and same_class.decision_agrees
    other_class = compare_outputs(primary, {"predict": np.array([0]), "predict_proba": np.array([[0.6, 0.4]])})
    assert not other_class.decision_agrees
    regression = compare_outputs({"y": np.array([1.0])}, {"y": np.array([1.5])})
    assert not regression.decision_agrees


def test_row_agreement_is_per_row_and_decided_by_labels_when_there_are_any() -> None:
    from ferryman.serving.agreement import row_agreement

    primary = {"predict": np.array([1, 0, 2]), "predict_proba": np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])}
    shadow = {"predict": np.array([1, 1, 2]), "predict_proba": np.array([[0.3, 0.7], [0.4, 0.6], [0.5, 0.5]])}
    assert row_agreement(primary, shadow, 3).tolist() == [True, False, True]
    regression = row_agreement({"y": np.array([[1.0, 2.0], [3.0, 4.0]])}, {"y": np.array([[1.0, 2.0], [3.0, 4.5]])}, 2)
    assert regression.tolist() == [True, False]
    assert row_agreement({"y": np.array([1.0, 2.0])}, {}, 2).tolist() == [False, False]
