"""Traffic policies compiled for the request path: which version answers each request.

The policy format and its validation live in ``registry/traffic_spec.py``; :func:`compile_policy`
resolves a policy's targets to version numbers and precomputes what :meth:`CompiledTraffic.choose`
needs: cumulative weights for a split, weighted rendezvous hashing for sticky keys (a key always
reaches the same version while the weights stay the same, and keys spread as the weights do), a
bandit for ``bandit`` policies, and the sampled shadow target.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Callable, Mapping

from ferryman.registry.traffic_spec import TrafficPolicy
from ferryman.serving.bandits import Bandit, make_bandit

__all__ = ["CompiledTraffic", "compile_policy"]

_TWO_TO_MINUS_53 = 2.0**-53


class CompiledTraffic:
    """A policy with targets resolved to versions: chooses the version for each request (the hot path)."""

    def __init__(
        self,
        policy: TrafficPolicy,
        split: Mapping[int, float],
        shadow: int | None,
        bandit: Bandit | None,
        *,
        rng: random.Random,
        namespace: str,
    ) -> None:
        self.policy = policy
        self._random = rng.random
        self._bandit = bandit
        self._shadow = shadow
        self._shadow_fraction = policy.shadow.fraction if policy.shadow is not None else 0.0
        serving = [(version, weight) for version, weight in split.items() if weight > 0]
        total = sum(weight for _, weight in serving)
        self._split_versions = tuple(version for version, _ in serving)
        cumulative, running = [], 0.0
        for _, weight in serving:
            running += weight / total
            cumulative.append(running)
        if cumulative:
            cumulative[-1] = 1.0  # random() < 1.0, so bisect can never fall off the end
        self._cumulative = cumulative
        self._ring: tuple[tuple[hashlib.blake2b, float, int], ...] | None = None
        if policy.sticky is not None and len(serving) > 1:
            salt = hashlib.blake2b(namespace.encode(), digest_size=16).digest()
            self._ring = tuple(
                (hashlib.blake2b(digest_size=8, key=salt, salt=version.to_bytes(8, "little")), weight, version)
                for version, weight in serving
            )

    @property
    def versions(self) -> frozenset[int]:
        """Every version :meth:`choose` may return (positive split weights, or the bandit's arms)."""
        if self._bandit is not None:
            return frozenset(self._bandit.arms)
        return frozenset(self._split_versions)

    @property
    def bandit(self) -> Bandit | None:
        """The policy's bandit, whose ``state()``/``restore()`` persist what it learned."""
        return self._bandit

    def choose(self, route_key: bytes | None = None) -> int | None:
        """The version for one request, or None when the policy only shadows (use the serving default).

        With a sticky policy and a ``route_key`` the choice is a function of the key; otherwise a
        weighted random draw (or the bandit's choice).
        """
        versions = self._split_versions
        if len(versions) == 1:
            return versions[0]
        if route_key is not None and self._ring is not None:
            best_version, best_score = versions[0], -1.0
            for base, weight, version in self._ring:
                hasher = base.copy()
                hasher.update(route_key)
                # top 53 bits, shifted half a step off zero: uniform in (0, 1) with both ends excluded
                u = ((int.from_bytes(hasher.digest()) >> 11) + 0.5) * _TWO_TO_MINUS_53
                score = weight / -math.log(u)
                if score > best_score:
                    best_version, best_score = version, score
            return best_version
        if versions:
            return versions[bisect.bisect_right(self._cumulative, self._random())]
        if self._bandit is not None:
            return self._bandit.choose()
        return None

    def record_reward(self, version: int, reward: float) -> bool:
        """Feed a reward to the bandit; False (ignored) when there is none or ``version`` is not an arm."""
        bandit = self._bandit
        if bandit is None or version not in bandit.arms:
            return False
        bandit.record_reward(version, reward)
        return True

    def shadow_target(self) -> int | None:
        """The version that receives shadow copies, if any.

        A request whose primary version is the shadow version itself should not be shadowed.
        """
        return self._shadow

    def should_shadow(self) -> bool:
        """Whether to shadow this request (sampled at the policy's fraction)."""
        return self._shadow is not None and self._random() < self._shadow_fraction


def compile_policy(
    policy: TrafficPolicy,
    resolve: Callable[[str], int],
    *,
    rng: random.Random | None = None,
    namespace: str = "",
) -> CompiledTraffic:
    """Resolve the policy's targets with ``resolve`` (which raises ``NotFound``) and precompute choosing.

    Targets that resolve to the same version (two aliases on one version) merge: their split
    weights add up, and the bandit keeps one arm. ``namespace`` (the model's name) keeps sticky
    assignments of different models independent; ``rng`` makes random choices reproducible.
    """
    split: dict[int, float] = {}
    for entry in policy.split or ():
        version = resolve(entry.target)
        split[version] = split.get(version, 0.0) + entry.weight
    shadow = resolve(policy.shadow.target) if policy.shadow is not None else None
    generator = rng if rng is not None else random.Random()  # noqa: S311 - routing, not cryptography  # nosec B311
    bandit = None
    if policy.bandit is not None:
        arms = list(dict.fromkeys(resolve(arm) for arm in policy.bandit.arms))
        spec = policy.bandit
        bandit = make_bandit(spec.algorithm, arms, reward=spec.reward, epsilon=spec.epsilon, rng=generator)
    return CompiledTraffic(policy, split, shadow, bandit, rng=generator, namespace=namespace)
