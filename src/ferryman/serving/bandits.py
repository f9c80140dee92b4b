"""Multi-armed bandits that choose which version serves a request and learn from feedback rewards.

Each arm (a version number) keeps one statistic, whatever the algorithm: how often it was chosen
(``pulls``), and the count, mean and sum of squared deviations (``m2``, Welford's update) of the
rewards recorded for it. The algorithms read it differently:

- **epsilon-greedy**: an arm without a reward yet is chosen first (the least-pulled such arm);
  after that, with probability ``epsilon`` a uniformly random arm, otherwise the arm with the
  highest mean reward (the first one on a tie).
- **Thompson sampling, binary rewards** (each reward in [0, 1], 1 = success): an arm's success rate
  has the posterior Beta(1 + successes, 1 + failures), where a reward ``r`` adds ``r`` successes and
  ``1 - r`` failures, so fractional rewards count proportionally. Each choice draws once from every
  arm's posterior and takes the highest draw.
- **Thompson sampling, continuous rewards**: rewards are modelled as normal with unknown mean and
  unknown variance under the non-informative prior p(mu, sigma^2) ∝ 1/sigma^2. The posterior of an
  arm's mean reward is then Student's t with n - 1 degrees of freedom, centred on the sample mean
  with scale s / sqrt(n) (s the sample standard deviation). Each choice draws from it per arm and
  takes the highest draw; an arm with fewer than two rewards has no posterior yet and is chosen
  first.

Rewards arrive with feedback, often after a delay; an arm that has not received its first reward(s)
keeps being chosen first until they arrive — feedback normally follows within seconds.

Threading: ``choose`` and ``record_reward`` are meant for the event loop (one thread); ``state``
and ``restore`` may be called from another thread and take a lock against ``record_reward``.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping, Sequence

from ferryman.errors import InvalidInput, NotFound
from ferryman.registry.traffic_spec import ALGORITHMS, REWARDS, Algorithm, RewardKind

__all__ = ["ALGORITHMS", "REWARDS", "Bandit", "EpsilonGreedy", "ThompsonSampling", "make_bandit"]


class Bandit:
    """Per-arm reward statistics shared by every algorithm; subclasses decide how to choose."""

    algorithm: Algorithm

    def __init__(self, arms: Sequence[int], *, reward: RewardKind, rng: random.Random) -> None:
        if not arms or len(set(arms)) != len(arms):
            raise ValueError("a bandit needs distinct arms")
        self.arms: tuple[int, ...] = tuple(arms)
        self.reward: RewardKind = reward
        self._index = {arm: i for i, arm in enumerate(self.arms)}
        self._rng = rng
        self._lock = threading.Lock()
        size = len(self.arms)
        self._pulls = [0] * size
        self._count = [0] * size
        self._mean = [0.0] * size
        self._m2 = [0.0] * size

    def choose(self) -> int:
        """Pick the arm (version) for the next request and count the pull."""
        i = self._pick()
        self._pulls[i] += 1
        return self.arms[i]

    def _pick(self) -> int:
        raise NotImplementedError

    def _least_pulled_below(self, rewards_needed: int) -> int:
        """The least-pulled arm with fewer than ``rewards_needed`` rewards, or -1 when every arm has them."""
        best = -1
        for i, count in enumerate(self._count):
            if count < rewards_needed and (best < 0 or self._pulls[i] < self._pulls[best]):
                best = i
        return best

    def record_reward(self, arm: int, reward: float) -> None:
        """Learn from one reward for ``arm``; binary rewards must lie in [0, 1]."""
        i = self._index.get(arm)
        if i is None:
            raise NotFound(f"version {arm} is not an arm of this bandit")
        if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
            raise InvalidInput("reward must be a finite number")
        if self.reward == "binary" and not 0.0 <= reward <= 1.0:
            raise InvalidInput("reward must be between 0 and 1 for a binary bandit")
        with self._lock:
            count = self._count[i] + 1
            delta = reward - self._mean[i]
            mean = self._mean[i] + delta / count
            self._m2[i] += delta * (reward - mean)
            self._mean[i] = mean
            self._count[i] = count

    def state(self) -> dict[str, object]:
        """The learned statistics as a plain JSON-serialisable dict (see :meth:`restore`)."""
        with self._lock:
            arms = {
                str(arm): {"pulls": self._pulls[i], "count": self._count[i], "mean": self._mean[i], "m2": self._m2[i]}
                for i, arm in enumerate(self.arms)
            }
        return {"algorithm": self.algorithm, "reward": self.reward, "arms": arms}

    def restore(self, state: Mapping[str, object]) -> None:
        """Load statistics saved by :meth:`state`; arms no longer in the bandit are ignored, new ones start fresh.

        The statistics do not depend on the algorithm, so state carries over when a policy switches
        between epsilon-greedy and Thompson sampling.
        """
        arms = state.get("arms")
        if not isinstance(arms, Mapping):
            raise InvalidInput("bandit state.arms must be an object")
        size = len(self.arms)
        pulls, count, mean, m2 = [0] * size, [0] * size, [0.0] * size, [0.0] * size
        for name, entry in arms.items():
            i = self._index.get(int(name)) if isinstance(name, str) and name.isdigit() else None
            if i is None:
                continue
            field = f"bandit state.arms['{name}']"
            if not isinstance(entry, Mapping):
                raise InvalidInput(f"{field} must be an object")
            pulls[i] = _count_field(entry, "pulls", field)
            count[i] = _count_field(entry, "count", field)
            mean[i] = _number_field(entry, "mean", field)
            m2[i] = _number_field(entry, "m2", field)
            if m2[i] < 0:
                raise InvalidInput(f"{field}.m2 must not be negative")
        with self._lock:
            self._pulls[:], self._count[:], self._mean[:], self._m2[:] = pulls, count, mean, m2


class EpsilonGreedy(Bandit):
    """Untried arms first, then explore a random arm with probability epsilon, else exploit the best mean."""

    algorithm: Algorithm = "epsilon_greedy"

    def __init__(self, arms: Sequence[int], *, reward: RewardKind, epsilon: float, rng: random.Random) -> None:
        super().__init__(arms, reward=reward, rng=rng)
        self.epsilon = epsilon

    def _pick(self) -> int:
        untried = self._least_pulled_below(1)
        if untried >= 0:
            return untried
        if self._rng.random() < self.epsilon:
            return self._rng.randrange(len(self.arms))
        means = self._mean
        return max(range(len(means)), key=means.__getitem__)


class ThompsonSampling(Bandit):
    """Draw each arm's mean reward from its posterior (Beta or Student t) and take the highest draw."""

    algorithm: Algorithm = "thompson"

    def _pick(self) -> int:
        rng = self._rng
        best, best_draw = 0, -math.inf
        if self.reward == "binary":
            for i, count in enumerate(self._count):
                successes = self._mean[i] * count
                draw = rng.betavariate(1.0 + successes, 1.0 + count - successes)
                if draw > best_draw:
                    best, best_draw = i, draw
            return best
        untried = self._least_pulled_below(2)
        if untried >= 0:
            return untried
        for i, count in enumerate(self._count):
            dof = count - 1
            scale = math.sqrt(self._m2[i] / dof / count)
            # Student t draw: a standard normal over sqrt(chi-square / dof), chi-square(k) = Gamma(k/2, 2)
            t = rng.gauss(0.0, 1.0) / math.sqrt(rng.gammavariate(dof / 2.0, 2.0) / dof)
            draw = self._mean[i] + scale * t
            if draw > best_draw:
                best, best_draw = i, draw
        return best


def make_bandit(
    algorithm: Algorithm, arms: Sequence[int], *, reward: RewardKind, epsilon: float, rng: random.Random
) -> Bandit:
    """Build the bandit a policy names (``epsilon`` is used by epsilon-greedy only)."""
    if algorithm == "epsilon_greedy":
        return EpsilonGreedy(arms, reward=reward, epsilon=epsilon, rng=rng)
    return ThompsonSampling(arms, reward=reward, rng=rng)


def _count_field(entry: Mapping[str, object], key: str, field: str) -> int:
    value = entry.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{field}.{key} must be a non-negative integer")
    return value


def _number_field(entry: Mapping[str, object], key: str, field: str) -> float:
    value = entry.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{field}.{key} must be a finite number")
    return float(value)
