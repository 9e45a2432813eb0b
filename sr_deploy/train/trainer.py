"""The training loop for both recipes, readable top to bottom.

srresnet: the generator alone, pixel loss (MSE or L1), Adam, LR schedule.
srgan: starts from an SRResNet checkpoint; alternating discriminator and
generator steps; generator loss = w_content * content + w_adv * BCE(D(G(x)), 1)
+ w_pixel * pixel, the content loss on VGG19 φ5,4 / φ2,2 features (rescaled
by 1/12.75 as in Ledig et al.) or plain MSE (the paper's SRGAN-MSE variant).

Runs as one process or under ``torchrun`` (DDP: gloo on CPU, nccl on GPUs).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from sr_deploy.errors import InputError, ModelError
from sr_deploy.models.checkpoint import build_generator, read_checkpoint, save_checkpoint
from sr_deploy.models.discriminator import Discriminator
from sr_deploy.progress import Progress
from sr_deploy.quality import bicubic_upscale, evaluate, load_eval_set, torch_upscaler
from sr_deploy.train.config import TrainConfig
from sr_deploy.degradations import degradation_for, degraded_eval_lr
from sr_deploy.train.data import CropDataset, StepSampler

log = logging.getLogger(__name__)
VGG_RESCALE = 1.0 / 12.75
CSV_FIELDS = ["step", "elapsed_s", "lr", "loss_g", "loss_pixel", "loss_content", "loss_adv", "loss_d",
              "val_psnr", "val_ssim", "bicubic_psnr", "steps_per_s", "val_detail"]


def val_score(recipe: str, res) -> float:
    """What "best" means for a run's validations: Y-PSNR for PSNR-oriented training; for adversarial
    fine-tuning, a detail ratio closest to HR's (metrics.detail_ratio = 1.0). Adversarial training first
    restores texture, then keeps adding high-frequency energy beyond the ground truth's, which is noise;
    its best-PSNR checkpoint would simply be its least adversarial one."""
    return -abs(res.detail - 1.0) if recipe == "srgan" else res.psnr_y


def bf16_pays(requested: bool, device: torch.device) -> bool:
    """bf16 autocast only where it is native: CUDA GPUs, or CPUs with AVX512-BF16/AMX. On an AVX2 CPU
    a step of the 16-block recipe took 34 s in bf16 against 2.6 s in fp32 (one thread)."""
    if not requested:
        return False
    if device.type == "cuda":
        return True
    from sr_deploy.machine import cpu_has_bf16

    return cpu_has_bf16()


def _open_log(csv_path: Path, keep: bool, upto: int | None = None) -> None:
    """Start the run's CSV log, or (resuming) keep it up to step ``upto``, in the current columns.

    Rows after the resumed checkpoint's step were logged by a continuation whose weights were lost
    (killed before its next checkpoint); they are dropped so the log describes the weights' history.
    """
    rows = []
    if keep and csv_path.exists():
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fieldnames = reader.fieldnames
        kept = [r for r in rows if upto is None or not r.get("step", "").isdigit() or int(r["step"]) <= upto]
        if fieldnames == CSV_FIELDS and len(kept) == len(rows):
            return
        rows = kept
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# --------------------------------------------------------------------------- setup
def _distributed() -> tuple[int, int, torch.device, bool]:
    """This process's rank, the world size, its device, and whether it started the process group (and so
    must end it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owned = world > 1 and not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device, owned


def _end_distributed(world: int, owned: bool) -> None:
    """Every rank waits for the others; the group this process started is ended here: left to the
    interpreter's exit, its gloo pairs are torn down in whatever order the ranks exit, and a rank whose peer
    has already closed its socket can die in gloo's IoException (SIGABRT)."""
    if world > 1:
        dist.barrier()
    if owned:
        dist.destroy_process_group()


