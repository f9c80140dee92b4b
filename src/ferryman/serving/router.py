"""Which version answers a request: explicit number, alias, or the model's serving default.

Traffic policies (splits, sticky keys, shadows, bandits) will live here too; the rest of the
engine only ever asks :func:`resolve_version`.
"""

from __future__ import annotations

from ferryman.errors import NotFound
from ferryman.serving.catalog import CatalogModel

__all__ = ["resolve_version"]


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
