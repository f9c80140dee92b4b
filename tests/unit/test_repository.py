"""Read-only model repository folders: layout, model.yaml, skipped entries, cached hashing."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from ferryman.registry.repository import ModelRepository, RepositoryVersion


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root / "iris" / "1" / "model.joblib", b"iris v1")
    write(root / "iris" / "2" / "model.joblib", b"iris v2")
    write(
        root / "iris" / "model.yaml",
        "framework: sklearn\nruntime_config:\n  predict_proba: false\ndescription: Iris classifier\n",
    )
    write(root / "custom" / "1" / "model.py", "class M: ...\n")
    write(root / "custom" / "1" / "data" / "vocab.txt", "a\nb\n")
    return root


def messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_scan_finds_models_and_applies_model_yaml(root: Path) -> None:
    found = ModelRepository([root]).scan()
    assert sorted(found) == ["custom", "iris"]
    assert sorted(found["iris"]) == [1, 2]
    v1 = found["iris"][1]
    assert isinstance(v1, RepositoryVersion)
    assert (v1.model, v1.version, v1.path) == ("iris", 1, root / "iris" / "1")
    assert (v1.framework, v1.runtime_config, v1.description) == (
        "sklearn",
        {"predict_proba": False},
        "Iris classifier",
    )
    custom = found["custom"][1]
    assert (custom.framework, custom.runtime_config, custom.description) == (None, {}, "")
    assert len({v1.sha256, found["iris"][2].sha256, custom.sha256}) == 3


def test_version_hash_is_stable_and_content_sensitive(root: Path, tmp_path: Path) -> None:
    first = ModelRepository([root]).scan()["custom"][1].sha256
    copy = tmp_path / "copy"
    write(copy / "custom" / "1" / "model.py", "class M: ...\n")
    write(copy / "custom" / "1" / "data" / "vocab.txt", "a\nb\n")
    assert ModelRepository([copy]).scan()["custom"][1].sha256 == first, "depends on content, not location"

    write(root / "custom" / "1" / "__pycache__" / "model.cpython-311.pyc", b"cache")
    write(root / "custom" / "1" / ".DS_Store", b"litter")
    assert ModelRepository([root]).scan()["custom"][1].sha256 == first

    (root / "custom" / "1" / "data" / "vocab.txt").rename(root / "custom" / "1" / "data" / "vocab2.txt")
    assert ModelRepository([root]).scan()["custom"][1].sha256 != first


def test_rescan_of_unchanged_folders_hashes_nothing(root: Path) -> None:
    repository = ModelRepository([root])
    first = repository.scan()
    assert repository.files_hashed == 4
    assert repository.scan() == first
    assert repository.files_hashed == 4

    target = root / "iris" / "2" / "model.joblib"
    target.write_bytes(b"iris v2, retrained")
    changed = repository.scan()
    assert repository.files_hashed == 5
    assert changed["iris"][2].sha256 != first["iris"][2].sha256
    assert changed["iris"][1] == first["iris"][1]

    stat = target.stat()
    target.write_bytes(b"iris v2, retrainee")  # same size: only mtime tells
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert repository.scan()["iris"][2].sha256 != changed["iris"][2].sha256
    assert repository.files_hashed == 6


def test_bad_entries_are_skipped_with_warnings(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(root / "bad name!" / "1" / "model.onnx", b"x")
    write(root / "iris" / "v3" / "model.joblib", b"x")
    write(root / "iris" / "03" / "model.joblib", b"x")
    write(root / "iris" / "0" / "model.joblib", b"x")
    (root / "iris" / "4").mkdir()
    write(root / "broken" / "1" / "model.onnx", b"x")
    write(root / "broken" / "model.yaml", "framework: [unclosed\n")
    write(root / "typo" / "1" / "model.onnx", b"x")
    write(root / "typo" / "model.yaml", "runtime-config: {}\n")
    write(root / "notmap" / "1" / "model.onnx", b"x")
    write(root / "notmap" / "model.yaml", "- a list\n")
    (root / "empty-model").mkdir()
    write(root / "README.md", "not a model\n")
    write(root / ".git" / "1" / "x", b"x")

    with caplog.at_level(logging.WARNING, logger="ferryman.registry.repository"):
        found = ModelRepository([root]).scan()
    assert sorted(found) == ["custom", "iris"]
    assert sorted(found["iris"]) == [1, 2]
    logged = messages(caplog)
    for fragment in [
        "invalid model name 'bad name!'",
        "iris/v3: version folders must be named by a positive integer",
        "iris/03: version folders must be named by a positive integer",
        "iris/0: version folders must be named by a positive integer",
        "iris/4: the folder has no files",
        "skipping model 'broken': cannot read",
        "skipping model 'typo':",
        "unknown keys ['runtime-config']",
        "skipping model 'notmap':",
        "empty-model has no version folders",
    ]:
        assert fragment in logged
    assert "README" not in logged
    assert ".git" not in logged


def test_warnings_are_logged_once_per_problem(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(root / "iris" / "v3" / "model.joblib", b"x")
    repository = ModelRepository([root])
    with caplog.at_level(logging.WARNING, logger="ferryman.registry.repository"):
        repository.scan()
        repository.scan()
    assert messages(caplog).count("iris/v3") == 1


def test_first_root_wins(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    second = tmp_path / "second"
    write(second / "iris" / "7" / "model.joblib", b"other iris")
    write(second / "extra" / "1" / "model.joblib", b"extra")
    with caplog.at_level(logging.WARNING, logger="ferryman.registry.repository"):
        found = ModelRepository([root, second]).scan()
    assert sorted(found["iris"]) == [1, 2]
    assert sorted(found) == ["custom", "extra", "iris"]
    assert f"model 'iris' is already served from {root}" in messages(caplog)


def test_missing_root_is_a_warning_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ferryman.registry.repository"):
        assert ModelRepository([tmp_path / "missing"]).scan() == {}
    assert "cannot be read" in messages(caplog)


def test_symlinked_files_are_followed(tmp_path: Path) -> None:
    # Kubernetes ConfigMap/Secret volumes expose files as symlinks into a hidden ``..data`` folder.
    root = tmp_path / "repo"
    real = write(root / "cfgmodel" / "1" / "..data" / "model.onnx", b"onnx bytes")
    (root / "cfgmodel" / "1" / "model.onnx").symlink_to(real)
    plain = tmp_path / "plain"
    write(plain / "cfgmodel" / "1" / "model.onnx", b"onnx bytes")
    linked = ModelRepository([root]).scan()["cfgmodel"][1].sha256
    assert linked == ModelRepository([plain]).scan()["cfgmodel"][1].sha256
