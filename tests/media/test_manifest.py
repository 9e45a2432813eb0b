"""The bookkeeping of resumable runs, without a video or a model: a video run's segment folder and manifest
(media/segments.py ``Parts``) and a folder run's journal (media/journal.py). What is reused, what is done
again, what is refused and what is said; fast enough for mutation testing (benchmarks/results/mutation.md)."""

from __future__ import annotations

import json
import os
from fractions import Fraction

import pytest

from sr_deploy.errors import OutputError
from sr_deploy.fsutil import sha256_file
from sr_deploy.media.journal import NAME, Journal
from sr_deploy.media.segments import Parts, Plan, Segment, _differs

KEY = {"format": 1, "srdeploy": "1.0", "input": {"name": "in.mp4", "bytes": 10, "sha256": "ab"}, "model": "m",
       "codec": "libx264", "settings": {"crf": 18}, "segment_seconds": 10.0}


def test_the_manifest_key_is_the_input_the_model_and_every_setting(tmp_path):
    """Its layout is a file format: a manifest written by one run is read by the next (MANIFEST_FORMAT)."""
    from types import SimpleNamespace

    from sr_deploy import __version__
    from sr_deploy.media.segments import manifest_key

    src = tmp_path / "in.mp4"
    src.write_bytes(b"video")
    names = ("crf", "preset", "pix_fmt", "bitrate", "tile", "start", "duration", "max_frames", "deinterlace",
             "outscale", "b_frames", "yuv")
    options = SimpleNamespace(**{n: f"{n}-value" for n in names}, unrelated="not a setting")
    assert manifest_key(src, "model m", options, "libx264", 4.0) == {
        "format": 1, "srdeploy": __version__,
        "input": {"name": "in.mp4", "bytes": 5, "sha256": sha256_file(src)},
        "model": "model m", "codec": "libx264", "settings": {n: f"{n}-value" for n in names}, "segment_seconds": 4.0}
    other = tmp_path / "other.mp4"
    other.write_bytes(b"video!")
    key = manifest_key(src, "model m", options, "libx264", 4.0)
    assert _differs(key, manifest_key(other, "model m", options, "libx264", 4.0)).startswith("another input")
    assert _differs(key, manifest_key(src, "model n", options, "libx264", 4.0)).startswith("another model")
    assert _differs(key, manifest_key(src, "model m", options, "libx265", 4.0)) == "other settings"


def _plan(n=3):
    return Plan([Segment(i, 25 * i, 25, 1000 * i or None, 1000 * (i + 1) if i + 1 < n else None) for i in range(n)],
                Fraction(1, 1000), 25 * n)


class Said(list):
    def __call__(self, line):
        self.append(line)


def _finish(parts, index, body=b"segment"):
    data = parts.tmp_path(index)
    data.write_bytes(body + bytes([index]))
    parts.record(index, 25, data)
    assert not data.exists()
    return parts.path(index)


def test_a_new_run_locks_its_folder_and_writes_its_manifest(tmp_path):
    parts = Parts(tmp_path / "out.mp4")
    assert parts.dir == tmp_path / "out.mp4.segments"
    assert parts.open(KEY, _plan(), restart=False, say=Said()) == 0
    body = json.loads(parts.manifest.read_text())
    assert body == {"key": KEY, "boundaries": [[None, 1000, 25], [1000, 2000, 25], [2000, None, 25]], "segments": {}}
    assert parts.path(3).name == "seg_00003.mov" and parts.tmp_path(3).name == "seg_00003.tmp.mov"
    with pytest.raises(OutputError, match="out.mp4.segments: another srdeploy run is writing this output now"):
        Parts(tmp_path / "out.mp4").open(KEY, _plan(), restart=False, say=Said())
    parts.close(remove=False)
    assert parts.dir.is_dir()
    other = Parts(tmp_path / "out.mp4")
    other.open(KEY, _plan(), restart=False, say=Said())  # the lock went with close
    other.close(remove=True)
    assert not parts.dir.exists()


def test_finished_segments_are_listed_and_reused_by_the_same_run(tmp_path):
    parts = Parts(tmp_path / "out.mp4")
    parts.open(KEY, _plan(), restart=False, say=Said())
    first, last = _finish(parts, 0), _finish(parts, 2)
    listed = json.loads(parts.manifest.read_text())["segments"]
    assert listed == {"0": {"file": "seg_00000.mov", "bytes": 8, "sha256": sha256_file(first), "frames": 25},
                      "2": {"file": "seg_00002.mov", "bytes": 8, "sha256": sha256_file(last), "frames": 25}}
    parts.close(remove=False)
    (parts.dir / "seg_00001.tmp.mov").write_bytes(b"half written")  # a crash mid-segment
    again, said = Parts(tmp_path / "out.mp4"), Said()
    assert again.open(KEY, _plan(), restart=False, say=said) == 2
    assert sorted(again.done) == [0, 2] and said == []
    assert not (parts.dir / "seg_00001.tmp.mov").exists()
    assert first.read_bytes() == b"segment\x00"


