"""User mistakes end in one `error:` line and a non-zero exit, and lose nothing."""

import os
import sys

import cv2
import pytest
from typer.testing import CliRunner

from sr_deploy.cli import app
from sr_deploy.errors import OutputError
from sr_deploy.fsutil import atomic_path
from tests.conftest import make_clip, pattern_image


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "in.png"
    cv2.imwrite(str(p), pattern_image(20, 24))
    return p


def _run(*args):
    r = CliRunner().invoke(app, ["run", *map(str, args)])
    return r.exit_code, r.output


@pytest.mark.parametrize("tile", [1, 3, 15, -2])
def test_tile_below_minimum_refused(tiny_ckpt, image, tmp_path, tile):
    code, out = _run(image, "-o", tmp_path / "o.png", "--model", tiny_ckpt, "--tile", tile)
    assert code != 0 and out.startswith("error: --tile") and "Traceback" not in out
    assert not (tmp_path / "o.png").exists()


def test_output_folder_for_one_image_and_a_limit_that_is_not_positive(tiny_ckpt, image, tmp_path):
    folder = tmp_path / "outs"
    folder.mkdir()
    code, out = _run(image, "-o", folder, "--model", tiny_ckpt)
    assert code == 0 and out.strip().endswith(str(folder / "in_x2.png")), out
    assert cv2.imread(str(folder / "in_x2.png")).shape == (40, 48, 3)
    code, out = _run(image, "-o", folder, "--model", tiny_ckpt)  # the same again: kept, not overwritten
    assert code != 0 and "output exists" in out
    code, out = _run(image, "-o", tmp_path / "o.png", "--model", tiny_ckpt, "--max-megapixels", "0")
    assert code != 0 and out == "error: --max-megapixels must be positive, got 0\n", out


def test_a_wrong_destination_is_the_only_line_and_comes_before_the_model(tiny_ckpt, image, tmp_path, monkeypatch):
    """The output checks (the input itself, an existing file, a folder inside the input) are one line, said
    before a model is chosen or loaded: on a GPU that can be an engine load or a measurement."""
    from sr_deploy.runtime import select

    def no_model(*a, **kw):
        raise AssertionError("a model was loaded for a run that cannot write its output")

    monkeypatch.setattr(select, "make_runner", no_model)
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"keep")
    default = tmp_path / "in_x2.png"  # what `run in.png` writes for a x2 model
    default.write_bytes(b"keep")
    (tmp_path / "sub").mkdir()
    cases = [((image, "-o", image), "output path is the input"),
             ((image, "-o", taken), "output exists"),
             ((tmp_path, "-o", tmp_path / "sub" / "out"), "must not be the input folder or inside it")]
    for args, said in cases:
        code, out = _run(*args, "--model", tiny_ckpt)
        assert code != 0 and out.count("\n") == 1 and out.startswith("error:") and said in out, out
    monkeypatch.undo()
    # the default name is known once the model is (its scale): said before the model runs or is described
    code, out = _run(image, "--model", tiny_ckpt, "--backend", "torch")
    assert code != 0 and out == f"error: {default}: output exists; pass --overwrite to replace it\n", out
    assert taken.read_bytes() == default.read_bytes() == b"keep"


def test_output_suffix_not_a_format(tiny_ckpt, image, tmp_path):
    code, out = _run(image, "-o", tmp_path / "o.xyz", "--model", tiny_ckpt)
    assert code != 0 and out.startswith("error:") and "not an image format" in out
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=2)
    code, out = _run(clip, "-o", tmp_path / "o.png", "--model", tiny_ckpt)
    assert code != 0 and "not a video format" in out


def test_precision_the_backend_cannot_run(tiny_ckpt, image, tmp_path):
    code, out = _run(image, "-o", tmp_path / "o.png", "--model", tiny_ckpt, "--backend", "torch", "--precision", "int8")
    assert code != 0 and out.startswith("error: the torch backend runs") and "Traceback" not in out


