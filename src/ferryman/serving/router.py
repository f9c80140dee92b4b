"""Which version answers a request: explicit number, alias, traffic policy, rollout, or the default.

:func:`route` runs first, on the request path, for every request: with no traffic policy and no
rollout it returns at once. Otherwise a request that names no version is split by the model's
traffic policy (weighted, sticky by a route key, or by a bandit), a header may pin a version, and
a progressive rollout diverts its current share of the rolled-out alias's requests to the new
version. :func:`resolve_version` then turns what was asked for into a version number.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from ferryman.errors import InvalidInput, NotFound
from ferryman.serving.catalog import DEFAULT_ALIAS, CatalogModel

__all__ = ["VERSION_HEADER", "Route", "resolve_version", "route"]

#: A request header that pins the version of a request that names none (testing a candidate).
VERSION_HEADER = b"x-ferryman-version"

Headers = Sequence[tuple[bytes, bytes]]

_random = random.random
_TWO_TO_MINUS_64 = 2.0**-64
#: Under a rollout with an agreement guard, at least this share of the old version's requests is
#: copied to the new one (else the step's own share: the new version sees about twice its share).
_MIN_SHADOW_SHARE = 0.1


class Route:
    """Where one request goes: the version (or alias) to ask for, and the shadow version to copy it to."""

    __slots__ = ("shadow", "version")

    def __init__(self, version: str | None, shadow: int | None = None) -> None:
        self.version = version
        self.shadow = shadow


def route(
    model: CatalogModel,
    requested: str | None,
    headers: Headers | None,
    inputs: dict[str, np.ndarray[Any, Any]] | None,
) -> Route:
    """Apply the model's traffic policy and rollout to a request for ``requested`` (None = no version)."""
    traffic = model.traffic
    rollout = model.rollout
    if traffic is None and rollout is None:
        return Route(requested)
    if requested is None and headers:
        pinned = _header(headers, VERSION_HEADER)
        if pinned is not None:
            if not pinned:
                raise InvalidInput("x-ferryman-version must name a version number or an alias")
            return Route(pinned)
    key: bytes | None = None
    chosen = requested
    from_policy = False
    if traffic is not None:
        sticky = traffic.policy.sticky
        if sticky is not None:
            key = _route_key(sticky.header.encode("latin-1"), sticky.input, headers, inputs)
        if requested is None:
            number = traffic.choose(key)
            if number is not None:
                chosen, from_policy = str(number), True
    shadow = None
    if traffic is not None and traffic.should_shadow():
        shadow = traffic.shadow_target()
    if rollout is not None and rollout.active and _rolled_out(model, chosen, from_policy):
        share = rollout.weight / 100
        draw = _key_fraction(key, model.name) if key is not None else _random()
        if draw < share:
            chosen = str(rollout.to_version)
        elif shadow is None and "min_agreement" in rollout.guards and _random() < max(share, _MIN_SHADOW_SHARE):
            # The agreement guard needs the new version's answers to requests the old one served.
            shadow = rollout.to_version
    return Route(chosen, shadow)


def _rolled_out(model: CatalogModel, chosen: str | None, from_policy: bool) -> bool:
    """Whether a request for ``chosen`` is a request for the alias being rolled out."""
    rollout = model.rollout
    assert rollout is not None
    if chosen is None:
        return rollout.alias == DEFAULT_ALIAS
    if chosen == rollout.alias:
        return True
    # A split that named the alias was compiled to the alias's version number.
    return from_policy and chosen == str(rollout.from_version)


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _route_key(
    header: bytes, input_name: str | None, headers: Headers | None, inputs: dict[str, np.ndarray[Any, Any]] | None
) -> bytes | None:
    """The sticky route key: the header if present, else the named input's first value."""
    if headers:
        for key, value in headers:
            if key == header:
                return value
    if input_name is not None and inputs is not None:
        array = inputs.get(input_name)
        if array is not None and array.size:
            first = array.flat[0]
            return first if isinstance(first, bytes) else str(first).encode()
    return None


def _key_fraction(key: bytes, namespace: str) -> float:
    """A key's stable position in [0, 1): the same key is diverted at every step once its share is reached."""
    digest = hashlib.blake2b(key, digest_size=8, person=b"ferryman-rollout", salt=namespace.encode()[:16]).digest()
    return int.from_bytes(digest) * _TWO_TO_MINUS_64


def resolve_version(model: CatalogModel, requested: str | None, serving_default: int | None) -> int:
    """Turn a requested version (number, alias, or None for the default) into a version number.

    Without a version the request goes to the version now serving by default (it only moves
    once its successor has loaded), else to the catalog default: the production alias, else
    the latest version.
    """
    if requested is None:
        if serving_default is not None and serving_default in model.versions:
            return serving_default
        default = model.default_version
        if default is None:
            raise NotFound(f"model '{model.name}' has no versions")
        return default
    if requested.isdigit():
        number = int(requested)
    elif requested in model.aliases:
        number = model.aliases[requested]
    else:
        raise NotFound(f"model '{model.name}' has no version or alias '{requested}'")
    if number not in model.versions:
        raise NotFound(f"model '{model.name}' has no version {number}")
    return number
