"""Framework overhead of a training step: diffusion_lab's Lightning loop vs a bare PyTorch loop.

Both sides use the same composed config (backbone, batch, AdamW, gradient clipping, data), on the
same machine, in one process, alternating A/B/A/B so drift hits both. The framework side is
`trainer.fit` on the real DiffusionModule (objective, EMA, logging, callbacks; validation,
checkpointing and sample grids off, as they are not part of a step); the bare side is a plain loop
over the same DataLoader computing x_t = α x0 + σ z, the EDM-preconditioned denoiser and the
weighted loss by hand, plus an EMA update. Prints images/s for each and the ratio.

    python scripts/bench_train.py [--steps 60] [--repeats 3] [override ...]
"""

import argparse
import copy
import statistics
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from diffusion_lab.build import build, build_module
from diffusion_lab.cli import CONFIG_DIR


def load_cfg(overrides, out_dir):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = out_dir
        del cfg.hydra
    return cfg


def framework(cfg, steps):
    """images/s of trainer.fit over `steps` steps, after a warm-up fit of 5 steps."""
    pl.seed_everything(cfg.seed, verbose=False)
    parts = build(cfg)
    module = build_module(cfg, parts)
    kwargs = dict(
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    callbacks = [instantiate(cfg.callbacks.throughput), instantiate(cfg.callbacks.lr_monitor)]
    instantiate(cfg.trainer, max_steps=5, callbacks=[], **kwargs).fit(
        module, datamodule=parts.datamodule
    )
    trainer = instantiate(cfg.trainer, max_steps=steps, callbacks=callbacks[:1], **kwargs)
    start = time.perf_counter()
    trainer.fit(module, datamodule=parts.datamodule)
    return steps * cfg.dataset.batch_size / (time.perf_counter() - start)


def bare(cfg, steps):
    """The same step written by hand: no Lightning, no framework classes in the loop."""
    torch.manual_seed(cfg.seed)
    parts = build(cfg)
    net, sched = parts.denoiser.backbone, parts.process.schedule
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(
        net.parameters(), lr=cfg.optim.optimizer.lr, betas=tuple(cfg.optim.optimizer.betas)
    )
    dm = parts.datamodule
    dm.setup("fit")
    loader, sd = dm.train_dataloader(), cfg.dataset.sigma_data

    def run(n):
        done = 0
        while done < n:
            for x0, _ in loader:
                t = torch.rand(x0.shape[0]) * (1 - 1e-4) + 1e-4
                lam = sched.logsnr(t).view(-1, 1, 1, 1)
                alpha, sigma = torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
                x_t = alpha * x0 + sigma * torch.randn_like(x0)
                v = alpha**2 * sd**2 + sigma**2
                out = net(x_t / v.sqrt(), -lam.flatten().clamp(-40, 40) / 8)
                d = alpha * sd**2 / v * x_t + sigma * sd / v.sqrt() * out
                loss = (v / (sigma**2 * sd**2) * (d - x0) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.trainer.gradient_clip_val)
                opt.step()
                with torch.no_grad():
                    for pe, p in zip(ema.parameters(), net.parameters()):
                        pe.lerp_(p, 0.01)
                done += 1
                if done == n:
                    return

    run(5)
    start = time.perf_counter()
    run(steps)
    return steps * cfg.dataset.batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. trainer.accelerator=cpu"
    )
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        cfg = load_cfg(["trainer.accelerator=cpu", *args.overrides], out)
        results = {"bare": [], "framework": []}
        for r in range(args.repeats):
            results["bare"].append(bare(cfg, args.steps))
            results["framework"].append(framework(cfg, args.steps))
            print(
                f"repeat {r}: bare {results['bare'][-1]:.1f} img/s, framework {results['framework'][-1]:.1f} img/s"
            )
    b, f = statistics.median(results["bare"]), statistics.median(results["framework"])
    print(
        f"\nbatch {cfg.dataset.batch_size}, {args.steps} steps x {args.repeats}, torch threads {torch.get_num_threads()}"
    )
    print(f"bare loop   {b:8.1f} images/s (median)")
    print(f"framework   {f:8.1f} images/s (median)")
    print(f"ratio framework/bare = {f / b:.3f}  (overhead {100 * (1 - f / b):.1f}%, target <= 10%)")


if __name__ == "__main__":
    main()