@pytest.mark.parametrize("damage, why", [
    ("same size, other bytes", "damaged"),
    ("shorter", "damaged"),
    ("gone", "missing"),
    ("no frames", "damaged"),
    ("not a record", "damaged"),
    ("no frame count", "damaged"),
    ("a frame count that is no number", "damaged"),
    ("past the plan", "past"),
])
def test_a_damaged_or_missing_segment_is_done_again(tmp_path, damage, why):
    parts = Parts(tmp_path / "out.mp4")
    parts.open(KEY, _plan(), restart=False, say=Said())
    keep, hit = _finish(parts, 0), _finish(parts, 1)
    parts.close(remove=False)
    body = json.loads(parts.manifest.read_text())
    plan = _plan()
    if damage == "same size, other bytes":
        hit.write_bytes(b"SEGMENT\x01")
    elif damage == "shorter":
        hit.write_bytes(b"seg")
    elif damage == "gone":
        hit.unlink()
    elif damage == "no frames":
        body["segments"]["1"]["frames"] = 0
    elif damage == "no frame count":
        del body["segments"]["1"]["frames"]
    elif damage == "a frame count that is no number":
        body["segments"]["1"]["frames"] = "many"
    elif damage == "not a record":
        body["segments"]["1"] = "seg_00001.mov"
    else:  # the same manifest read with a plan of one segment: a different run, refused (below), so
        plan = Plan(_plan().segments[:1], Fraction(1, 1000), 25)  # only the record is checked here
        body["boundaries"] = plan.boundaries()
    parts.manifest.write_text(json.dumps(body))
    again, said = Parts(tmp_path / "out.mp4"), Said()
    assert again.open(KEY, plan, restart=False, say=said) == 1
    assert sorted(again.done) == [0] and keep.exists() and not hit.exists()
    assert said == ["note: segment 1 (seg_00001.mov) is missing or damaged: it is done again"], why
    assert json.loads(again.manifest.read_text())["segments"] == {"0": body["segments"]["0"]}


def test_a_segment_of_one_frame_is_reused(tmp_path):
    parts = Parts(tmp_path / "out.mp4")
    parts.open(KEY, _plan(), restart=False, say=Said())
    data = parts.tmp_path(0)
    data.write_bytes(b"one frame")
    parts.record(0, 1, data)
    parts.close(remove=False)
    assert Parts(tmp_path / "out.mp4").open(KEY, _plan(), restart=False, say=Said()) == 1


@pytest.mark.parametrize("entry", ["x", "-1", "1.5"])
def test_a_manifest_entry_that_is_no_segment_number_is_said_and_ignored(tmp_path, entry):
    parts = Parts(tmp_path / "out.mp4")
    parts.open(KEY, _plan(), restart=False, say=Said())
    _finish(parts, 0)
    parts.close(remove=False)
    body = json.loads(parts.manifest.read_text())
    body["segments"] = {entry: body["segments"]["0"], **body["segments"]}  # listed first: the rest still read
    parts.manifest.write_text(json.dumps(body))
    again, said = Parts(tmp_path / "out.mp4"), Said()
    assert again.open(KEY, _plan(), restart=False, say=said) == 1
    assert said == [f"note: manifest.json lists {entry!r}, which is no segment number: ignored"]


@pytest.mark.parametrize("change, what", [
    ({"input": {"name": "in.mp4", "bytes": 11, "sha256": "cd"}}, "an unfinished run of another input file (or this "
                                                                 "one, changed)"),
    ({"model": "m2"}, "an unfinished run of another model, backend or precision"),
    ({"srdeploy": "0.9"}, "an unfinished run of srdeploy 1.0"),
    ({"format": 2}, "an unfinished run of srdeploy 1.0"),
    ({"settings": {"crf": 20}}, "an unfinished run of other settings"),
    ({"codec": "libx265"}, "an unfinished run of other settings"),
    ({}, "an unfinished run of other settings"),  # same key, other cuts
])
def test_a_manifest_of_another_run_is_refused_and_kept_unless_restarted(tmp_path, change, what):
    parts = Parts(tmp_path / "out.mp4")
    parts.open(KEY, _plan(), restart=False, say=Said())
    seg = _finish(parts, 0)
    parts.close(remove=False)
    before = parts.manifest.read_text()
    plan = _plan(3 if change else 4)
    with pytest.raises(OutputError) as exc:
        Parts(tmp_path / "out.mp4").open({**KEY, **change}, plan, restart=False, say=Said())
    assert str(exc.value) == (f"{parts.dir}: holds {what}; pass --restart to discard it, or choose another output")
    assert parts.manifest.read_text() == before and seg.exists()
    again = Parts(tmp_path / "out.mp4")  # the refused run let go of the folder's lock (it used to keep it)
    assert again.open({**KEY, **change}, plan, restart=True, say=Said()) == 0
    assert not seg.exists() and (parts.dir / "lock").exists()
    assert json.loads(again.manifest.read_text()) == {"key": {**KEY, **change}, "boundaries": plan.boundaries(),
                                                      "segments": {}}


