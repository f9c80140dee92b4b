"""Running the server: register artifacts given on the command line, then serve with uvicorn."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from ferryman.app import Components, build_components, create_app
from ferryman.config import Settings
from ferryman.logs import configure_logging
from ferryman.registry.intake import IntakeRequest

__all__ = ["register_artifacts", "serve"]

logger = logging.getLogger(__name__)


def _name_for(path: Path) -> str:
    """A model name from a file or folder name: ``churn-model.onnx`` → ``churn-model``."""
    stem = path.name if path.is_dir() else path.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")
    return name or "model"


def register_artifacts(components: Components, artifacts: Sequence[Path]) -> list[str]:
    """Register each artifact as a version of a model named after it (reusing identical bytes)."""
    names: list[str] = []
    for path in artifacts:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        name = _name_for(path)
        staged = components.artifacts.stage_path(path)
        record, created = components.intake.register(staged, IntakeRequest(name=name))
        logger.info("%s %s:%d from %s", "registered" if created else "already registered", name, record.version, path)
        names.append(name)
    return names


def serve(settings: Settings, artifacts: Sequence[Path] = ()) -> None:
    """Build the server, register ``artifacts`` on the fly, and serve until interrupted."""
    configure_logging(settings.log_level)
    components = build_components(settings)
    register_artifacts(components, artifacts)
    app = create_app(components)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=30,
    )
    uvicorn.Server(config).run()