def test_bad_pix_fmt(tiny_ckpt, tmp_path):
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=2)
    code, out = _run(clip, "-o", tmp_path / "o.mp4", "--model", tiny_ckpt, "--pix-fmt", "nonsense")
    assert code != 0 and out.splitlines()[-1].startswith("error: --pix-fmt") and not (tmp_path / "o.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


@pytest.mark.parametrize("args,says", [
    (["--batch", "0"], "error: --batch must be at least 1"),
    (["--frames", "0"], "error: --frames must be at least 1"),
    (["--frames", "-3"], "error: --frames must be at least 1"),
    (["--start", "-1"], "error: --start must be 0 or later"),
    (["--duration", "0"], "error: --duration must be positive"),
    (["--preset", "turbo"], "error: --preset 'turbo'"),
    (["--preset", "p3"], "error: --preset 'p3': libx264 takes"),  # NVENC's preset names, with x264
    (["--pix-fmt", "rgb24"], "error: --pix-fmt rgb24: libx264 does not encode it"),
    (["--codec", "libvpx-vp9", "--preset", "slow"], "error: --preset: libvpx-vp9 takes no preset"),
])
def test_video_settings_the_encoder_cannot_take(tiny_ckpt, tmp_path, args, says):
    """Refused before any frame is decoded, with nothing left beside the output (no segments folder)."""
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=2)
    out_name = "o.webm" if "libvpx-vp9" in args else "o.mp4"
    code, out = _run(clip, "-o", tmp_path / out_name, "--model", tiny_ckpt, "--quiet", *args)
    assert code != 0 and out.splitlines()[-1].startswith(says), out
    assert "Traceback" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]


def test_second_writer_never_clobbers_the_first(tmp_path):
    """Two runs writing one output: the one finishing second refuses, the first one's file survives."""
    target = tmp_path / "out.png"
    with pytest.raises(OutputError, match="appeared while this run was writing"):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_bytes(b"second")
            target.write_bytes(b"first")  # another run finished meanwhile
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary left
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_bytes(b"replaced")
    assert target.read_bytes() == b"replaced" and oct(os.stat(target).st_mode & 0o777) != "0o600"


def _export(*args):
    r = CliRunner().invoke(app, ["export", *map(str, args)])
    return r.exit_code, r.output


def test_files_that_are_not_checkpoints(tmp_path, tiny_ckpt):
    import pickle

    text = tmp_path / "notes.pt"
    text.write_text("this is not a model\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(tiny_ckpt.read_bytes()[: tiny_ckpt.stat().st_size // 2])
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=2))
    expect = {text: "(a text file)", empty: "(an empty file)", trunc: "truncated or damaged",
              evil: "Python objects beyond tensors"}
    for path, words in expect.items():
        code, out = _export(path, "-o", tmp_path / "x.onnx")
        assert code != 0 and out.startswith(f"error: {path}") and words in out and len(out.splitlines()) == 1, out
    assert not marker.exists(), "a pickle's payload ran"
    assert not (tmp_path / "x.onnx").exists()


def test_help_names_every_option_and_shows_no_type_tags():
    import typer.main

    cmd = typer.main.get_command(app)
    missing = [(name, p.opts) for name, c in cmd.commands.items() for p in c.params
               if p.param_type_name == "option" and not p.help]
    assert not missing, missing
    for name in [None, *cmd.commands]:
        out = CliRunner().invoke(app, [name, "--help"] if name else ["--help"], terminal_width=120).output
        assert "<bool>" not in out and "<float>" not in out and "<str>" not in out, (name, out)
    out_opt = next(p for p in cmd.commands["run"].params if p.name == "output")
    assert "default: beside the input" in out_opt.help  # where outputs go without -o


def test_bench_data_that_is_not_there_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for d in (tmp_path / "missing", empty):
        r = CliRunner().invoke(app, ["bench", "--data", str(d), "--no-speed"])
        assert r.exit_code != 0 and r.output.startswith("error:") and str(d) in r.output, r.output


