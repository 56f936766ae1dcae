"""Source digests are remembered by (path, size, mtime_ns, inode): a resume reads no video,
and a file changed in any of them is hashed again, so changed content is still caught."""

import hashlib
import os
import shutil

import pytest

from taskmem_lab import paths
from taskmem_lab.backends.fake import FakeModel
from taskmem_lab.errors import StoreError
from taskmem_lab.media.stream import load_stream
from taskmem_lab.memorize import memorize
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import STAMP_FIELDS, file_sha256, file_stamp, remember_sha256
from taskmem_lab.store import RunDir

PARAMS = MemorizeParams(interval=5, context_duration=10, frame_fps=1, end=10)
WRONG = "0" * 64  # a digest no file here has: a recalled digest is recognisable


@pytest.fixture(autouse=True)
def _fresh_digests(monkeypatch):
    monkeypatch.setattr(paths, "_DIGESTS", {})


def _real(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_matching_stamp_is_trusted_and_any_change_rehashes(tmp_path):
    f = tmp_path / "v.bin"
    f.write_bytes(b"a" * 1000)
    recorded = {**file_stamp(f), "sha256": WRONG}
    assert remember_sha256(f, recorded) and file_sha256(f) == WRONG  # not read
    assert not remember_sha256(f, {"sha256": _real(f)})  # no stamp (an older manifest)
    st = os.stat(f)
    # the mtime moves
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert not remember_sha256(f, recorded) and file_sha256(f) == _real(f)
    # same size, content changed, mtime set back, and moved over by rename: a new inode
    other = tmp_path / "other.bin"
    other.write_bytes(b"b" * 1000)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, f)
    now = file_stamp(f)
    assert (now["size"], now["mtime_ns"]) == (recorded["size"], recorded["mtime_ns"])
    assert now["inode"] != recorded["inode"]
    assert not remember_sha256(f, recorded) and file_sha256(f) == _real(f) == _real(f)
    # the size changes
    stamped = {**file_stamp(f), "sha256": WRONG}
    with open(f, "ab") as fh:
        fh.write(b"c")
    assert not remember_sha256(f, stamped) and file_sha256(f) == _real(f)


def test_a_resume_reads_no_source_and_records_stamps(media, tmp_path, monkeypatch):
    stream = load_stream(media["silent"])
    run = memorize(stream, FakeModel(), PARAMS, str(tmp_path / "run"), progress=False)
    (source,) = run.manifest()["source"]
    assert {k: source[k] for k in STAMP_FIELDS} == file_stamp(media["silent"])
    monkeypatch.setattr(paths, "_DIGESTS", {})  # a new process
    monkeypatch.setattr(paths, "_read_sha256", _no_hashing)
    memorize(stream, FakeModel(), PARAMS, str(tmp_path / "run"), progress=False)


def _no_hashing(*args: object) -> None:
    raise AssertionError("a source was hashed again although its stamp matched")


def test_same_size_content_with_the_old_mtime_is_refused(media, tmp_path):
    video = tmp_path / "clip.mp4"
    shutil.copy(media["silent"], video)
    memorize(load_stream(video), FakeModel(), PARAMS, str(tmp_path / "run"), progress=False)
    st = os.stat(video)
    # another video of exactly the same size, written beside it and renamed over it, with the
    # old mtime: only the inode tells, and it is enough
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF  # in the middle of the coded frames
    edited = tmp_path / "edited.mp4"
    edited.write_bytes(bytes(data))
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(edited, video)
    with pytest.raises(StoreError, match=r"source file 0 \(clip\.mp4\) has a different sha256"):
        memorize(load_stream(video), FakeModel(), PARAMS, str(tmp_path / "run"), progress=False)


def test_a_touched_file_with_the_same_bytes_resumes_quietly(media, tmp_path, caplog):
    video = tmp_path / "clip.mp4"
    shutil.copy(media["silent"], video)
    memorize(load_stream(video), FakeModel(), PARAMS, str(tmp_path / "run"), progress=False)
    os.utime(video)  # touched: a new mtime, the same bytes
    memorize(load_stream(video), FakeModel(), PARAMS, str(tmp_path / "run"), progress=False)
    (source,) = RunDir(tmp_path / "run").manifest()["source"]
    assert source["mtime_ns"] == file_stamp(video)["mtime_ns"]  # the new stamp is recorded
    assert "moved" not in caplog.text
