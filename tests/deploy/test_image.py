"""The container image, built from deploy/Dockerfile and run for real (the slow part of make test).

No registry image is pulled: the base is a minimal Debian bookworm made by ``debootstrap`` and
``podman import``-ed (cached as a tarball in ``build/image``, which ``make clean`` removes). Python
packages come as wheels built on the host (``pip wheel``, cached there too by the lock's hash),
since a build inside cannot reach PyPI over verified TLS. ``podman build --isolation chroot`` builds
the image and ``buildah run --isolation chroot`` starts the server from it (``podman run`` fails
here: ``crun: setrlimit RLIMIT_NOFILE: Operation not permitted``); the test sees ready = 200 and one
correct prediction.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import free_port, wait_for
from tests.deploy.conftest import REPO

pytestmark = pytest.mark.image

CACHE = REPO / "build" / "image"
MIRROR = os.environ.get("FERRYMAN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
TOOLS = ("debootstrap", "podman", "buildah")
IMAGE = "localhost/ferryman-image-test:latest"
EXTRAS = "all,s3,postgres"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def run(*command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done


def base_tarball() -> Path:
    """A minimal Debian bookworm root filesystem with python3, venv and useradd (built once, cached)."""
    tarball = CACHE / "bookworm-minbase.tar"
    if tarball.is_file():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / "rootfs.tmp"
    shutil.rmtree(root, ignore_errors=True)
    includes = "python3,python3-venv,passwd,ca-certificates"
    run("debootstrap", "--variant=minbase", f"--include={includes}", "bookworm", str(root), MIRROR, timeout=900)
    partial = tarball.with_suffix(".tar.tmp")
    run("tar", "-C", str(root), "-cf", str(partial), ".")
    partial.replace(tarball)
    shutil.rmtree(root, ignore_errors=True)
    return tarball


def base_image(tarball: Path) -> str:
    """The tarball imported into podman, tagged by its content hash."""
    digest = hashlib.sha256()
    with tarball.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    tag = f"localhost/ferryman-debian-base:{digest.hexdigest()[:12]}"
    exists = subprocess.run(["podman", "image", "exists", tag], check=False, timeout=60)
    if exists.returncode != 0:
        run("podman", "import", str(tarball), tag)
    return tag


def dependency_wheels() -> Path:
    """Wheels of every dependency of ferryman[EXTRAS] at the lock's pins, plus the build backend (cached)."""
    key = hashlib.sha256()
    for name in ("pyproject.toml", "requirements/lock.txt"):
        key.update((REPO / name).read_bytes())
    key.update(EXTRAS.encode())
    folder = CACHE / f"wheels-{key.hexdigest()[:12]}"
    if folder.is_dir():
        return folder
    for old in CACHE.glob("wheels-*"):
        shutil.rmtree(old, ignore_errors=True)  # another lock's wheels, or an interrupted build
    partial = folder.with_name(folder.name + ".tmp")
    pip = [str(REPO / ".venv" / "bin" / "python"), "-m", "pip", "wheel", "-q", "--wheel-dir", str(partial)]
    lock = str(REPO / "requirements" / "lock.txt")
    run(*pip, "--constraint", lock, f"{REPO}[{EXTRAS}]", timeout=900)
    run(*pip, "--constraint", lock, "setuptools>=68", "wheel", timeout=300)
    for stale in partial.glob("ferryman-*.whl"):
        stale.unlink()  # this repository's own wheel is built fresh inside the image
    partial.replace(folder)
    return folder


def build_context(target: Path, wheels: Path) -> Path:
    """The files the Dockerfile copies, and the prebuilt wheels in deploy/wheels."""
    for name in ("pyproject.toml", "README.md", ".dockerignore", "requirements/lock.txt", "deploy/Dockerfile"):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(wheels, target / "deploy" / "wheels")
    return target


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """deploy/Dockerfile built on the debootstrapped base; its inspect record."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"missing {', '.join(missing)}: run 'make sysdeps' as root (Makefile SYSTEM_PACKAGES)"
    assert os.geteuid() == 0, "building images with chroot isolation needs root"
    base = base_image(base_tarball())
    context = build_context(tmp_path_factory.mktemp("image-context"), dependency_wheels())
    run(
        "podman",
        "build",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--layers=false",  # no cache of intermediate layers: nothing left behind but the image
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--build-arg",
        "WHEELS_ONLY=1",
        "--build-arg",
        f"FERRYMAN_EXTRAS={EXTRAS}",
        "-f",
        str(context / "deploy" / "Dockerfile"),
        "-t",
        IMAGE,
        str(context),
        timeout=900,
    )
    inspected = json.loads(run("podman", "image", "inspect", IMAGE).stdout)[0]
    print(f"\nimage {IMAGE}: {inspected['Size'] / 1e6:.0f} MB")  # docs/deployment.md quotes it
    yield inspected
    subprocess.run(["podman", "rmi", "--force", IMAGE], capture_output=True, check=False, timeout=120)


def test_the_image_runs_as_the_manifests_expect(image: dict[str, object]) -> None:
    config = image["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["ferryman"] and config["Cmd"] == ["serve"]
    assert "FERRYMAN_HOME=/var/lib/ferryman" in config["Env"]


def test_the_server_started_from_the_image_is_ready_and_predicts(
    image: dict[str, object], iris_joblib: Path, iris_pipeline: object, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(iris_joblib, models / "iris.joblib")
    for path in (tmp_path, models, models / "iris.joblib"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's uid 10001
    container = run("buildah", "from", IMAGE).stdout.strip()
    port = free_port()
    log = (tmp_path / "container.log").open("wb")
    # buildah run does not apply the image's entrypoint: name the command. --network host: the
    # test reaches the server on the loopback address it binds.
    process = subprocess.Popen(
        [
            "buildah",
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--volume",
            f"{models}:/models:ro",
            "--env",
            "FERRYMAN_HOST=127.0.0.1",
            "--env",
            f"FERRYMAN_PORT={port}",
            "--env",
            "FERRYMAN_GRPC_PORT=-1",
            container,
            "--",
            "ferryman",
            "serve",
            "/models/iris.joblib",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the server runs in this session: the whole group can be stopped
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "container.log").read_text()
            try:
                return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "the containerised server to be ready", deadline_s=120)
        request = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 4], "data": ROWS}]}
        answer = httpx.post(f"{url}/v2/models/iris/infer", json=request, timeout=30)
        assert answer.status_code == 200, answer.text
        expected = iris_pipeline.predict(np.array(ROWS))  # type: ignore[attr-defined]
        assert answer.json()["outputs"][0]["data"] == expected.tolist()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(45)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False, timeout=60)
