"""Strategic merge patch, as kustomize applies it, for the patches in deploy/kubernetes.

Maps merge key by key. A list merges item by item when the Kubernetes schema says so
(``x-kubernetes-patch-strategy: merge``, items matched on ``x-kubernetes-patch-merge-key``: containers
by ``name``, volume mounts by ``mountPath``, …); any other list is replaced whole (``envFrom``,
NetworkPolicy ``egress``, and every list of a custom resource, which has no patch metadata).

Directives: ``null`` deletes a field; ``$patch: delete`` deletes a map, a list item, or (at the top)
the whole object; ``$patch: replace`` replaces a map instead of merging it. Like kustomize (and
unlike ``kubectl patch``), the ``retainKeys`` strategy is not applied: a patch that changes a
Deployment's strategy to ``Recreate`` must say ``rollingUpdate: null`` itself. Other directives
(``$retainKeys``, ``$setElementOrder``, ``$deleteFromPrimitiveList``) are refused, not ignored.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.deploy.kubernetes_schemas import PatchSchema

__all__ = ["DELETE", "PatchError", "strategic_merge"]

#: Returned by :func:`strategic_merge` when the patch deletes the whole object.
DELETE: dict[str, Any] = {"$patch": "delete"}


class PatchError(Exception):
    """A patch this implementation cannot apply faithfully."""


def strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``target`` with ``patch`` applied (neither is changed); :data:`DELETE` if the patch deletes it."""
    if patch.get("$patch") == "delete":
        return DELETE
    schema = PatchSchema.for_object(target.get("apiVersion", ""), target.get("kind", ""))
    return _merge_map(target, patch, schema, "")


def _directive(patch: dict[str, Any], where: str) -> str | None:
    value = patch.get("$patch")
    if value not in (None, "delete", "replace", "merge"):
        raise PatchError(f"{where}: unknown $patch directive {value!r}")
    for key in patch:
        if key.startswith("$") and key != "$patch":
            raise PatchError(f"{where}: directive {key} is not supported")
    return None if value == "merge" else value


def _clean(value: Any, where: str) -> Any:
    """A patch value headed for a place with nothing to merge into: directives and nulls dropped."""
    if isinstance(value, dict):
        if _directive(value, where) == "delete":
            return None
        cleaned = {}
        for key, item in value.items():
            if key == "$patch" or item is None:
                continue
            result = _clean(item, f"{where}.{key}")
            if result is not None:
                cleaned[key] = result
        return cleaned
    if isinstance(value, list):
        items = [_clean(item, f"{where}[]") for item in value]
        return [item for item in items if item is not None]
    return copy.deepcopy(value)


def _merge_map(target: dict[str, Any], patch: dict[str, Any], schema: PatchSchema, where: str) -> dict[str, Any]:
    if _directive(patch, where) == "replace":
        result: dict[str, Any] = _clean({k: v for k, v in patch.items() if k != "$patch"}, where)
        return result
    merged = copy.deepcopy(target)
    for key, value in patch.items():
        if key == "$patch":
            continue
        path = f"{where}.{key}" if where else key
        if value is None:
            merged.pop(key, None)
            continue
        current = merged.get(key)
        field = schema.field(key)
        if isinstance(value, dict) and isinstance(current, dict):
            if _directive(value, path) == "delete":
                merged.pop(key)
            else:
                merged[key] = _merge_map(current, value, field, path)
        elif isinstance(value, list) and isinstance(current, list):
            merged[key] = _merge_list(current, value, field, path)
        else:
            cleaned = _clean(value, path)
            if cleaned is None:
                merged.pop(key, None)
            else:
                merged[key] = cleaned
    return merged


def _merge_list(target: list[Any], patch: list[Any], schema: PatchSchema, where: str) -> list[Any]:
    merge, merge_key = schema.list_strategy
    if not merge:
        cleaned: list[Any] = _clean(patch, where)
        return cleaned
    if merge_key is None:  # a merged list of scalars: a union that keeps the target's order
        return copy.deepcopy(target) + [item for item in patch if item not in target]
    merged = copy.deepcopy(target)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(f"{where}: every item needs its merge key {merge_key!r}: {item!r}")
        index = next((i for i, old in enumerate(merged) if old.get(merge_key) == item[merge_key]), None)
        item_where = f"{where}[{merge_key}={item[merge_key]}]"
        if _directive(item, item_where) == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(_clean(item, item_where))
        else:
            merged[index] = _merge_map(merged[index], item, schema.items(), item_where)
    return merged
