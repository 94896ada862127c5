"""`python sample.py ckpt_path=... [sampler=heun] [num_steps=..] [num_samples=..] [seed=..]`.

Rebuilds process, denoiser and sampler from the config stored in the checkpoint, samples with the
EMA weights and writes samples.png (grid) and samples.pt (tensor) into the run directory.
"""

from functools import partial
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.build import ConfigError
from diffusion_lab.checkpoint import CheckpointError, module_from_checkpoint
from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.cli.common import fail, sample_and_save
from diffusion_lab.results import versions, write_json


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    try:
        module, parts, run_cfg = module_from_checkpoint(
            cfg.ckpt_path, sampler_cfg=cfg.get("sampler")
        )
    except (CheckpointError, ConfigError) as err:
        fail(err)
    sampler = (
        parts.sampler if cfg.num_steps is None else partial(parts.sampler, num_steps=cfg.num_steps)
    )
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device)
    facts = sample_and_save(
        module, cfg.num_samples, cfg.seed, Path(cfg.paths.output_dir), sampler=sampler
    )
    facts.update(
        ckpt_path=str(cfg.ckpt_path),
        sampler=OmegaConf.to_container(run_cfg.sampler),
        num_steps=sampler.keywords.get("num_steps"),
        versions=versions(),
    )
    write_json(Path(cfg.paths.output_dir) / "results.json", facts)
    print(f"\nsamples: {facts['grid']}  ({facts['nfe']} NFE, {facts['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
