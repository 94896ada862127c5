"""`python evaluate.py ckpt_path=... [metrics=[fid,kid,is,nll,vlb]] [samplers=[heun,euler]] [num_steps=[9,18]]`.

Evaluates a trained model's EMA weights: the objective on the test split (fixed t grid, seeded
noise), sample quality (FID/KID/IS) for every sampler × step count, and bits/dim (PF-ODE, and the
DDPM bound for VP processes), which do not depend on the sampler. Writes results.json and, for
more than one sampler setting, metric_vs_nfe.png. Samplers are options of the `sampler` group,
composed exactly as `python train.py sampler=NAME` would; null is the run's own sampler.
"""

from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.build import ConfigError
from diffusion_lab.checkpoint import CheckpointError, module_from_checkpoint
from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.cli.common import fail
from diffusion_lab.metrics import InceptionWeightsUnavailable
from diffusion_lab.metrics.report import QUALITY, check_metrics, evaluate, real_floor
from diffusion_lab.results import versions, write_json
from diffusion_lab.visualize import plot_metric_vs_nfe


def sampler_config(name: str | None, run_cfg: DictConfig) -> DictConfig:
    """The `sampler=name` config node as the train config composes it (None: the run's own)."""
    if name is None:
        return run_cfg.sampler
    return compose(config_name="train", overrides=[f"sampler={name}"]).sampler


def main_impl(cfg: DictConfig) -> dict:
    evaluation = OmegaConf.to_container(cfg.evaluation, resolve=True)
    evaluation["metrics"] = check_metrics(cfg.metrics)
    module, parts, run_cfg = module_from_checkpoint(cfg.ckpt_path)
    pl.seed_everything(cfg.seed)
    trainer = pl.Trainer(
        accelerator=cfg.accelerator, devices=1, logger=False, enable_checkpointing=False
    )
    results = {
        "ckpt_path": str(cfg.ckpt_path),
        "metrics": trainer.test(module, datamodule=parts.datamodule)[0],
    }
    out = Path(cfg.paths.output_dir)

    quality = [m for m in evaluation["metrics"] if m in QUALITY]
    rows = []
    for name in cfg.samplers if quality else []:
        for steps in cfg.num_steps:
            sampler_cfg = sampler_config(name, run_cfg)
            if steps is not None:
                sampler_cfg.num_steps = steps
            sampler = hydra.utils.instantiate(sampler_cfg)
            scores = evaluate(
                module,
                parts.datamodule,
                {**evaluation, "metrics": quality},
                cfg.paths.cache_dir,
                sampler=sampler,
                floor=False,
            )
            label = name or OmegaConf.select(run_cfg, "choices.sampler") or "run's sampler"
            rows.append(
                {
                    "sampler": label,
                    "num_steps": sampler_cfg.num_steps,
                    "nfe": scores.pop("nfe"),
                    "metrics": scores,
                }
            )
            print(f"{label} {sampler_cfg.num_steps} steps ({rows[-1]['nfe']} NFE): {scores}")
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
    print(f"\nresults: {out / 'results.json'}")
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        main_impl(cfg)
    except (
        CheckpointError,
        ConfigError,
        ValueError,
        FileNotFoundError,
        InceptionWeightsUnavailable,
    ) as err:
        fail(err)


if __name__ == "__main__":
    main()
