"""File digests: read once per file version and process, never a stale one."""

import hashlib
import os
import time

import pytest

from sr_deploy import fsutil


@pytest.fixture
def reads(monkeypatch):
    """The files sha256_file opened, in order (an empty memo to begin with)."""
    monkeypatch.setattr(fsutil, "_DIGESTS", type(fsutil._DIGESTS)())
    opened = []

    def counting_open(path, *a, **kw):
        opened.append(os.fspath(path))
        return open(path, *a, **kw)

    monkeypatch.setattr(fsutil, "open", counting_open, raising=False)
    return opened


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_unchanged_file_is_read_once_and_a_changed_one_again(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(fsutil, "RACY_NS", 0)  # every file counts as settled
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a" * 1000)
    assert fsutil.sha256_file(f) == fsutil.sha256_file(tmp_path / "." / "model.onnx") == _sha(b"a" * 1000)
    assert len(reads) == 1
    f.write_bytes(b"b" * 1000)  # the same size, in place
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert fsutil.sha256_file(f) == _sha(b"b" * 1000) and len(reads) == 2
    # an ncnn model is its .param and .bin together: each read once
    param, binf = tmp_path / "m.param", tmp_path / "m.bin"
    param.write_bytes(b"p")
    binf.write_bytes(b"w")
    assert fsutil.model_digest(param) == fsutil.model_digest(param) and len(reads) == 4


def test_a_file_changed_in_the_racy_window_is_read_again(tmp_path, reads, monkeypatch):
    """With coarse timestamps, a rewrite of the same size just after a read can leave the file's size,
    mtime and ctime as they were: a digest of a file that had changed just before it was read is not kept."""
    f = tmp_path / "segment.mov"
    f.write_bytes(b"first!")
    now = time.time_ns()
    monkeypatch.setattr(fsutil, "_signature", lambda path: (1, 2, 6, now, now))  # unchanged, as seen by stat
    assert fsutil.sha256_file(f) == _sha(b"first!")
    f.write_bytes(b"second")
    assert fsutil.sha256_file(f) == _sha(b"second") and len(reads) == 2


def test_the_memo_is_bounded(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(fsutil, "RACY_NS", 0)
    for i in range(fsutil._DIGESTS_KEPT + 10):
        f = tmp_path / f"out{i}.png"
        f.write_bytes(str(i).encode())
        fsutil.sha256_file(f)
    assert len(fsutil._DIGESTS) == fsutil._DIGESTS_KEPT
    oldest_kept = tmp_path / "out10.png"
    fsutil.sha256_file(oldest_kept)  # kept: not read, and now the most recently used
    fsutil.sha256_file(tmp_path / "out0.png")  # let go: read again, and the least recently used goes (out11)
    fsutil.sha256_file(oldest_kept)
    assert len(reads) == fsutil._DIGESTS_KEPT + 11
