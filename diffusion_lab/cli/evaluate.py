"""`python evaluate.py ckpt_path=... [metrics=[fid,kid,is,nll,vlb]] [samplers=[heun,euler]] [num_steps=[9,18]]`.

Evaluates a trained model's EMA weights (samples drawn by `devices=N` processes together, the
same set for any N: sample i is seeded by (seed, i)): the objective on the test split (fixed t grid, seeded
noise), sample quality (FID/KID/IS) for every sampler × step count, and bits/dim (PF-ODE, and the
DDPM bound for VP processes), which do not depend on the sampler. Writes results.json and, for
more than one sampler setting, metric_vs_nfe.png. Samplers are options of the `sampler` group,
composed exactly as `python train.py sampler=NAME` would; null is the run's own sampler.

`logger=wandb` (or csv, tensorboard; default none) also logs the test metrics and the
sampler × steps rows: W&B gets them as the table `metric_vs_nfe` (sampler, num_steps, nfe, one
column per metric), the others as scalars `<sampler>/<metric>` at step = NFE; the plot goes to
the loggers that take images.
"""

import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import Logger, WandbLogger

from diffusion_lab.build import check_sampler, module_from_checkpoint
from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.cli.common import terminate_on_sigterm, user_errors
from diffusion_lab.launch import on_devices
from diffusion_lab.loggers import log_image
from diffusion_lab.metrics.names import QUALITY, check_metrics
from diffusion_lab.metrics.report import evaluate, generate_many, real_floor
from diffusion_lab.results import versions, write_json
from diffusion_lab.values import EVALUATE_KEYS, ConfigError, check_value, check_values
from diffusion_lab.visualize import plot_metric_vs_nfe


def sampler_config(name: str | None, run_cfg: DictConfig) -> DictConfig:
    """The `sampler=name` config node as the train config composes it (None: the run's own),
    placed in the run's config so that interpolations such as Cold Diffusion's
    `num_steps: ${degradation.num_levels}` read the checkpoint's values, not the defaults'."""
    if name is None:
        return run_cfg.sampler.copy()
    if not isinstance(name, str):
        raise ConfigError(f"samplers: {name!r} is not an option of the sampler group")
    try:
        node = compose(config_name="train", overrides=[f"sampler={name}"]).sampler
    except Exception as err:  # hydra's MissingConfigException and friends
        raise ConfigError(f"samplers: {name!r}: {' '.join(str(err).split())[:300]}") from None
    cfg = OmegaConf.create(OmegaConf.to_container(run_cfg, resolve=False))
    cfg.sampler = OmegaConf.to_container(node, resolve=False)
    return cfg.sampler


def sampler_settings(cfg: DictConfig, run_cfg: DictConfig, process) -> list[tuple]:
    """(label, num_steps, sampler) for every sampler × step count, each checked against the
    checkpoint's process as train.py checks its own sampler, before any of them runs."""
    if not OmegaConf.is_list(cfg.samplers) or not OmegaConf.is_list(cfg.num_steps):
        raise ConfigError(
            "samplers and num_steps must be lists, e.g. samplers=[heun] num_steps=[18]"
        )
    settings = []
    for name in cfg.samplers:
        label = name or OmegaConf.select(run_cfg, "choices.sampler") or "run's sampler"
        for steps in cfg.num_steps:
            sampler_cfg = sampler_config(name, run_cfg)
            check_value("num_steps", steps, "steps_or_null")
            if steps is not None:
                sampler_cfg.num_steps = steps
            sampler = hydra.utils.instantiate(sampler_cfg)
            choices = {**OmegaConf.to_container(run_cfg.get("choices") or {}), "sampler": label}
            check_sampler(OmegaConf.create({"choices": choices}), sampler, process)
            settings.append((label, sampler_cfg.num_steps, sampler))
    return settings


def make_loggers(cfg: DictConfig, run_cfg: DictConfig) -> list[Logger]:
    """The `logger` group's loggers, named and tagged by the checkpoint's choices; both configs
    (this one and the run's) go to each logger's hyperparameters."""
    with open_dict(cfg):
        cfg.choices = OmegaConf.to_container(run_cfg.get("choices") or {})
    loggers = [instantiate(lg) for lg in cfg.logger.values() if lg is not None]
    if loggers:
        config = {
            "evaluate": OmegaConf.to_container(cfg, resolve=True),
            "run": OmegaConf.to_container(run_cfg, resolve=True),
        }
        for lg in loggers:
            lg.log_hyperparams(config)
    return loggers