def test_a_bench_that_measures_nothing_is_an_error_and_writes_nothing(tmp_path, tiny_ckpt, monkeypatch):
    from sr_deploy.bench import run as bench_run

    converted = []  # and it finds that out before converting the model to other precisions
    monkeypatch.setattr(bench_run, "_ensure_variants", lambda *a, **k: converted.append(a))
    small = tmp_path / "small"
    small.mkdir()
    cv2.imwrite(str(small / "a.png"), pattern_image(12, 12, 3))  # below what x2 can be scored on
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["bench", "--model", str(tiny_ckpt), "--data", str(small), "--no-speed",
                                 "--backends", "onnxruntime", "--json", str(out)])
    lines = r.output.strip().splitlines()
    assert r.exit_code != 0 and lines[-1].startswith("error: nothing was measured"), r.output
    assert any("a.png" in line and "too small" in line for line in lines) and not out.exists()
    assert converted == [] and any("no dataset can be scored" in line for line in lines), r.output


def test_bad_precision_and_crf_values(tiny_ckpt, image, tmp_path):
    code, out = _run(image, "-o", tmp_path / "o.png", "--model", tiny_ckpt, "--precision", "fp7")
    assert code != 0 and out.startswith("error: --precision") and not (tmp_path / "o.png").exists()
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=2)
    code, out = _run(clip, "-o", tmp_path / "o.mp4", "--model", tiny_ckpt, "--crf", "99")
    assert code != 0 and out.startswith("error: --crf 99") and not (tmp_path / "o.mp4").exists()


def test_bench_model_that_is_not_there_is_an_error(tmp_path):
    r = CliRunner().invoke(app, ["bench", "--model", str(tmp_path / "nope.pt"), "--no-quality"])
    assert r.exit_code != 0 and r.output.startswith("error:") and "nope.pt" in r.output, r.output


@pytest.mark.parametrize("args,says", [
    (["--backends", "onnxruntim"], "error: --backends: unknown 'onnxruntim'"),
    (["--precisions", "fp32,fp8"], "error: --precisions: unknown 'fp8'"),
    (["--min-time", "0"], "error: --min-time must be positive"),
    (["--batch", "0"], "error: --batch must be at least 1"),
    (["--no-speed"], "error: --no-speed and --no-quality leave nothing to measure"),
    (["--video", "missing.mp4"], "error: missing.mp4: file not found"),
])
def test_bench_flag_mistakes_are_one_line_before_any_work(tiny_onnx, args, says):
    r = CliRunner().invoke(app, ["bench", "--model", str(tiny_onnx), "--no-quality", *args])
    assert r.exit_code != 0 and r.output.startswith(says), r.output


def test_bench_video_that_is_not_a_video_is_one_line_before_the_speed_run(tiny_onnx, tmp_path):
    junk = tmp_path / "garbage.jpg"
    junk.write_bytes(b"garbage")
    r = CliRunner().invoke(app, ["bench", "--model", str(tiny_onnx), "--no-quality", "--video", str(junk)])
    assert r.exit_code != 0 and r.output.startswith(f"error: {junk}: not a readable video"), r.output
    assert "speed" not in r.output


@pytest.mark.parametrize("command", [["triton", "{m}", "-o", "{tmp}/repo"], ["tune", "--model", "{m}"],
                                     ["run", "{img}", "-o", "{tmp}/o.png", "--model", "{m}"],
                                     ["bench", "--model", "{m}", "--no-quality"]])
def test_a_file_that_is_not_onnx_is_one_line_in_every_command(tmp_path, image, command):
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model\n")
    args = [a.format(m=junk, tmp=tmp_path, img=image) for a in command]
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and r.output == f"error: {junk}: not a readable ONNX model (DecodeError)\n", r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "junk.onnx"]


