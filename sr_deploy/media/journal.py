"""The journal of a folder run: which outputs a run finished, so that the same command resumes.

A folder of a million images cannot rewrite a manifest after every file, so the journal is append-only
(JSON lines in ``OUTPUT/.srdeploy-run.jsonl``): a header naming the model and settings, then one line per
finished file with its input's size and modification time and its output's size. Outputs are written whole
or not at all (fsutil.atomic_path), so a listed output that still has its size is finished; a torn last
line (a crash while appending) is ignored. A journal of another model or settings is refused (``--restart``
discards it); it is removed when a run ends with every file done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sr_deploy.errors import OutputError

NAME = ".srdeploy-run.jsonl"
FORMAT = 1


class Journal:
    def __init__(self, dst: Path, key: dict) -> None:
        self.path = dst / NAME
        self.key = {"format": FORMAT, **key}
        self.finished: dict[str, dict] = {}
        self._f = None

    def open(self, *, restart: bool) -> None:
        lines = []
        if self.path.exists():
            try:
                lines = self.path.read_text().splitlines()
                header = json.loads(lines[0]) if lines else None
            except (OSError, ValueError, UnicodeDecodeError):
                header = "unreadable"
            if header != self.key and not restart:
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

    def done_before(self, rel: str, src: Path, out: Path) -> bool:
        """True when an earlier run of this journal finished ``src`` into ``out`` and neither changed since."""
        rec = self.finished.get(rel)
        if rec is None:
            return False
        try:
            st, ost = src.stat(), out.stat()
        except OSError:
            return False
        return rec.get("bytes") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns and rec.get("out_bytes") == ost.st_size

    def record(self, rel: str, src: Path, out: Path) -> None:
        st = src.stat()
        self._f.write(json.dumps({"file": rel, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                                  "out_bytes": out.stat().st_size}) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self, *, remove: bool) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if remove:
            self.path.unlink(missing_ok=True)
