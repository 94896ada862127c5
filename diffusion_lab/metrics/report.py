"""The metrics a run reports, as one call: sample quality, bits/dim, the DDPM bound, the real floor.

`evaluate(module, datamodule, cfg)` reads the `evaluation` config node (configs/evaluation/):

    metrics       any of fid, kid, is (torch-fidelity), nll (PF-ODE bits/dim), vlb (DDPM bound)
    extractor     inception | domain (the dataset's own classifier; keys say which: fid_digits_2k)
    num_samples   generated images scored against the training split (EMA weights, fixed seeds)
    nll.*         test images, solver and tolerances of the PF-ODE likelihood

Sample i is seeded by (seed, i) (diffusion_lab/seeds.py), so a count and a seed fix the samples
exactly, for any batch size and any number of processes (evaluate.py devices=N).
Metrics that do not apply to the process (nll without full-rank noise, vlb off VP) are skipped
with the reason in `skipped`, never silently.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffusion_lab.metrics.classifier import train_or_load_classifier
from diffusion_lab.metrics.fidelity import evaluate_sample_quality
from diffusion_lab.metrics.likelihood import bits_per_dim, default_t_min
from diffusion_lab.metrics.names import LIKELIHOOD, QUALITY, check_metrics
from diffusion_lab.metrics.vlb import ddpm_vlb_bits_per_dim
from diffusion_lab.sampling import generate_ema, require_finite_samples


@torch.no_grad()
def generate_many(
    module, num_samples: int, seed: int, batch_size: int, sampler=None, progress=True, ranks=None
) -> tuple[Tensor | None, int]:
    """num_samples EMA samples on the CPU, sample i seeded by (seed, i), in batches of
    batch_size. Returns (x, NFE per sample). With `ranks` (diffusion_lab/launch.py) each process
    draws every world-th batch and rank 0 gets them all back in order (the others get None)."""
    starts = list(range(0, num_samples, batch_size))
    mine = ranks.share(starts) if ranks is not None else starts
    out, nfe = [], 0
    for start in tqdm(mine, desc="generating", disable=not progress, leave=False):
        idx = range(start, min(start + batch_size, num_samples))
        x, nfe = generate_ema(module, len(idx), seed=seed, sampler=sampler, indices=idx)
        out.append(x.float().cpu())
    if ranks is None or ranks.world == 1:
        return torch.cat(out), nfe
    parts = ranks.gather(out)  # rank r's batches are starts[r::world], in that order
    if parts is None:
        return None, nfe
    batches = [None] * len(starts)
    for r, batches_of_r in enumerate(parts):
        batches[r :: ranks.world] = batches_of_r
    return torch.cat(batches), nfe


def _held_out_images(datamodule, n: int, split: str = "test") -> tuple[Tensor, Tensor]:
    """The first n images (and labels) of the test or validation split: a fixed subset."""
    datamodule.setup("test" if split == "test" else "validate")
    data = datamodule.test_set if split == "test" else datamodule.val_set
    n = min(n, len(data))
    pairs = [data[i] for i in range(n)]
    return torch.stack([p[0] for p in pairs]), torch.as_tensor([int(p[1]) for p in pairs])


def quality(samples: Tensor, datamodule, cfg: Mapping, cache_dir) -> dict:
    """FID/KID/IS of samples against the training split; with the domain extractor, also the
    classifier's held-out accuracy (`extractor_accuracy`), so its features can be judged."""
    datamodule = datamodule.pixels  # a latent datamodule's images: samples come decoded
    metrics = [m for m in cfg["metrics"] if m in QUALITY]
    extra, classifier = {}, None
    if cfg["extractor"] == "domain":
        datamodule.setup("fit")
        classifier, accuracy = train_or_load_classifier(datamodule, cache_dir, verbose=False)
        extra["extractor_accuracy"] = accuracy
    scores = evaluate_sample_quality(
        samples,
        datamodule,
        cache_dir,
        extractor=cfg["extractor"],
        metrics=metrics,
        kid_subset_size=min(cfg["kid_subset_size"], len(samples)),
        inception_weights=cfg.get("inception_weights"),
        classifier=classifier,
    )
    return {**scores, **extra}


def real_floor(datamodule, cfg: Mapping, cache_dir) -> dict:
    """The same metrics for real test images against the training split: the best a model can do.

    The test split may be smaller than num_samples (digits: 180 images); `evaluate` then also
    scores the first samples at that count, since FID's bias depends on it."""
    x, _ = _held_out_images(datamodule.pixels, cfg["num_samples"])
    scores = quality(x, datamodule, cfg, cache_dir)
    return {f"real_{k}": v for k, v in scores.items() if k != "extractor_accuracy"}