def _any(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _schedule(cfg: TrainConfig):
    def factor(step: int) -> float:
        return _base_factor(step) * _rewarm(step)

    def _rewarm(step: int) -> float:
        # a warm start (shipped weights, fresh Adam moments) ramps up again over 200 steps
        if cfg.init and cfg.start_step and step >= cfg.start_step:
            return min(1.0, (step - cfg.start_step + 1) / 200)
        return 1.0

    def _base_factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            return 0.5 ** (step // cfg.step_every)
        t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        floor = cfg.lr_min / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


class ContentLoss(nn.Module):
    """MSE on VGG19 features (rescaled as in the paper) or on pixels."""

    def __init__(self, kind: str, vgg_weights: str | None) -> None:
        super().__init__()
        self.kind = kind
        if kind == "mse":
            self.vgg = None
            return
        from sr_deploy.models.vgg import VGGFeatures, find_vgg_weights

        path = find_vgg_weights(vgg_weights)
        if path is None:
            raise InputError(
                "the VGG content loss needs VGG19 ImageNet weights (torchvision layout, vgg19-dcbb9e9d.pth): "
                "pass --vgg-weights FILE, or choose content_loss = \"mse\" (SRGAN-MSE)"
            )
        self.vgg = VGGFeatures(kind).load_torchvision(path)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if self.vgg is None:
            # the paper's pixel MSE is taken on HR scaled to [-1, 1], 4x an MSE on [0, 1]; its adversarial
            # weight 1e-3 is balanced against that. On [0, 1] the adversarial term was 4x too strong:
            # Set5 fell to 27.0 dB with noise-like texture after 1000 steps (train/README.md)
            return F.mse_loss(sr * 2.0 - 1.0, hr * 2.0 - 1.0)
        return F.mse_loss(self.vgg(sr) * VGG_RESCALE, self.vgg(hr) * VGG_RESCALE)


def _check_resume(cfg: TrainConfig, payload: dict, path: str) -> None:
    arch = payload.get("arch", {})
    if arch != cfg.arch_dict():
        diff = sorted(k for k in set(arch) | set(cfg.arch_dict()) if arch.get(k) != cfg.arch_dict().get(k))
        raise ModelError(
            f"{path}: resume checkpoint is another model ({', '.join(f'{k}={arch.get(k)} vs {cfg.arch_dict().get(k)}' for k in diff)})"
        )
    if "step" not in payload or "optimizer" not in payload:
        raise ModelError(f"{path}: not a resumable training checkpoint (no optimizer state); use it as --init")
    if payload.get("recipe", "srresnet") != cfg.recipe:
        raise ModelError(f"{path}: checkpoint is from the {payload.get('recipe')} recipe, not {cfg.recipe}")


# --------------------------------------------------------------------------- main entry
@dataclass
class _Nets:
    """What a run trains and saves: the generator, its optimizer and schedule, the EMA average, and for
    srgan the discriminator, its optimizer and the content loss."""

    G: nn.Module
    g_opt: torch.optim.Optimizer
    g_sched: torch.optim.lr_scheduler.LambdaLR
    D: nn.Module | None = None
    d_opt: torch.optim.Optimizer | None = None
    ema: nn.Module | None = None
    content: nn.Module | None = None


def _build_nets(cfg: TrainConfig, device: torch.device, fmt, content) -> _Nets:
    G = build_generator(cfg.arch_dict()).to(device, memory_format=fmt)
    g_opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    nets = _Nets(G, g_opt, torch.optim.lr_scheduler.LambdaLR(g_opt, _schedule(cfg)))
    if cfg.recipe == "srgan":
        nets.D = Discriminator(blocks=cfg.d_blocks).to(device, memory_format=fmt)
        nets.d_opt = torch.optim.Adam(nets.D.parameters(), lr=cfg.d_lr, betas=cfg.betas)
        nets.content = content.to(device)
    if cfg.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel

        def ema_avg(avg: torch.Tensor, new: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            # decay warms up as (1 + n) / (10 + n) so that the average is not dominated
            # by the random initialisation in the first thousands of steps
            d = min(cfg.ema_decay, (1.0 + float(n)) / (10.0 + float(n)))
            return d * avg + (1.0 - d) * new

        nets.ema = AveragedModel(G, avg_fn=ema_avg, use_buffers=True)
    return nets


def _grows(old: dict, new: dict) -> bool:
    """Whether ``new`` is the SRResNet ``old`` with more residual blocks (all else equal)."""
    return (old.get("arch") == new.get("arch") == "srresnet" and isinstance(old.get("num_blocks"), int)
            and new["num_blocks"] > old["num_blocks"]
            and {k: v for k, v in old.items() if k != "num_blocks"} == {k: v for k, v in new.items() if k != "num_blocks"})


def _grown(init_payload: dict, G: nn.Module, main: bool) -> dict:
    """The init weights for ``G``; where ``G`` has more residual blocks than the checkpoint, its first
    blocks take the checkpoint's and the extra ones, appended at the end of the trunk, start as identities
    (their last BatchNorm's scale and shift zero, as in zero-initialised residual branches), so training
    starts from the checkpoint's exact function and the new blocks learn from there: capacity added to a
    trained generator without training it again from scratch."""
    state, own = dict(init_payload["state_dict"]), _unwrap(G).state_dict()
    extra = sorted(k for k in own if k not in state)
    if not extra:
        return state
    for k in extra:
        state[k] = own[k].clone()
        if k.endswith(("body.4.weight", "body.4.bias")):  # the block's last BN: scale and shift 0
            state[k] = torch.zeros_like(own[k])
    if main:
        log.info("grown from %d to %d residual blocks: the extra blocks start as identities",
                 init_payload["arch"]["num_blocks"], _unwrap(G).config.num_blocks)
    return state


def _restore(nets: _Nets, cfg: TrainConfig, resume_payload, init_payload, main: bool) -> tuple[int, float, int]:
    """Weights, optimizers and schedule from a resumed run or an init checkpoint; (start step, best score,
    validations without improvement)."""
    start, best, bad_vals = 0, -math.inf, 0
    if resume_payload:
        nets.G.load_state_dict(resume_payload["state_dict"])
        nets.g_opt.load_state_dict(resume_payload["optimizer"])
        nets.g_sched.load_state_dict(resume_payload["scheduler"])
        if nets.D is not None:
            nets.D.load_state_dict(resume_payload["d_state_dict"])
            nets.d_opt.load_state_dict(resume_payload["d_optimizer"])
        if nets.ema is not None and "ema_state_dict" in resume_payload:
            nets.ema.load_state_dict(resume_payload["ema_state_dict"])
        torch.set_rng_state(resume_payload["rng_cpu"])
        start, best, bad_vals = resume_payload["step"], resume_payload.get("best", -math.inf), resume_payload.get("bad_vals", 0)
        if main:
            log.info("resumed from %s at step %d: %s schedule to step %d, lr now %.3g",
                     cfg.resume, start, cfg.schedule, cfg.steps, nets.g_opt.param_groups[0]["lr"])
    elif init_payload:
        state = _grown(init_payload, nets.G, main)
        nets.G.load_state_dict(state)
        if nets.ema is not None:
            nets.ema.module.load_state_dict(state)
        if cfg.start_step:
            start = cfg.start_step
            nets.g_sched.last_epoch = start
            for group, base in zip(nets.g_opt.param_groups, nets.g_sched.base_lrs):
                group["lr"] = base * nets.g_sched.lr_lambdas[0](start)
    return start, best, bad_vals


def _step(nets: _Nets, cfg: TrainConfig, lr_b: torch.Tensor, hr_b: torch.Tensor, autocast, pixel_fn) -> dict[str, float]:
    """One training step (srgan: a discriminator step, real → 1 and fake → 0, then the generator's); the losses."""
    G, D = nets.G, nets.D
    losses: dict[str, float] = {}
    if D is not None:
        with torch.no_grad(), autocast:
            fake = G(lr_b)
        with autocast:
            real_logits, fake_logits = D(hr_b), D(fake.detach())
            loss_d = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                      + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        nets.d_opt.zero_grad(set_to_none=True)
        loss_d.backward()
        nets.d_opt.step()
        losses["loss_d"] = loss_d.item()
    with autocast:
        sr = G(lr_b)
        if D is None:
            loss_g = loss_pixel = pixel_fn(sr.float(), hr_b)
        else:
            logits = D(sr)
            loss_adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            loss_content = nets.content(sr.float(), hr_b)
            loss_pixel = pixel_fn(sr.float(), hr_b)
            loss_g = cfg.w_content * loss_content + cfg.w_adv * loss_adv + cfg.w_pixel * loss_pixel
            losses.update(loss_adv=loss_adv.item(), loss_content=loss_content.item())
    nets.g_opt.zero_grad(set_to_none=True)
    loss_g.backward()
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(G.parameters(), cfg.grad_clip)
    nets.g_opt.step()
    nets.g_sched.step()
    if nets.ema is not None:
        nets.ema.update_parameters(_unwrap(G))
    losses.update(loss_g=loss_g.item(), loss_pixel=loss_pixel.item())
    return losses


def _save(nets: _Nets, cfg: TrainConfig, path: Path, step: int, best: float, bad_vals: int) -> None:
    extra = {"recipe": cfg.recipe, "step": step, "best": best, "bad_vals": bad_vals,
             "optimizer": nets.g_opt.state_dict(), "scheduler": nets.g_sched.state_dict(),
             "rng_cpu": torch.get_rng_state(), "config": _plain(cfg.to_dict())}
    if nets.D is not None:
        extra["d_state_dict"] = _unwrap(nets.D).state_dict()
        extra["d_optimizer"] = nets.d_opt.state_dict()
    if nets.ema is not None:
        extra["ema_state_dict"] = nets.ema.state_dict()
    save_checkpoint(path, nets.G, extra=extra)


def _train_mode(net: nn.Module, cfg: TrainConfig) -> None:
    """Training mode; with ``freeze_bn`` the BatchNorm layers stay in eval mode (TrainConfig.freeze_bn)."""
    net.train()
    if cfg.freeze_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _validate(nets: _Nets, cfg: TrainConfig, val_pairs):
    """Validate the raw weights and, with EMA, the average too; return the better one (val_score)."""
    best_res, best_net = None, None
    for net in ([_unwrap(nets.G)] + ([nets.ema.module] if nets.ema is not None else [])):
        net.eval()
        res = evaluate(val_pairs, cfg.scale, torch_upscaler(net, channels_last=cfg.channels_last))
        _train_mode(net, cfg)
        if best_res is None or val_score(cfg.recipe, res) > val_score(cfg.recipe, best_res):
            best_res, best_net = res, net
    return best_res, best_net


def _inputs(cfg: TrainConfig):
    """Everything a run reads, checked before any work starts: (resume payload, init payload, content loss,
    training crops, validation pairs)."""
    if not cfg.data:
        raise InputError("no training data: pass --data DIR")
    resume_payload = None
    if cfg.resume:
        resume_payload = read_checkpoint(cfg.resume)
        _check_resume(cfg, resume_payload, cfg.resume)
    content = ContentLoss(cfg.content_loss, cfg.vgg_weights) if cfg.recipe == "srgan" else None
    init_payload = None
    if cfg.recipe == "srgan" and not resume_payload and not cfg.init:
        raise InputError("the srgan recipe starts from an SRResNet checkpoint: pass --init CKPT")
    if cfg.init and not resume_payload:
        init_payload = read_checkpoint(cfg.init)
        if init_payload["arch"] != cfg.arch_dict() and not _grows(init_payload["arch"], cfg.arch_dict()):
            raise ModelError(f"{cfg.init}: init checkpoint architecture {init_payload['arch']} != recipe {cfg.arch_dict()}"
                             " (an SRResNet may only grow: more --blocks than the checkpoint, all else equal)")
    dataset = CropDataset(cfg.data, scale=cfg.scale, hr_patch=cfg.hr_patch, seed=cfg.seed, scale_aug=cfg.scale_aug,
                          degradation=degradation_for(cfg.degradation, cfg.clean_prob, cfg.mild_prob))
    val_pairs = None
    if cfg.val:
        # mixed: every validation image twice, clean and degraded, so "best" balances the two (all: three times,
        # lightly degraded too)
        mild = functools.partial(degraded_eval_lr, kind="degraded")
        makers = {"bicubic": [None], "real": [degraded_eval_lr], "mixed": [None, degraded_eval_lr],
                  "all": [None, degraded_eval_lr, mild]}[cfg.val_degradation]
        val_pairs = [p for make in makers for p in load_eval_set(cfg.val, cfg.scale, say=log.warning, make_lr=make)]
    return resume_payload, init_payload, content, dataset, val_pairs


def _loader(cfg: TrainConfig, dataset, start: int, rank: int, world: int, device: torch.device) -> DataLoader:
    """Batches from step ``start`` to the end of the run, this rank's share."""
    return DataLoader(
        dataset,
        batch_sampler=StepSampler(batch_size=cfg.batch_size, start_step=start, total_steps=cfg.steps, rank=rank, world=world),
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        prefetch_factor=4 if cfg.num_workers > 0 else None,
        pin_memory=device.type == "cuda",
        worker_init_fn=_loader_worker_init,
    )


def train(cfg: TrainConfig, *, quiet: bool = False) -> Path:
    """Run a training recipe; returns the path of the best (or last) checkpoint."""
    resume_payload, init_payload, content, dataset, val_pairs = _inputs(cfg)
    rank, world, device, owned_group = _distributed()
    main = rank == 0
    out = Path(cfg.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        log.info("%d training images (%d skipped: smaller than %dpx or unreadable)",
                 len(dataset.images), dataset.skipped, cfg.hr_patch)
    torch.manual_seed(cfg.seed + rank)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    nets = _build_nets(cfg, device, fmt, content)
    start, best, bad_vals = _restore(nets, cfg, resume_payload, init_payload, main)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        nets.G = DDP(nets.G, device_ids=ids)
        if nets.D is not None:
            nets.D = DDP(nets.D, device_ids=ids)

    loader = _loader(cfg, dataset, start, rank, world, device)
    pixel_fn = F.l1_loss if cfg.pixel_loss == "l1" else F.mse_loss
    use_bf16 = bf16_pays(cfg.bf16, device)
    if cfg.bf16 and not use_bf16 and main:
        log.warning("bf16 autocast off: this CPU has no native bf16 (AVX512-BF16/AMX), where it runs about 13x "
                    "slower than fp32 (measured on a 2-core AVX2 EPYC); training in fp32")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    bicubic_psnr = None
    if main and val_pairs:
        bicubic_psnr = evaluate(val_pairs, cfg.scale, lambda lr: bicubic_upscale(lr, cfg.scale)).psnr_y
        log.info("validation: %d images, bicubic Y-PSNR %.3f dB", len(val_pairs), bicubic_psnr)

    csv_path = out / "log.csv"
    if main:
        _open_log(csv_path, keep=bool(resume_payload), upto=start if resume_payload else None)

    progress = Progress(cfg.steps, desc=cfg.recipe, unit="step", quiet=quiet or not main, initial=start)
    t0, t_window, window_start = time.perf_counter(), time.perf_counter(), start
    running: dict[str, float] = {}
    step = start
    stop = False
    _train_mode(nets.G, cfg)
    batches = None
    try:
        batches = iter(loader)
        while True:
            with _signals_deferred():
                batch = next(batches, None)
            if batch is None:
                break
            lr_b, hr_b = (t.to(device, non_blocking=True).contiguous(memory_format=fmt) for t in batch)
            losses = _step(nets, cfg, lr_b, hr_b, autocast, pixel_fn)
            if not all(math.isfinite(v) for v in losses.values()):
                raise ModelError(f"training diverged at step {step + 1}: losses {losses}; lower the learning rate")
            step += 1
            for k, v in losses.items():
                running[k] = running.get(k, 0.0) + v
            running["n"] = running.get("n", 0) + 1
            progress.update(1, postfix=f"loss {losses['loss_g']:.4f}"
                            + (f" best {best:.2f} dB" if best > -math.inf and cfg.recipe != "srgan" else ""))

            row: dict = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                row = {k: running[k] / running["n"] for k in running if k != "n"}
                row["steps_per_s"] = (step - window_start) / max(1e-9, now - t_window)
                t_window, window_start, running = now, step, {}
            if val_pairs and main and (step % cfg.val_every == 0 or step == cfg.steps):
                res, val_net = _validate(nets, cfg, val_pairs)
                row.update(val_psnr=res.psnr_y, val_ssim=res.ssim_y, val_detail=res.detail, bicubic_psnr=bicubic_psnr)
                progress.write(f"step {step}: val Y-PSNR {res.psnr_y:.3f} dB, SSIM {res.ssim_y:.4f}, detail vs HR "
                               f"{res.detail:.3f} (bicubic {bicubic_psnr:.3f} dB)")
                score = val_score(cfg.recipe, res)
                if score > best:
                    best, bad_vals = score, 0
                    _save_best(out / "best.pt", val_net, cfg, step, res)
                else:
                    bad_vals += 1
            if row and main:
                row.update(step=step, elapsed_s=round(time.perf_counter() - t0, 1), lr=nets.g_sched.get_last_lr()[0])
                with open(csv_path, "a", newline="") as f:
                    csv.DictWriter(f, CSV_FIELDS).writerow({k: row.get(k, "") for k in CSV_FIELDS})
            if main and (step % cfg.ckpt_every == 0 or step == cfg.steps):
                _save(nets, cfg, out / "last.pt", step, best, bad_vals)
            wants_stop = bool(cfg.patience and bad_vals >= cfg.patience)
            wants_stop |= bool(cfg.stop_at and step >= cfg.stop_at)
            wants_stop |= bool(cfg.time_limit_min and time.perf_counter() - t0 > 60 * cfg.time_limit_min)
            if _any(wants_stop, world, device):
                if main:
                    progress.write(f"stopping at step {step} (patience, stop step or time limit reached)")
                    _save(nets, cfg, out / "last.pt", step, best, bad_vals)
                stop = True
                break
    except KeyboardInterrupt:
        if main:
            progress.write(f"interrupted: saving step {step} to {out / 'last.pt'}")
            with _signals_deferred():  # a second Ctrl-C or SIGTERM waits until the checkpoint is whole
                _save(nets, cfg, out / "last.pt", step, best, bad_vals)
        raise
    finally:
        progress.close()
        # The workers ignore SIGTERM (_loader_worker_init), so the SIGTERM multiprocessing sends them at
        # interpreter exit does not stop them, and it then waits for them forever. Their iterator (held in a
        # reference cycle with the loader) stops them only when collected, which may come after that. So
        # they are stopped here; PyTorch has no public close for a DataLoader's workers.
        stop_workers = getattr(batches, "_shutdown_workers", None)
        if stop_workers is not None:
            stop_workers()
    if main:
        if not stop and step % cfg.ckpt_every:
            _save(nets, cfg, out / "last.pt", step, best, bad_vals)
        plot_curves(csv_path, out / "curves.png")
    _end_distributed(world, owned_group)
    return out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"


def _unwrap(m: nn.Module) -> nn.Module:
    return getattr(m, "module", m)


def _plain(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@contextlib.contextmanager
def _signals_deferred():
    """Ctrl-C and SIGTERM (where Python handles them) take effect when the block is done, not inside it.

    Around taking a batch from the workers: a KeyboardInterrupt raised while a batch is being unpickled cuts
    the worker's file-descriptor handshake short, and the worker prints an EOFError traceback of its own
    after the run has stopped. Around the interrupt's save: the checkpoint stays whole. Python-level, because
    blocking the signal in the main thread does not stop the kernel handing it to another thread of the
    process, whose C handler still makes the main thread raise at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[tuple] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if callable(signal.getsignal(sig)):  # ignored or default-action signals are left as they are
            old[sig] = signal.signal(sig, lambda signum, frame: got.append((signum, frame)))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if got:
        signum, frame = got[0]
        old[signum](signum, frame)


def _loader_worker_init(_worker_id: int) -> None:
    """Data loader workers leave Ctrl-C and SIGTERM to the main process. A scheduler's preemption or a
    ``kill`` of the process group reaches every process at once, and a worker that died of it made PyTorch
    raise "DataLoader worker is killed" in the main process, mid-save: the interrupted step was lost, with a
    traceback. The main process stops its workers on the way out, and they exit by themselves if it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _save_best(path: Path, model: nn.Module, cfg: TrainConfig, step: int, res) -> None:
    save_checkpoint(path, model, extra={"recipe": cfg.recipe, "step": step,
                                        "metrics": {"val_psnr_y": res.psnr_y, "val_ssim_y": res.ssim_y,
                                                    "val_detail": res.detail, "val": cfg.val}})


def plot_curves(csv_path: Path, png_path: Path) -> None:
    """Loss and validation PSNR against step, from the run's CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("loss_g", "generator"), ("loss_d", "discriminator")):
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        if pts:
            a.plot(*zip(*pts), label=label)
    a.set_yscale("log")
    if any(r.get("loss_d") for r in rows):
        a.legend()
    a.set_xlabel("step")
    a.set_ylabel("training loss")
    vals = [(int(r["step"]), float(r["val_psnr"])) for r in rows if r["val_psnr"]]
    if vals:
        b.plot(*zip(*vals), marker=".", label="model")
        bic = [float(r["bicubic_psnr"]) for r in rows if r["bicubic_psnr"]]
        if bic:
            b.axhline(bic[0], color="gray", linestyle="--", label="bicubic")
            # the first validations of a run from scratch sit far below bicubic: keep the scale on what matters
            top = max(v for _, v in vals)
            b.set_ylim(min(bic[0], *(v for _, v in vals[-3:])) - 1.0, max(top, bic[0]) + 0.3)
        b.legend()
    b.set_xlabel("step")
    b.set_ylabel("validation Y-PSNR (dB)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
