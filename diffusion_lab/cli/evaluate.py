"""`python evaluate.py ckpt_path=...`: evaluate a trained model's EMA weights on the test split.

Reports the objective on the fixed validation t grid (seeded noise), comparable across runs of the
same objective. Sample-quality metrics (FID/IS/KID) and bits/dim plug in here (issue 4).
"""

from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from diffusion_lab.build import ConfigError
from diffusion_lab.checkpoint import CheckpointError, module_from_checkpoint
from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.cli.common import fail
from diffusion_lab.results import versions, write_json


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        module, parts, _ = module_from_checkpoint(cfg.ckpt_path)
    except (CheckpointError, ConfigError) as err:
        fail(err)
    pl.seed_everything(cfg.seed)
    trainer = pl.Trainer(
        accelerator=cfg.accelerator, devices=1, logger=False, enable_checkpointing=False
    )
    try:
        metrics = trainer.test(module, datamodule=parts.datamodule)[0]
    except FileNotFoundError as err:
        fail(err)
    write_json(
        Path(cfg.paths.output_dir) / "results.json",
        {"ckpt_path": str(cfg.ckpt_path), "metrics": metrics, "versions": versions()},
    )
    print(f"\nresults: {Path(cfg.paths.output_dir) / 'results.json'}")


if __name__ == "__main__":
    main()
