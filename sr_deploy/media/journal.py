"""The journal of a folder run: which outputs a run finished, so that the same command resumes.

A folder of a million images cannot rewrite a manifest after every file, so the journal is append-only
(JSON lines in ``OUTPUT/.srdeploy-run.jsonl``): a header naming the model and settings, then one line per
finished file with its input's size and modification time and its output's size, time stamp and hash. Outputs
are written whole or not at all (fsutil.atomic_path), so a listed output that is still what was written is
finished, and one that changed since (a user's edit) is left alone; a torn last
line (a crash while appending) is ignored. A journal of another model or settings is refused (``--restart``
or ``--overwrite`` discard it); it stays after a finished run, so that the same command again finds every
file done instead of refusing every output as existing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sr_deploy.errors import OutputError
from sr_deploy.fsutil import sha256_file

NAME = ".srdeploy-run.jsonl"
FORMAT = 1


class Journal:
    def __init__(self, dst: Path, key: dict) -> None:
        self.path = dst / NAME
        self.key = {"format": FORMAT, **key}
        self.finished: dict[str, dict] = {}
        self._f = None

    def open(self, *, restart: bool, take_over: bool = False) -> None:
        """Read what earlier runs finished; ``restart`` discards it, ``take_over`` (--overwrite) discards only
        a journal of another model or settings."""
        lines = []
        if self.path.exists():
            try:
                lines = self.path.read_text().splitlines()
                header = json.loads(lines[0]) if lines else None
            except (OSError, ValueError, UnicodeDecodeError):
                header = "unreadable"
            if header != self.key and not (restart or take_over):
                what = "an unreadable journal" if header == "unreadable" else "a run of another model or settings"
                raise OutputError(f"{self.path}: records {what}; pass --restart to discard it, or choose another "
                                  "output folder")
            if header != self.key or restart:
                lines = []
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                self.finished[rec["file"]] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not lines:
                self.path.write_text(json.dumps(self.key) + "\n")
            self._f = open(self.path, "a")
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write here ({exc.strerror or exc})") from exc

    def state(self, rel: str, src: Path, out: Path) -> str | None:
        """What an earlier run of this journal left of ``src`` → ``out``: None (not finished by it), "done"
        (neither changed since), "input changed" (a new input; the output, untouched, is this run's to
        replace), "output changed" (edited or replaced by someone since: not this run's to replace) or
        "output gone". An output whose time stamp moved is compared by its hash."""
        rec = self.finished.get(rel)
        if rec is None:
            return None
        try:
            st = src.stat()
        except OSError:
            return None
        try:
            ost = out.stat()
        except OSError:
            return "output gone"
        same_out = rec.get("out_bytes") == ost.st_size and (
            rec.get("out_mtime_ns") in (None, ost.st_mtime_ns)  # journals before the time stamp: size alone
            or rec.get("out_sha256") == sha256_file(out))
        if not same_out:
            return "output changed"
        return "done" if rec.get("bytes") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns else "input changed"

    def record(self, rel: str, src: Path, out: Path) -> None:
        st, ost = src.stat(), out.stat()
        self._f.write(json.dumps({"file": rel, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                                  "out_bytes": ost.st_size, "out_mtime_ns": ost.st_mtime_ns,
                                  "out_sha256": sha256_file(out)}) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self, *, remove: bool) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if remove:
            self.path.unlink(missing_ok=True)
