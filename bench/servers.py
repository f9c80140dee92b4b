"""How each server under test is started: command, environment, config files, request kind.

Every server binds 127.0.0.1 only, on free ports chosen per run, with its scratch files in its own
run folder under ``$BENCH_DIR``. Configurations follow ``../shared/references/peer-bench.md``
("best" = the mode that peer reached its highest c32 throughput with there).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.models import artifact
from bench.peers.setup import venv_python

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "bench" / "peers"
FERRYMAN = Path(sys.executable).parent / "ferryman"


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: Ports the server opens besides the HTTP one (all must be free again after the stop).
    extra_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class Target:
    """One server configuration on one workload."""

    server: str  # display name
    key: str  # venv / kind: ferryman, asgi, mlserver, kserve, torchserve
    mode: str
    workload: str
    kind: str  # request kind for bench.models.request
    prepare: Callable[[Path, Path, int], Launch]  # (run_dir, models_dir, port) -> Launch
    note: str = ""


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _uvicorn(app: str, workload: str, workers: int) -> Callable[[Path, Path, int], Launch]:
    def prepare(run_dir: Path, models_dir: Path, port: int) -> Launch:
        argv = [str(venv_python("asgi")), "-m", "uvicorn", "--app-dir", str(PEERS), app]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        return Launch(argv, {"MODEL_PATH": str(artifact(models_dir, workload))})

    return prepare


def _ferryman(workload: str, env: dict[str, str], runtime_config: dict[str, object] | None, workers: int | None):
    def prepare(run_dir: Path, models_dir: Path, port: int) -> Launch:
        argv = [str(FERRYMAN), "serve", "--port", str(port), "--grpc-port", "0", "--home", str(run_dir / "home")]
        argv += ["--log-level", "warning"]
        if workers is not None:
            argv += ["--workers", str(workers)]
        source = artifact(models_dir, workload)
        if runtime_config is None:
            argv.append(str(source))
        else:  # a read-only repository folder is where a model.yaml can carry runtime_config
            version_dir = run_dir / "repo" / workload / "1"
            version_dir.mkdir(parents=True)
            os.symlink(source, version_dir / source.name)
            (run_dir / "repo" / workload / "model.yaml").write_text(json.dumps({"runtime_config": runtime_config}))
            argv += ["--repository", str(run_dir / "repo")]
        return Launch(argv, dict(env))

    return prepare


def _mlserver(workload: str, tuned: bool) -> Callable[[Path, Path, int], Launch]:
    def prepare(run_dir: Path, models_dir: Path, port: int) -> Launch:
        grpc, metrics = free_ports(2)
        root = run_dir / "mlserver"
        (root / workload).mkdir(parents=True)
        settings: dict[str, object] = {"host": "127.0.0.1", "http_port": port, "grpc_port": grpc}
        settings["metrics_port"] = metrics
        if tuned:
            settings.update({"parallel_workers": 2, "debug": False})
        (root / "settings.json").write_text(json.dumps(settings))
        implementation = "mlserver_onnx.OnnxModel" if workload == "w3" else "mlserver_sklearn.SKLearnModel"
        model: dict[str, object] = {
            "name": workload,
            "implementation": implementation,
            "parameters": {"uri": str(artifact(models_dir, workload))},
        }
        if tuned:
            model.update({"max_batch_size": 32, "max_batch_time": 0.005})
        (root / workload / "model-settings.json").write_text(json.dumps(model))
        mlserver = venv_python("mlserver").parent / "mlserver"
        return Launch([str(mlserver), "start", str(root)], {"PYTHONPATH": str(PEERS)}, (grpc, metrics))

    return prepare


def _kserve(workload: str, workers: int) -> Callable[[Path, Path, int], Launch]:
    def prepare(run_dir: Path, models_dir: Path, port: int) -> Launch:
        argv = [str(venv_python("kserve")), str(PEERS / "kserve_server.py"), "--model_name", workload]
        argv += ["--http_port", str(port), "--enable_grpc", "false", "--workers", str(workers)]
        return Launch(argv, {"MODEL_PATH": str(artifact(models_dir, workload)), "HOST": "127.0.0.1"})

    return prepare


def _torchserve(workload: str, tuned: bool) -> Callable[[Path, Path, int], Launch]:
    def prepare(run_dir: Path, models_dir: Path, port: int) -> Launch:
        management, metrics, grpc_inference, grpc_management = free_ports(4)
        bin_dir = venv_python("torchserve").parent
        store = run_dir / "store"
        store.mkdir(parents=True)
        source = artifact(models_dir, workload)
        archiver = [str(bin_dir / "torch-model-archiver"), "--model-name", workload, "--version", "1.0"]
        archiver += ["--serialized-file", str(source), "--handler", str(PEERS / "torchserve_handler.py")]
        archiver += ["--export-path", str(store)]
        subprocess.run(archiver, check=True, capture_output=True, cwd=run_dir)
        config = [
            f"inference_address=http://127.0.0.1:{port}",
            f"management_address=http://127.0.0.1:{management}",
            f"metrics_address=http://127.0.0.1:{metrics}",
            f"grpc_inference_port={grpc_inference}",
            f"grpc_management_port={grpc_management}",
            "grpc_inference_address=127.0.0.1",
            "grpc_management_address=127.0.0.1",
            "disable_token_authorization=true",
            f"model_store={store}",
        ]
        if tuned:
            models = {
                workload: {
                    "1.0": {
                        "defaultVersion": True,
                        "marName": f"{workload}.mar",
                        "minWorkers": 2,
                        "maxWorkers": 2,
                        "batchSize": 32,
                        "maxBatchDelay": 5,
                        "responseTimeout": 120,
                    }
                }
            }
            config.append(f"models={json.dumps(models)}")
        (run_dir / "config.properties").write_text("\n".join(config) + "\n")
        argv = [str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth"]
        argv += ["--ts-config", str(run_dir / "config.properties"), "--model-store", str(store)]
        argv += ["--models", f"{workload}={workload}.mar"]
        env = {"TMPDIR": str(run_dir), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        return Launch(argv, env, (management, metrics, grpc_inference, grpc_management))

    return prepare


def ferryman_workers_flag() -> bool:
    """Whether ``ferryman serve`` has ``--workers`` (several front-end processes) in this checkout."""
    help_text = subprocess.run([str(FERRYMAN), "serve", "--help"], capture_output=True, text=True).stdout
    return "--workers" in help_text


#: Ferryman configurations: name -> (environment, runtime_config for a model.yaml or None, request kind, workers).
#: ``lean`` computes only ``predict`` (what every peer computes) instead of predict + predict_proba;
#: ``delay 2 ms`` lets a batch wait up to 2 ms for more rows (FERRYMAN_BATCH_MAX_DELAY_MS; default 0).
def ferryman_modes(workers_flag: bool) -> dict[str, tuple[dict[str, str], dict[str, object] | None, str, int | None]]:
    lean: dict[str, object] = {"predict_proba": False}
    modes: dict[str, tuple[dict[str, str], dict[str, object] | None, str, int | None]] = {
        "default": ({}, None, "ferryman-json", None),
        "lean": ({}, lean, "ferryman-json", None),
        "lean, binary": ({}, lean, "ferryman-binary", None),
    }
    if workers_flag:
        modes["lean, 2 workers"] = ({}, lean, "ferryman-json", 2)
    modes["lean, delay 2 ms"] = ({"FERRYMAN_BATCH_MAX_DELAY_MS": "2"}, lean, "ferryman-json", None)
    return modes


def targets(workloads: list[str], quick: bool, all_modes: bool, extra_ferryman: dict[str, dict[str, object]]):
    """The run list, one server at a time: constant app first, then per workload every server."""
    out: list[Target] = []
    const_workers = [1] if quick else [1, 2]
    for workers in const_workers:
        out.append(
            Target(
                "constant ASGI app",
                "asgi",
                f"{workers} worker{'s' if workers > 1 else ''}",
                workloads[0],
                "v2",
                _uvicorn("asgi_const:app", workloads[0], workers),
                "returns a fixed V2 body; independent of the model",
            )
        )
    modes = ferryman_modes(ferryman_workers_flag())
    if quick:
        modes = {name: modes[name] for name in ("default", "lean")}
    for name, spec in extra_ferryman.items():
        env = {str(k): str(v) for k, v in dict(spec.get("env", {})).items()}  # type: ignore[arg-type]
        runtime_config = spec.get("runtime_config")
        kind = str(spec.get("kind", "ferryman-json"))
        workers = spec.get("workers")
        modes[name] = (env, runtime_config, kind, int(workers) if workers else None)  # type: ignore[assignment]
    for workload in workloads:
        for workers in [1] if quick else [1, 2]:
            mode = f"{workers} worker{'s' if workers > 1 else ''}"
            out.append(
                Target("bare ASGI app", "asgi", mode, workload, "v2", _uvicorn("asgi_model:app", workload, workers))
            )
        for name, (env, runtime_config, kind, workers) in modes.items():
            prepare = _ferryman(workload, env, runtime_config, workers)
            out.append(Target("Ferryman", "ferryman", name, workload, kind, prepare))
        if quick:
            out.append(Target("KServe", "kserve", "default", workload, "v2", _kserve(workload, 1)))
            continue
        out.append(Target("TorchServe", "torchserve", "tuned", workload, "torchserve", _torchserve(workload, True)))
        out.append(Target("MLServer", "mlserver", "tuned", workload, "v2", _mlserver(workload, True)))
        out.append(Target("KServe", "kserve", "2 workers", workload, "v2", _kserve(workload, 2)))
        if all_modes:
            out.append(
                Target("TorchServe", "torchserve", "default", workload, "torchserve", _torchserve(workload, False))
            )
            out.append(Target("MLServer", "mlserver", "default", workload, "v2", _mlserver(workload, False)))
            out.append(Target("KServe", "kserve", "1 worker", workload, "v2", _kserve(workload, 1)))
    return out


def needs_java() -> bool:
    return shutil.which("java") is not None