@pytest.mark.parametrize("text", ["{not json", "[]", '{"key": {}, "segments": []}', "\udcff"])
def test_an_unreadable_manifest_is_refused_unless_restarted(tmp_path, text):
    parts = Parts(tmp_path / "out.mp4")
    parts.dir.mkdir()
    (parts.dir / "sub").mkdir()
    parts.manifest.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(OutputError, match="holds an unreadable manifest; pass --restart"):
        parts.open(KEY, _plan(), restart=False, say=Said())
    assert parts.open(KEY, _plan(), restart=True, say=Said()) == 0
    assert sorted(p.name for p in parts.dir.iterdir()) == ["lock", "manifest.json"]


def test_a_restart_discards_even_a_matching_manifest(tmp_path):
    parts = Parts(tmp_path / "out.mp4")
    parts.open(KEY, _plan(), restart=False, say=Said())
    seg = _finish(parts, 1)
    parts.close(remove=False)
    again = Parts(tmp_path / "out.mp4")
    assert again.open(KEY, _plan(), restart=True, say=Said()) == 0 and again.done == {} and not seg.exists()


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError) as exc:
        Parts(tmp_path / "file" / "out.mp4").open(KEY, _plan(), restart=False, say=Said())
    assert str(exc.value) == f"{tmp_path}/file/out.mp4.segments: cannot write here (Not a directory)"


def test_an_output_in_a_folder_not_made_yet_gets_its_segment_folder(tmp_path):
    parts = Parts(tmp_path / "new" / "deeper" / "out.mp4")
    assert parts.open(KEY, _plan(), restart=False, say=Said()) == 0 and parts.manifest.exists()
    parts.close(remove=True)
    parts.close(remove=True)  # twice: nothing left to close or remove
    Parts(tmp_path / "never-opened.mp4").close(remove=False)


def test_a_run_refused_because_another_holds_the_folder_can_still_be_closed(tmp_path):
    holder = Parts(tmp_path / "out.mp4")
    holder.open(KEY, _plan(), restart=False, say=Said())
    refused = Parts(tmp_path / "out.mp4")
    with pytest.raises(OutputError, match="another srdeploy run"):
        refused.open(KEY, _plan(), restart=False, say=Said())
    refused.close(remove=False)
    holder.close(remove=False)


def test_what_differs_is_named_input_first():
    assert _differs(KEY, {**KEY, "model": "x", "input": {}}).startswith("another input")
    assert _differs(KEY, {**KEY, "model": "x", "srdeploy": "2"}) == "another model, backend or precision"
    assert _differs({}, KEY) == "another input file (or this one, changed)"


# ---- the journal of a folder run


def _files(tmp_path, name="a.png"):
    src, out = tmp_path / "in" / name, tmp_path / "out" / name
    src.parent.mkdir(exist_ok=True)
    out.parent.mkdir(exist_ok=True)
    src.write_bytes(b"input")
    out.write_bytes(b"output")
    return src, out


def _journal(tmp_path, key=None, **kw):
    j = Journal(tmp_path / "out", key or {"model": "m"})
    j.open(restart=kw.pop("restart", False), **kw)
    return j


def test_a_new_journal_starts_with_its_key_and_lists_each_finished_file(tmp_path):
    src, out = _files(tmp_path)
    j = _journal(tmp_path)
    assert (tmp_path / "out" / NAME).read_text() == '{"format": 1, "model": "m"}\n'
    assert j.state("a.png", src, out) is None
    j.record("a.png", src, out)
    j.close(remove=False)
    line = json.loads((tmp_path / "out" / NAME).read_text().splitlines()[1])
    st, ost = src.stat(), out.stat()
    assert line == {"file": "a.png", "bytes": 5, "mtime_ns": st.st_mtime_ns, "out_bytes": 6,
                    "out_mtime_ns": ost.st_mtime_ns, "out_sha256": sha256_file(out)}
    assert _journal(tmp_path).state("a.png", src, out) == "done"