def _scalars(d: dict | None) -> dict:
    return {
        k: v
        for k, v in (d or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def log_results(loggers: list[Logger], results: dict) -> None:
    """Sampler × steps rows as the W&B table `metric_vs_nfe` (other loggers: scalars
    `<sampler>/<metric>` at step = NFE), bits/dim and the real floor as scalars, and the plot."""
    rows = results["samplers"]
    metrics = sorted({k for r in rows for k in _scalars(r["metrics"])})
    for lg in loggers:
        if rows and isinstance(lg, WandbLogger):
            lg.log_table(
                key="metric_vs_nfe",
                columns=["sampler", "num_steps", "nfe", *metrics],
                data=[
                    [
                        r["sampler"],
                        r["num_steps"],
                        r["nfe"],
                        *(r["metrics"].get(k) for k in metrics),
                    ]
                    for r in rows
                ],
            )
        else:
            for r in rows:
                scalars = _scalars(r["metrics"])
                lg.log_metrics(
                    {f"{r['sampler']}/{k}": v for k, v in scalars.items()}, step=r["nfe"]
                )
        once = {**_scalars(results.get("likelihood")), **_scalars(results.get("real_floor"))}
        if once:
            lg.log_metrics(once)
    if results.get("plot"):
        log_image(loggers, "metric_vs_nfe", results["plot"])
    for lg in loggers:
        lg.finalize("success")


def main_impl(cfg: DictConfig) -> dict:
    evaluation = OmegaConf.to_container(cfg.evaluation, resolve=True)
    evaluation["metrics"] = check_metrics(cfg.metrics)
    check_values(cfg, EVALUATE_KEYS)
    module, parts, run_cfg = module_from_checkpoint(cfg.ckpt_path, paths=cfg.paths)
    quality = [m for m in evaluation["metrics"] if m in QUALITY]
    settings = sampler_settings(cfg, run_cfg, parts.process) if quality else []
    generated = None
    if settings and module.process.has_prior:  # first, so that ranks > 0 stop after sampling
        generated = on_devices(
            generate_settings,
            module,
            settings,
            evaluation,
            device={"gpu": "cuda"}.get(cfg.accelerator, cfg.accelerator),
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=cfg.strategy,
        )
        if generated is None:  # a rank > 0 of a re-launched script: rank 0 scores
            return {}
    loggers = make_loggers(cfg, run_cfg)
    pl.seed_everything(cfg.seed)
    trainer = pl.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=loggers or False,
        enable_checkpointing=False,
    )
    results = {
        "ckpt_path": str(cfg.ckpt_path),
        "metrics": trainer.test(module, datamodule=parts.datamodule)[0],
    }
    out = Path(cfg.paths.output_dir)

    rows = []
    for k, (label, num_steps, sampler) in enumerate(settings):
        start = time.perf_counter()
        scores = evaluate(
            module,
            parts.datamodule,
            {**evaluation, "metrics": quality},
            cfg.paths.cache_dir,
            sampler=sampler,
            floor=False,
            samples=generated[k] if generated else None,
        )
        if generated:
            start -= generated[k][2]
        seconds = time.perf_counter() - start  # sampling and scoring
        nfe = scores.pop("nfe")
        rows.append(
            {
                "sampler": label,
                "num_steps": num_steps,
                "nfe": nfe,
                "seconds": seconds,
                "metrics": scores,
            }
        )
        print(f"{label} {num_steps} steps ({rows[-1]['nfe']} NFE): {scores}")
    results["samplers"] = rows
    if rows and evaluation["real_floor"]:  # real test images vs the training split, for scale
        results["real_floor"] = real_floor(
            parts.datamodule, {**evaluation, "metrics": quality}, cfg.paths.cache_dir
        )
    likelihood = [m for m in evaluation["metrics"] if m not in QUALITY]
    if likelihood:
        results["likelihood"] = evaluate(
            module, parts.datamodule, {**evaluation, "metrics": likelihood}, cfg.paths.cache_dir
        )
    if len(rows) > 1:
        results["plot"] = str(plot_metric_vs_nfe(rows, out / "metric_vs_nfe.png"))
    results["evaluation"] = evaluation
    results["versions"] = versions()
    write_json(out / "results.json", results)
    if loggers:
        log_results(loggers, results)
    print(f"\nresults: {out / 'results.json'}")
    return results


def generate_settings(ranks, module, settings, evaluation: dict) -> list | None:
    """Every sampler setting's samples, (x, nfe, seconds) each, drawn by all processes together
    (sample i seeded by (evaluation.seed, i), so the set does not depend on their number);
    returned on rank 0, None on the others."""
    module.to(ranks.device)
    out = []
    for _, _, sampler in settings:
        ranks.barrier()
        start = time.perf_counter()
        x, nfe = generate_many(
            module,
            evaluation["num_samples"],
            int(evaluation["seed"]),
            evaluation["batch_size"],
            sampler,
            progress=ranks.rank == 0,
            ranks=ranks,
        )
        out.append((x, nfe, time.perf_counter() - start))
    return out if ranks.rank == 0 else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors(), terminate_on_sigterm("results.json was not written"):
        main_impl(cfg)


if __name__ == "__main__":
    main()
