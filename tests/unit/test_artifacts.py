"""The content-addressed artifact store: staging, publishing, verification, unpacking."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from ferryman.errors import InvalidInput, ModelFailed, PayloadTooLarge
from ferryman.registry.artifacts import ArtifactStore, StagedArtifact


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def staging_files(store: ArtifactStore) -> list[Path]:
    staging = store.root / "staging"
    return sorted(staging.iterdir()) if staging.exists() else []


def make_folder(root: Path) -> Path:
    folder = root / "custom-model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.py").write_text("print('hi')\n")
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 100)
    return folder


class FailingReader(io.RawIOBase):
    """Yields some bytes, then fails like a dropped client connection."""

    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.calls += 1
        if self.calls > 2:
            raise ConnectionResetError("client went away")
        buffer[:10] = b"x" * 10
        return 10


def test_stage_hashes_and_publish_moves(store: ArtifactStore) -> None:
    data = b"model bytes" * 1000
    staged = store.stage(io.BytesIO(data), "model.onnx", max_bytes=1 << 20)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size == len(data)
    assert staged.filename == "model.onnx"
    assert staged.path.parent == store.root / "staging"
    assert staged.path.read_bytes() == data

    store.publish(staged)
    blob = store.root / "blobs" / staged.sha256 / "model.onnx"
    assert blob.read_bytes() == data
    assert store.blob_path(staged.sha256, "model.onnx") == blob
    assert staging_files(store) == []


def test_stage_over_limit_raises_and_leaves_nothing(store: ArtifactStore) -> None:
    with pytest.raises(PayloadTooLarge, match=r"artifact big.bin exceeds the upload limit of 1000 bytes"):
        store.stage(io.BytesIO(b"x" * 1001), "big.bin", max_bytes=1000)
    assert staging_files(store) == []


def test_stage_exactly_at_limit_is_accepted(store: ArtifactStore) -> None:
    assert store.stage(io.BytesIO(b"x" * 1000), "ok.bin", max_bytes=1000).size == 1000


def test_stage_removes_partial_file_when_source_fails(store: ArtifactStore) -> None:
    with pytest.raises(ConnectionResetError):
        store.stage(io.BufferedReader(FailingReader(), buffer_size=10), "m.bin", max_bytes=1 << 20)
    assert staging_files(store) == []


@pytest.mark.parametrize("filename", ["", ".", "..", "a/b", "../evil", "a\\b", "x..y", "nul\x00"])
def test_stage_refuses_non_plain_filenames(store: ArtifactStore, filename: str) -> None:
    with pytest.raises(InvalidInput, match="invalid artifact filename"):
        store.stage(io.BytesIO(b"x"), filename, max_bytes=10)
    assert staging_files(store) == []


def test_publish_of_existing_content_drops_the_staged_copy(store: ArtifactStore) -> None:
    first = store.stage(io.BytesIO(b"same"), "m.bin", max_bytes=10)
    store.publish(first)
    second = store.stage(io.BytesIO(b"same"), "m.bin", max_bytes=10)
    store.publish(second)
    assert not second.path.exists()
    assert store.blob_path(first.sha256, "m.bin").read_bytes() == b"same"


def test_materialize_file_returns_verified_blob(store: ArtifactStore) -> None:
    staged = store.stage(io.BytesIO(b"weights"), "model.joblib", max_bytes=100)
    store.publish(staged)
    path = store.materialize(staged.sha256, "model.joblib")
    assert path.read_bytes() == b"weights"


def test_materialize_detects_a_tampered_blob(store: ArtifactStore) -> None:
    staged = store.stage(io.BytesIO(b"weights" * 100), "model.onnx", max_bytes=10_000)
    store.publish(staged)
    blob = store.blob_path(staged.sha256, "model.onnx")
    data = bytearray(blob.read_bytes())
    data[123] ^= 0x01
    blob.write_bytes(bytes(data))
    actual = hashlib.sha256(data).hexdigest()
    with pytest.raises(ModelFailed) as caught:
        store.materialize(staged.sha256, "model.onnx")
    assert str(caught.value) == (
        f"artifact model.onnx failed verification: expected sha256 {staged.sha256}, got {actual}"
    )


def test_materialize_reports_a_missing_blob(store: ArtifactStore) -> None:
    with pytest.raises(ModelFailed, match=r"artifact model.onnx failed verification: .* the file is missing"):
        store.materialize("0" * 64, "model.onnx")


def test_stage_path_packs_a_folder_deterministically(store: ArtifactStore, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    first = store.stage_path(folder)
    second = store.stage_path(folder)
    assert first.filename == "custom-model.tar"
    assert (first.sha256, first.size) == (second.sha256, second.size)
    assert first.path != second.path
    assert hashlib.sha256(first.path.read_bytes()).hexdigest() == first.sha256


def test_stage_path_stages_a_file_as_is(store: ArtifactStore, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    staged = store.stage_path(path)
    assert (staged.filename, staged.size, staged.path.read_bytes()) == ("model.onnx", 4, b"onnx")


def test_stage_path_refuses_missing_path(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file or folder"):
        store.stage_path(tmp_path / "nope")


def test_materialize_unpacks_a_folder_once(store: ArtifactStore, tmp_path: Path) -> None:
    staged = store.stage_path(make_folder(tmp_path))
    store.publish(staged)
    folder = store.materialize(staged.sha256, staged.filename)
    assert folder == store.root / "unpacked" / staged.sha256
    assert (folder / "model.py").read_text() == "print('hi')\n"
    assert (folder / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 100
    marker = folder / "marker"
    marker.write_text("kept")
    assert store.materialize(staged.sha256, staged.filename) == folder
    assert marker.exists(), "an existing extraction is reused, not redone"
    assert [p.name for p in (store.root / "unpacked").iterdir()] == [staged.sha256]


def test_materialize_refuses_an_unsafe_archive(store: ArtifactStore, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    staged = store.stage(io.BytesIO(buffer.getvalue()), "evil.tar", max_bytes=1 << 20)
    store.publish(staged)
    with pytest.raises(ModelFailed, match=r"artifact evil.tar cannot be unpacked: .*'\.\./escape'"):
        store.materialize(staged.sha256, "evil.tar")
    assert not (store.root / "unpacked" / staged.sha256).exists()
    assert not (store.root / "escape").exists()
    assert [p for p in (store.root / "unpacked").iterdir()] == []


def test_materialize_enforces_the_unpacked_limit(store: ArtifactStore, tmp_path: Path) -> None:
    staged = store.stage_path(make_folder(tmp_path))
    store.publish(staged)
    with pytest.raises(ModelFailed, match="unpacks to more than 100 bytes"):
        store.materialize(staged.sha256, staged.filename, max_unpacked_bytes=100)


def test_delete_removes_blob_and_unpacked_folder(store: ArtifactStore, tmp_path: Path) -> None:
    staged = store.stage_path(make_folder(tmp_path))
    store.publish(staged)
    store.materialize(staged.sha256, staged.filename)
    store.delete(staged.sha256, staged.filename)
    assert not (store.root / "blobs" / staged.sha256).exists()
    assert list((store.root / "unpacked").iterdir()) == []


def test_delete_keeps_other_names_of_the_same_content(store: ArtifactStore) -> None:
    a = store.stage(io.BytesIO(b"same"), "a.bin", max_bytes=10)
    b = store.stage(io.BytesIO(b"same"), "b.bin", max_bytes=10)
    store.publish(a)
    store.publish(b)
    store.delete(a.sha256, "a.bin")
    assert store.materialize(b.sha256, "b.bin").read_bytes() == b"same"


def test_sweep_staging_removes_leftovers(store: ArtifactStore) -> None:
    assert store.sweep_staging() == 0
    staged = store.stage(io.BytesIO(b"left behind"), "m.bin", max_bytes=100)
    (store.root / "staging" / "inspect-abc").mkdir()
    (store.root / "unpacked" / ".tmp-123").mkdir(parents=True)
    (store.root / "unpacked" / ("a" * 64)).mkdir()
    assert store.sweep_staging() == 3
    assert staging_files(store) == []
    assert not staged.path.exists()
    assert [p.name for p in (store.root / "unpacked").iterdir()] == ["a" * 64]


def test_discard_removes_the_staged_file(store: ArtifactStore) -> None:
    staged = store.stage(io.BytesIO(b"x"), "m.bin", max_bytes=10)
    store.discard(staged)
    store.discard(staged)
    assert staging_files(store) == []
    assert isinstance(staged, StagedArtifact)