def likelihood(module, datamodule, cfg: Mapping, which: str, split: str = "test") -> dict:
    """Mean bits/dim over the first nll.num_images images of `split` (EMA weights, seeded)."""
    process, denoiser, opts = module.process, module.ema, cfg["nll"]
    x0, y = _held_out_images(datamodule, opts["num_images"], split)
    cond = y.to(module.device) if module.class_conditional else None
    gen = torch.Generator(device="cpu").manual_seed(int(cfg["seed"]))
    start = time.perf_counter()
    bpd, nfe = [], 0
    for i in range(0, len(x0), opts["batch_size"]):
        xb = x0[i : i + opts["batch_size"]].to(module.device)
        cb = None if cond is None else cond[i : i + opts["batch_size"]]
        if which == "nll":
            r = bits_per_dim(
                denoiser,
                process,
                xb,
                cond=cb,
                dequantize=opts["dequantize"],
                rtol=opts["rtol"],
                atol=opts["atol"],
                method=opts["method"],
                generator=gen,
            )
        else:  # from where the likelihood ODE starts: at t = 0 the cosine's SNR is infinite and
            # the bound would stay ~2 bits/dim loose for every T (metrics/vlb.py)
            t_min = default_t_min(process, device=module.device)
            r = ddpm_vlb_bits_per_dim(
                denoiser,
                process,
                xb,
                num_steps=opts["vlb_steps"],
                t_min=t_min,
                cond=cb,
                generator=gen,
            )
        bpd.append(r.bits_per_dim.float().cpu())
        nfe += r.nfe
    values = torch.cat(bpd)
    n = len(values)
    key = f"{'bpd' if which == 'nll' else 'vlb_bpd'}_{n}"
    return {
        key: float(values.mean()),
        f"{key}_sem": float(values.std() / math.sqrt(n)) if n > 1 else float("nan"),
        f"{key}_nfe": nfe,
        f"{key}_seconds": time.perf_counter() - start,
        f"{key}_t_min": float(r.t_min) if which == "nll" else t_min,
    }


def _skip_reason(process, metric: str, latent: bool = False) -> str | None:
    if latent:
        return (
            f"{metric} would be of the latents, not of the images: the decoder is not invertible, "
            "so a latent model has no bits/dim of its images"
        )
    if metric == "nll" and not (process.linear and process.full_rank_noise):
        return "nll needs a linear degradation with full-rank noise"
    if metric == "vlb":
        if not process.isotropic:
            return "vlb needs an isotropic VP process"
        state = process.state(torch.full((1,), 0.5))
        if abs(float(state.alpha.flatten()[0] ** 2 + state.sigma.flatten()[0] ** 2) - 1) > 1e-4:
            return "vlb needs a variance-preserving process (α² + σ² = 1)"
    return None


def evaluate(
    module,
    datamodule,
    cfg: Mapping,
    cache_dir,
    sampler=None,
    floor=False,
    progress=True,
    samples=None,
) -> dict:
    """Every metric in cfg['metrics'] for `module` (EMA weights); `floor` adds real-vs-real.
    `samples`: (x, nfe, seconds) generated beforehand (evaluate.py over several processes)."""
    metrics = check_metrics(cfg["metrics"])
    datamodule = datamodule.pixels  # a latent model's samples are decoded: score them as images
    out: dict = {"skipped": {}}
    if not module.process.has_prior:  # restoration-only (snow): nothing to generate from
        for m in [m for m in metrics if m in QUALITY]:
            out["skipped"][m] = (
                f"{m} scores generated samples; this degradation has no prior (restoration only)"
            )
    elif any(m in QUALITY for m in metrics):
        if samples is None:
            start = time.perf_counter()
            x, nfe = generate_many(
                module, cfg["num_samples"], int(cfg["seed"]), cfg["batch_size"], sampler, progress
            )
            samples = (x, nfe, time.perf_counter() - start)
        samples, out["nfe"], out["sampling_seconds"] = samples
        require_finite_samples(samples)
        start = time.perf_counter()
        out.update(quality(samples, datamodule, cfg, cache_dir))
        out["quality_seconds"] = time.perf_counter() - start
        if floor:  # FID/KID depend on the count: score the model at the floor's count too
            real = real_floor(datamodule, cfg, cache_dir)
            out.update(real)
            n_real = len(_held_out_images(datamodule, cfg["num_samples"])[0])
            if n_real < len(samples):
                out.update(quality(samples[:n_real], datamodule, cfg, cache_dir))
    for which in LIKELIHOOD:
        if which not in metrics:
            continue
        reason = _skip_reason(module.process, which, latent=module.codec is not None)
        if reason:
            out["skipped"][which] = reason
        else:
            out.update(likelihood(module, datamodule, cfg, which))
    return out