def test_the_state_of_a_listed_file(tmp_path):
    src, out = _files(tmp_path)
    j = _journal(tmp_path)
    j.record("a.png", src, out)
    j.close(remove=False)
    j = _journal(tmp_path)
    assert j.state("b.png", src, out) is None  # not this journal's
    os.utime(out, ns=(1, 1))  # touched, same bytes: compared by hash
    assert j.state("a.png", src, out) == "done"
    out.write_bytes(b"OUTPUT")  # edited, same size
    assert j.state("a.png", src, out) == "output changed"
    out.write_bytes(b"out")
    assert j.state("a.png", src, out) == "output changed"
    out.write_bytes(b"output")
    os.utime(src, ns=(2, 2))
    assert j.state("a.png", src, out) == "input changed"
    src.write_bytes(b"input2")
    assert j.state("a.png", src, out) == "input changed"
    out.unlink()
    assert j.state("a.png", src, out) == "output gone"
    src.unlink()
    assert j.state("a.png", src, out) is None


def test_a_journal_from_before_output_time_stamps_compares_the_size_alone(tmp_path):
    src, out = _files(tmp_path)
    st = src.stat()
    (tmp_path / "out" / NAME).write_text(json.dumps({"format": 1, "model": "m"}) + "\n" + json.dumps(
        {"file": "a.png", "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "out_bytes": 6}) + "\n")
    j = _journal(tmp_path)
    out.write_bytes(b"OUTPUT")
    assert j.state("a.png", src, out) == "done"
    out.write_bytes(b"OUTPUT!")
    assert j.state("a.png", src, out) == "output changed"


def test_torn_and_foreign_lines_are_skipped(tmp_path):
    src, out = _files(tmp_path)
    j = _journal(tmp_path)
    j.record("a.png", src, out)
    j.close(remove=False)
    with open(tmp_path / "out" / NAME, "a") as f:
        f.write('{"bytes": 1}\n[1, 2]\n"text"\n{"file": "b.png", "byt\n{"file": "c.png"}\n{"file": "d.png", "byt')
    j = _journal(tmp_path)
    assert list(j.finished) == ["a.png", "c.png"]  # lines past a torn one are still read


@pytest.mark.parametrize("text, what", [('{"format": 1, "model": "other"}\n', "a run of another model or settings"),
                                        ('{"format": 0, "model": "m"}\n', "a run of another model or settings"),
                                        ("not json\n", "an unreadable journal"),
                                        (b"\xff\xfe\n", "an unreadable journal")])
def test_a_journal_of_another_run_is_refused_unless_restarted_or_taken_over(tmp_path, text, what):
    src, out = _files(tmp_path)
    path = tmp_path / "out" / NAME
    body = (text if isinstance(text, bytes) else text.encode()) + json.dumps({"file": "a.png"}).encode() + b"\n"
    path.write_bytes(body)
    with pytest.raises(OutputError) as exc:
        _journal(tmp_path)
    assert str(exc.value) == (f"{path}: records {what}; pass --restart to discard it, or choose another output folder")
    assert path.read_bytes() == body
    for how in ({"restart": True}, {"take_over": True}):
        path.write_bytes(body)
        j = _journal(tmp_path, **how)
        assert j.finished == {} and path.read_text() == '{"format": 1, "model": "m"}\n'
        j.close(remove=False)


def test_an_empty_journal_is_another_run(tmp_path):
    _files(tmp_path)
    (tmp_path / "out" / NAME).write_text("")
    with pytest.raises(OutputError, match="a run of another model or settings"):
        _journal(tmp_path)


def test_a_restart_discards_the_journal_of_the_same_run(tmp_path):
    src, out = _files(tmp_path)
    j = _journal(tmp_path)
    j.record("a.png", src, out)
    j.close(remove=False)
    j = _journal(tmp_path, restart=True)
    assert j.finished == {}
    j.record("a.png", src, out)
    j.close(remove=False)
    j = _journal(tmp_path, take_over=True)  # --overwrite keeps a journal of the same run, with what it lists
    assert list(j.finished) == ["a.png"]
    j.close(remove=False)


def test_closing_with_remove_deletes_the_journal(tmp_path):
    _files(tmp_path)
    j = _journal(tmp_path)
    j.close(remove=True)
    assert not (tmp_path / "out" / NAME).exists()
    j.close(remove=True)  # twice: nothing left to close or remove
    Journal(tmp_path / "never", {"model": "m"}).close(remove=False)  # never opened


def test_a_journal_in_a_folder_not_made_yet(tmp_path):
    j = Journal(tmp_path / "new" / "deeper", {"model": "m"})
    j.open(restart=False)
    assert (tmp_path / "new" / "deeper" / NAME).read_text() == '{"format": 1, "model": "m"}\n'
    j.close(remove=False)


def test_a_journal_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputError) as exc:
        _journal(tmp_path)
    assert str(exc.value) == f"{tmp_path}/out/.srdeploy-run.jsonl: cannot write here (File exists)"
