"""The `srdeploy` command line: a thin layer that parses flags into configs and calls the library."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from sr_deploy.errors import SRDeployError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, export and deploy super-resolution models.")
REPO_RECIPES = Path(__file__).resolve().parent.parent / "train"


def _fail(exc: SRDeployError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@app.command()
def train(
    data: List[Path] = typer.Option(..., "--data", help="Folder(s) of HR training images (recursive)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Folder of HR validation images."),
    recipe: str = typer.Option("srresnet", "--recipe", help="srresnet | srgan | a recipe TOML file."),
    scale: Optional[int] = typer.Option(None, "--scale"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (checkpoints, log.csv, curves.png)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue from a last.pt checkpoint."),
    init: Optional[Path] = typer.Option(None, "--init", help="srgan: the SRResNet checkpoint to start from."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG19 ImageNet weights (torchvision layout)."),
    content_loss: Optional[str] = typer.Option(None, "--content-loss", help="srgan: vgg54 | vgg22 | mse."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    num_blocks: Optional[int] = typer.Option(None, "--blocks"),
    channels: Optional[int] = typer.Option(None, "--channels"),
    upsampler: Optional[str] = typer.Option(None, "--upsampler", help="pixelshuffle | deconv | nearest_conv."),
    val_every: Optional[int] = typer.Option(None, "--val-every"),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop after this many minutes."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (faster on CPUs with AVX512-BF16/AMX)."),
    workers: Optional[int] = typer.Option(None, "--workers"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Train a generator (srresnet) or fine-tune it adversarially (srgan)."""
    from sr_deploy.train.config import load_recipe
    from sr_deploy.train.trainer import train as run_train

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    try:
        cfg = load_recipe(recipe, REPO_RECIPES, data=tuple(str(d) for d in data), val=str(val) if val else None,
                          scale=scale, steps=steps, out=str(out) if out else None,
                          resume=str(resume) if resume else None, init=str(init) if init else None,
                          vgg_weights=str(vgg_weights) if vgg_weights else None, content_loss=content_loss,
                          batch_size=batch_size, num_blocks=num_blocks, channels=channels, upsampler=upsampler,
                          val_every=val_every, time_limit_min=time_limit, bf16=bf16, num_workers=workers)
        if out is None and cfg.out == "runs/srresnet":
            from dataclasses import replace

            cfg = replace(cfg, out=f"runs/{cfg.recipe}")
        best = run_train(cfg, quiet=quiet)
    except SRDeployError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130)
    typer.echo(str(best))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
