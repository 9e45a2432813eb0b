"""Atomic writes and file hashing."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import logging
import os
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

from sr_deploy.errors import OutputError

log = logging.getLogger(__name__)


def check_destination(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool,
                      folder: bool = False) -> None:
    """The output checks a run makes before any work: a file never replaces its input, nor an existing
    output without ``overwrite``; an output folder is neither the input folder nor inside it (an existing
    output folder is how a folder run resumes)."""
    s, d = Path(src).resolve(), Path(dst).resolve()
    if folder:
        if d == s or d.is_relative_to(s):
            raise OutputError(f"{dst}: output folder must not be the input folder or inside it")
        return
    if d == s:
        raise OutputError(f"{dst}: output path is the input; choose another")
    if Path(dst).exists() and not overwrite:
        raise OutputError(f"{dst}: output exists; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed
    and nothing appears under the final name.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: output exists; pass --overwrite to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.{os.getpid()}-", suffix=f".part{target.suffix}",
                                   dir=target.parent)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write here ({exc.strerror or exc})") from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if overwrite:
            os.replace(tmp_path, target)
        else:
            _publish_new(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and (exc.errno in _WRITE_ERRNOS or exc.filename in (str(tmp_path), tmp_path)):
            # the writer's own error (onnx.save, a codec) names no file or the temporary one: name the target
            raise OutputError(f"{target}: write failed ({exc.strerror or exc})") from exc
        raise


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _remove_stale(target: Path) -> list[Path]:
    """Remove temporary files for ``target`` left by a run that was killed (SIGKILL, power loss): their
    name carries the writer's process id, and a file whose process no longer exists is stale. Files of a
    live writer (another run on this machine) are left alone."""
    removed = []
    for part in target.parent.glob(f".{glob.escape(target.stem)}.*.part{glob.escape(target.suffix)}"):
        pid_text = part.name[len(target.stem) + 2:].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            part.unlink()
            removed.append(part)
    if removed:
        log.warning("note: removed %d temporary file(s) of an interrupted run beside %s", len(removed), target)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _publish_new(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target`` only if ``target`` still does not exist: a hard link fails
    atomically when the name is taken, so of two runs writing the same output only one succeeds."""
    try:
        os.link(tmp, target)
    except FileExistsError as exc:
        raise OutputError(f"{target}: output appeared while this run was writing it (another run?); "
                          f"kept it; pass --overwrite to replace it") from exc
    except OSError:  # no hard links on this filesystem: check, then rename (a small window remains)
        if target.exists():
            raise OutputError(f"{target}: output appeared while this run was writing it; pass --overwrite to replace it")
        os.replace(tmp, target)
        return
    tmp.unlink()


def cache_root() -> Path:
    """The one cache folder (exported ONNX, uint8-I/O graphs, OpenVINO blobs, TensorRT engines and timing
    caches): ``$SRDEPLOY_CACHE`` or ``~/.cache/srdeploy``."""
    return Path(os.environ.get("SRDEPLOY_CACHE", Path.home() / ".cache" / "srdeploy"))


def seal(entry: str | os.PathLike) -> None:
    """Record a cache entry's SHA-256 beside it (``ENTRY.sha256``), once the entry is written whole."""
    entry = Path(entry)
    with atomic_path(entry.with_name(entry.name + ".sha256")) as tmp:
        tmp.write_text(sha256_file(entry) + "\n")


def is_sealed(entry: str | os.PathLike) -> bool:
    """True when a cache entry exists and is still what srdeploy wrote (its SHA-256 is the one recorded by
    ``seal``). An entry truncated by a full disk, damaged, replaced by another file, or written before seals
    existed is not: the caller makes it again (atomically, over it), with a note naming it."""
    entry = Path(entry)
    if not entry.is_file():
        return False
    try:
        ok = entry.with_name(entry.name + ".sha256").read_text().strip() == sha256_file(entry)
    except OSError:
        ok = False
    if not ok:
        log.warning("note: the cache entry %s is not what srdeploy wrote (truncated, damaged or replaced "
                    "since, or unsealed): making it again", entry)
    return ok


# One read per file version and process: a run names its model to the export cache, the tune cache and the
# auto choice, and checks the cached graphs' seals, so a 67 MB community model was read 12 times before its
# first frame (0.3-0.6 s). A digest is reused only while the file's identity, size, mtime and ctime are
# unchanged, and only for files last changed more than RACY_NS before they were read (git's "racy" rule:
# within a timestamp's granularity, a rewrite of the same size could leave all four unchanged).
_DIGESTS: OrderedDict[tuple, str] = OrderedDict()
_DIGESTS_KEPT = 64
RACY_NS = 2_000_000_000


def _signature(path: str | os.PathLike) -> tuple[int, int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def sha256_file(path: str | os.PathLike) -> str:
    sig = _signature(path)
    digest = _DIGESTS.get(sig)
    if digest is not None:
        _DIGESTS.move_to_end(sig)
        return digest
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if time.time_ns() - max(sig[3], sig[4]) > RACY_NS:
        _DIGESTS[sig] = digest
        while len(_DIGESTS) > _DIGESTS_KEPT:
            _DIGESTS.popitem(last=False)
    return digest


def model_digest(path: str | os.PathLike) -> str:
    """sha256 naming a model file's content: an ncnn ``.param`` together with the ``.bin`` beside it
    (either one changed is another model), any other file by itself."""
    path = Path(path)
    binf = path.with_suffix(".bin")
    if path.suffix.lower() != ".param" or not binf.is_file():
        return sha256_file(path)
    return hashlib.sha256((sha256_file(path) + sha256_file(binf)).encode()).hexdigest()