def _external(tiny_onnx, folder, location):
    import shutil

    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    folder.mkdir(parents=True, exist_ok=True)
    m = onnx.load(str(tiny_onnx))
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    onnx.save(m, str(folder / "m.onnx"))
    if location != "w.bin":  # point the weights elsewhere, as a hostile or broken file would
        m = onnx.load(str(folder / "m.onnx"), load_external_data=False)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        shutil.move(folder / "w.bin", folder / location)
        (folder / "m.onnx").write_bytes(m.SerializeToString())
    return folder / "m.onnx"


def test_external_data_must_sit_beside_the_model(tiny_onnx, image, tmp_path):
    inside = _external(tiny_onnx, tmp_path / "ok", "w.bin")
    code, out = _run(image, "-o", tmp_path / "ok.png", "--model", inside, "--backend", "onnxruntime")
    assert code == 0, out
    outside = _external(tiny_onnx, tmp_path / "a" / "m", "../outside.bin")
    for backend in ("auto", "onnxruntime"):
        code, out = _run(image, "-o", tmp_path / "o.png", "--model", outside, "--backend", backend)
        assert code != 0 and "points outside the model's folder" in out and "Traceback" not in out, out
    (tmp_path / "ok" / "w.bin").unlink()
    code, out = _run(image, "-o", tmp_path / "o2.png", "--model", inside)
    assert code != 0 and "is missing beside the model" in out


def test_an_os_error_anywhere_is_one_line_naming_the_path(tmp_path):
    """What the library does not catch itself (here: a training run's folder under a regular file) reaches
    main's last resort, which names the path and the reason, not Python's "[Errno N] ...: 'PATH'"."""
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    cv2.imwrite(str(data / "a.png"), pattern_image(64, 64))
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "run"
    args = ["train", "--data", str(data), "--scale", "2", "--blocks", "1", "--channels", "8", "--patch", "24",
            "--batch-size", "2", "--workers", "0", "--no-bf16", "--steps", "2", "--out", str(out), "--quiet"]
    code = f"import sys; sys.argv = ['srdeploy'] + {args!r}; from sr_deploy.cli import main; main()"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and lines == [f"error: {out}: Not a directory"], p.stderr


@pytest.mark.parametrize("flag, value, says", [("--bitrate", "1e30", "--bitrate"), ("--bitrate", "-5M", "--bitrate"),
                                               ("--bitrate", "fast", "--bitrate"), ("--codec", "mjpeg", "--codec mjpeg")])
def test_encoder_settings_that_cannot_work_name_their_flag_before_any_work(tiny_ckpt, tmp_path, flag, value, says):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=4, audio=False)
    code, out = _run(src, "-o", tmp_path / "o.mp4", "--model", tiny_ckpt, flag, value)
    assert code != 0 and out.splitlines()[-1].startswith(f"error: {says}") and "returned 22" not in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("name", ["f.png", "f.mp4"])
