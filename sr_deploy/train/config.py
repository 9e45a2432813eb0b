"""Training configuration: a recipe file (TOML, in the repo's train/) plus command-line overrides."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from sr_deploy.errors import InputError

RECIPES = ("srresnet", "srgan")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; saved in its checkpoints."""

    recipe: str = "srresnet"
    data: tuple[str, ...] = ()
    val: str | None = None
    out: str = "runs/srresnet"
    # generator
    arch: str = "srresnet"
    scale: int = 4
    num_blocks: int = 16
    channels: int = 64
    upsampler: str = "pixelshuffle"
    # data
    hr_patch: int = 96
    batch_size: int = 16
    num_workers: int = 2
    seed: int = 0
    degradation: str = "bicubic"  # bicubic (clean) | degraded (blur, noise, JPEG) | real (second order); see sr_deploy/degradations.py
    val_degradation: str = "bicubic"  # bicubic | real: validation LR made by degradations.degraded_eval_lr (fixed seeds) | mixed: both, pooled | all: clean, real and degraded, pooled
    clean_prob: float = 0.2  # degradation = real: the share of samples kept as clean bicubic downscales
    mild_prob: float = 0.0  # degradation = real: the share given the one-pass (degraded) mix instead of the second order
    scale_aug: float = 1.0  # VDSR's scale augmentation: HR downscaled by a factor in [scale_aug, 1] before cropping; 1 = off
    # optimisation
    steps: int = 100_000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"  # cosine | step | constant
    lr_min: float = 1e-6
    step_every: int = 50_000  # "step" schedule: halve every N steps
    warmup_steps: int = 0
    pixel_loss: str = "mse"  # mse | l1
    grad_clip: float = 0.0
    ema_decay: float = 0.0  # weight averaging; 0 disables
    # the generator's BatchNorm kept in eval mode (running statistics fixed, scale and shift still learned): a
    # fine-tune then trains the network exactly as it is deployed (BN folded), free of the batch statistics'
    # noise at small batches and of their drift when the input mix changes (clean and degraded samples)
    freeze_bn: bool = False
    # srgan
    init: str | None = None  # weights to start from: srgan's SRResNet, or shipped weights to continue training
    start_step: int = 0  # with init: continue the schedule and data sequence from this step (re-warmed up)
    content_loss: str = "vgg54"  # vgg54 | vgg22 | mse
    vgg_weights: str | None = None
    w_content: float = 1.0
    w_adv: float = 1e-3
    w_pixel: float = 0.0
    d_lr: float = 1e-4
    d_blocks: int = 8  # 8 (paper) or 10 (skip from block 7 to 10)
    # bookkeeping
    val_every: int = 1000
    ckpt_every: int = 500
    log_every: int = 50
    patience: int = 0  # validations without improvement before stopping; 0 disables
    stop_at: int = 0  # stop (with a checkpoint) at this step, the schedule still following `steps`; 0 disables
    time_limit_min: float = 0.0  # stop (with a checkpoint) after this many minutes; 0 disables
    channels_last: bool = True
    bf16: bool = False
    resume: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise InputError(f"unknown recipe {self.recipe!r}; pick one of {', '.join(RECIPES)}")
        if self.pixel_loss not in ("mse", "l1"):
            raise InputError(f"pixel_loss must be mse or l1, got {self.pixel_loss!r}")
        if self.content_loss not in ("vgg54", "vgg22", "mse"):
            raise InputError(f"content_loss must be vgg54, vgg22 or mse, got {self.content_loss!r}")
        if self.degradation not in ("bicubic", "degraded", "real"):
            raise InputError(f"degradation must be bicubic, degraded or real, got {self.degradation!r}")
        if self.val_degradation not in ("bicubic", "real", "mixed", "all"):
            raise InputError(f"val_degradation must be bicubic, real, mixed or all, got {self.val_degradation!r}")
        if not 0.0 <= self.clean_prob <= 1.0:
            raise InputError(f"clean_prob must be between 0 and 1, got {self.clean_prob}")
        if not 0.0 <= self.mild_prob <= 1.0 - self.clean_prob:
            raise InputError(f"mild_prob must be between 0 and 1 - clean_prob ({1.0 - self.clean_prob:g}), got {self.mild_prob}")
        if self.mild_prob and self.degradation != "real":
            raise InputError(f"mild_prob mixes lighter samples into degradation = \"real\"; this recipe's is {self.degradation!r}")
        if not 0.25 <= self.scale_aug <= 1.0:
            raise InputError(f"scale_aug must be between 0.25 and 1 (1 = off), got {self.scale_aug}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise InputError(f"schedule must be cosine, step or constant, got {self.schedule!r}")
        # numbers out of range end here, in one line, before a folder is made or an image read
        # (batch_size 0 failed deep in the data loader, a negative lr inside torch's Adam)
        at_least = {"scale": 2, "num_blocks": 1, "channels": 1, "hr_patch": 2 * self.scale, "batch_size": 1,
                    "num_workers": 0, "steps": 1, "step_every": 1, "warmup_steps": 0, "start_step": 0,
                    "d_blocks": 1, "val_every": 1, "ckpt_every": 1, "log_every": 1, "patience": 0, "stop_at": 0}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise InputError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if self.hr_patch % self.scale:
            raise InputError(f"hr_patch {self.hr_patch} is not a multiple of the scale {self.scale}")
        for name in ("lr", "d_lr"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("lr_min", "grad_clip", "w_content", "w_adv", "w_pixel", "time_limit_min"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1) (0 disables it), got {self.ema_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise InputError(f"betas must be two numbers in [0, 1), got {self.betas}")

    def arch_dict(self) -> dict:
        if self.arch == "light":
            return {"arch": "light", "scale": self.scale}
        return {"arch": self.arch, "scale": self.scale, "num_blocks": self.num_blocks,
                "channels": self.channels, "in_channels": 3, "upsampler": self.upsampler}

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Settings the config holds as tuples, which a TOML recipe and a checkpoint's saved config give as lists.
TUPLE_KEYS = ("data", "betas")


def load_recipe(path_or_name: str | Path, search_dir: Path | None = None, **overrides) -> TrainConfig:
    """Build a TrainConfig from a recipe (a TOML path or a name in ``search_dir``) and overrides (None = keep)."""
    path = Path(path_or_name)
    if not path.suffix and search_dir is not None:
        path = search_dir / f"{path_or_name}.toml"
    values: dict = {}
    if path.is_file():
        with open(path, "rb") as f:
            try:
                values = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise InputError(f"{path}: not a valid TOML recipe ({exc})") from exc
    elif str(path_or_name) in RECIPES:
        values = {"recipe": str(path_or_name)}
    else:
        names = sorted(p.stem for p in search_dir.glob("*.toml")) if search_dir is not None and search_dir.is_dir() else []
        raise InputError(f"recipe {path_or_name!r} not found (a TOML file or one of {', '.join(names or RECIPES)})")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{path}: unknown recipe keys {', '.join(unknown)}")
    for key in TUPLE_KEYS:
        if key in values:
            values[key] = tuple(values[key])
    cfg = TrainConfig(**values)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("resume"):
        return _resumed(given["resume"], cfg, given)
    return replace(cfg, **given)


# What one invocation bounds, never taken from the checkpoint it resumes: a run stopped by --stop-at N
# or --time-limit would otherwise stop again at once.
RUN_CONTROL_KEYS = ("resume", "stop_at", "time_limit_min")


def _resumed(resume: str, recipe_cfg: TrainConfig, given: dict) -> TrainConfig:
    """The run a ``--resume`` continues: every setting it was trained with, from the checkpoint, then what the
    command line names again. Not the recipe: the LR schedule is a function of the saved steps, peak and
    warm-start point (LambdaLR saves only its step and base rates), and a run started with --pixel-loss mse,
    --patch 192 or another mix would otherwise go on with the recipe's loss, crops or mix, silently (an MSE
    polish resumed that way went on in L1). Settings newer than the checkpoint take their defaults, which
    keep the behaviour from before they existed."""
    from sr_deploy.models.checkpoint import read_checkpoint

    payload = read_checkpoint(resume)
    saved = payload.get("config")
    if not isinstance(saved, dict):  # not a run's checkpoint: the trainer's own check names it
        return replace(recipe_cfg, **given)
    if saved.get("recipe", recipe_cfg.recipe) != recipe_cfg.recipe:
        raise InputError(f"{resume}: the checkpoint is from the {saved['recipe']} recipe, not {recipe_cfg.recipe} "
                         "(pass its --recipe, or start the other from it with --init)")
    known = {f.name for f in fields(TrainConfig)}
    merged = {k: tuple(v) if k in TUPLE_KEYS else v
              for k, v in saved.items() if k in known and k not in RUN_CONTROL_KEYS}
    merged.update(given)
    step = payload.get("step")
    if step is not None and merged.get("steps") is not None and merged["steps"] <= step:
        raise InputError(f"{resume}: the checkpoint is at step {step}; --steps {merged['steps']} is not beyond it "
                         f"(pass a larger --steps to train on, or nothing to finish its schedule at {saved.get('steps')})")
    return TrainConfig(**merged)
