"""Create one virtual environment per peer under ``$BENCH_DIR`` (default ``~/.cache/ferryman-bench``).

Each venv pins the versions ``../shared/references/peer-bench.md`` measured, plus scikit-learn,
numpy, joblib and onnxruntime at the versions of ``requirements/lock.txt``, so the one
``model.joblib`` / ``model.onnx`` the benchmark writes loads identically in every server.
A venv whose pinned list has not changed is reused. Installs run in parallel; the outcome of each
(ok, or the failing pip output) goes to ``$BENCH_DIR/setup-status.json`` for the report.
Stdlib only: it runs before any peer exists. Usage: python -m bench.peers.setup [peer ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "lock.txt"

#: What peer-bench.md measured, and the fixes it needed (uvloop<0.22 for MLServer, PyYAML for TorchServe).
#: ``torch==2.13.0`` is the CPU build that lies on local disk; any other version would download GBs.
PEER_PACKAGES: dict[str, list[str]] = {
    "asgi": ["uvicorn[standard]=={uvicorn}", "uvloop=={uvloop}", "httptools=={httptools}"],
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"],
    "kserve": ["kserve==0.21.0"],
    "torchserve": ["torchserve==0.12.0", "torch-model-archiver==0.12.0", "torch==2.13.0", "pyyaml=={pyyaml}"],
}
COMMON = ["scikit-learn=={scikit-learn}", "numpy=={numpy}", "joblib=={joblib}", "onnxruntime=={onnxruntime}"]


def bench_dir() -> Path:
    return Path(os.environ.get("BENCH_DIR") or Path.home() / ".cache" / "ferryman-bench").resolve()


def locked_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            versions[name.lower()] = version
    return versions


def requirements(peer: str) -> list[str]:
    locked = locked_versions()
    return [spec.format(**locked) for spec in PEER_PACKAGES[peer] + COMMON]


def venv_python(peer: str) -> Path:
    return bench_dir() / f"venv-{peer}" / "bin" / "python"


def _install(peer: str, log: Path) -> subprocess.Popen[bytes] | None:
    """Start (re)building one venv; None when it is already up to date."""
    venv = bench_dir() / f"venv-{peer}"
    spec = "\n".join(requirements(peer))
    marker = venv / ".bench-spec"
    if marker.is_file() and marker.read_text() == spec and (venv / "bin" / "python").exists():
        return None
    base = getattr(sys, "_base_executable", sys.executable)
    script = (
        f"rm -rf {venv} && {base} -m venv {venv} && {venv}/bin/pip install -q --upgrade pip && "
        f"{venv}/bin/pip install -q {' '.join(repr(s) for s in requirements(peer))}"
    )
    return subprocess.Popen(["bash", "-c", script], stdout=log.open("wb"), stderr=subprocess.STDOUT)


def setup(peers: list[str]) -> dict[str, str]:
    """Build the venvs in parallel; return {peer: "ok" | error text}, also saved to setup-status.json."""
    root = bench_dir()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "freeze").mkdir(exist_ok=True)
    started = time.monotonic()
    running = {peer: _install(peer, root / "logs" / f"setup-{peer}.log") for peer in peers}
    status: dict[str, str] = {}
    for peer, process in running.items():
        if process is not None and process.wait() != 0:
            lines = (root / "logs" / f"setup-{peer}.log").read_text(errors="replace").strip().splitlines()
            tail = [line for line in lines if not line.startswith("WARNING: Location")][-15:]
            status[peer] = "pip failed:\n" + "\n".join(tail)
            continue
        (root / f"venv-{peer}" / ".bench-spec").write_text("\n".join(requirements(peer)))
        freeze = subprocess.run([str(venv_python(peer)), "-m", "pip", "freeze"], capture_output=True, text=True)
        (root / "freeze" / f"{peer}.txt").write_text(freeze.stdout)
        status[peer] = "ok"
    path = root / "setup-status.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**previous, **status}, indent=2))
    print(f"peer venvs ready in {time.monotonic() - started:.0f} s: {status}", flush=True)
    return status


def main() -> None:
    peers = sys.argv[1:] or list(PEER_PACKAGES)
    unknown = [peer for peer in peers if peer not in PEER_PACKAGES]
    if unknown:
        sys.exit(f"unknown peer(s) {unknown}; known: {', '.join(PEER_PACKAGES)}")
    setup(peers)


if __name__ == "__main__":
    main()