def test_a_fifo_named_like_an_image_or_video_is_refused_without_waiting_for_a_writer(tiny_ckpt, tmp_path, name):
    import subprocess
    import sys

    fifo = tmp_path / name
    os.mkfifo(fifo)
    # in a child process: a probe that opens the FIFO blocks until something writes to it, and the timeout says so
    r = subprocess.run([sys.executable, "-m", "sr_deploy.cli", "run", str(fifo), "-o", str(tmp_path / ("o" + fifo.suffix)),
                        "--model", str(tiny_ckpt), "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        f"error: {fifo}: not a regular file or folder (a FIFO, socket or device)"], (r.stdout, r.stderr)
    assert not (tmp_path / ("o" + fifo.suffix)).exists()


@pytest.mark.parametrize("name", ["m.pt", "m.safetensors", "m.onnx", "m.param"])
def test_a_fifo_given_as_the_model_is_refused_in_one_line(image, tmp_path, name):
    import subprocess
    import sys

    fifo = tmp_path / name
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "sr_deploy.cli", "run", str(image), "-o", str(tmp_path / "o.png"),
                        "--model", str(fifo), "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        f"error: {fifo}: not a regular file (a folder, FIFO, socket or device); pass a model file"], (r.stdout, r.stderr)
    assert not (tmp_path / "o.png").exists()


def test_a_single_image_out_of_memory_is_one_line(tiny_ckpt, image, tmp_path, monkeypatch):
    from sr_deploy.media import images

    def too_big(*a, **kw):
        raise MemoryError

    monkeypatch.setattr(images, "upscale_image_array", too_big)
    code, out = _run(image, "-o", tmp_path / "o.png", "--model", tiny_ckpt, "--quiet")
    assert code == 2 and out == f"error: {image}: out of memory (try --tile 256)\n", out
    assert not (tmp_path / "o.png").exists()


def test_an_interrupt_says_what_it_kept(tmp_path):
    from sr_deploy.cli import _interrupted_line

    img, clip, folder = tmp_path / "a.png", tmp_path / "c.mp4", tmp_path / "in"
    folder.mkdir()
    assert _interrupted_line(img, tmp_path / "o.png") == "interrupted: no partial output left"
    assert _interrupted_line(clip, None) == "interrupted: no partial output left"
    (tmp_path / "o.mp4.segments").mkdir()
    assert _interrupted_line(clip, tmp_path / "o.mp4") == (
        f"interrupted: no partial output left; finished segments kept in {tmp_path / 'o.mp4'}.segments, "
        "the same command resumes")
    (tmp_path / "out").mkdir()
    assert _interrupted_line(folder, tmp_path / "out") == "interrupted: no partial output left"
    (tmp_path / "out" / ".srdeploy-run.jsonl").write_text("{}\n")
    assert _interrupted_line(folder, tmp_path / "out") == (
        "interrupted: no partial output left; finished files kept, the same command resumes")


def test_a_stop_no_command_took_up_still_names_the_exit(monkeypatch, capsys):
    """A SIGTERM whose KeyboardInterrupt was swallowed where it landed, while the command went on to finish:
    the process exits 143 (the first signal names the exit), not 0, and says that its outputs are complete."""
    import signal

    from sr_deploy import cli, stopping

    def finishing_anyway(args):
        cli.STOPPED_BY.update(code=128 + signal.SIGTERM, at=0.0)  # what the handler records before raising
        stopping.REQUESTED.set()
        raise SystemExit(0)  # typer's exit for a command that returned

    monkeypatch.setattr(cli, "app", finishing_anyway)
    monkeypatch.setattr(cli, "STOPPED_BY", {"code": None, "at": 0.0, "taken": False})
    monkeypatch.setattr(sys, "argv", ["srdeploy", "run", "x.mp4"])
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # leave pytest's own handlers alone
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        stopping.REQUESTED.clear()
    assert exc.value.code == 143
    assert "outputs are complete" in capsys.readouterr().err


@pytest.mark.parametrize("args, says", [
    (["run"], "error: Missing argument 'INPUT' (`srdeploy run --help` shows the usage)"),
    (["run", "x.png", "--nope"], "error: No such option: --nope"),
    (["run", "x.png", "--tile", "abc"], "error: Invalid value for '--tile'"),
    (["tune", "light_x4"], "error: Got unexpected extra argument(s) (light_x4) (`srdeploy tune --help`"),
    (["bogus"], "error: No such command 'bogus' (`srdeploy --help` shows the usage)"),
])
def test_a_command_line_that_does_not_parse_is_one_error_line(args, says):
    """As every other bad input: one `error:` line naming the mistake and where the usage is, exit 2 (Typer
    printed its usage and the message in a frame of box-drawing characters)."""
    r = CliRunner().invoke(app, args, prog_name="srdeploy")
    assert r.exit_code == 2 and r.output.startswith(says) and r.output.count("\n") == 1, r.output


def test_srdeploy_alone_still_shows_the_help():
    r = CliRunner().invoke(app, [], prog_name="srdeploy")
    assert "Usage: srdeploy [OPTIONS] COMMAND" in r.output and "error:" not in r.output
