"""`python sample.py ckpt_path=... [sampler=heun] [num_steps=..] [num_samples=..] [seed=..]`.

Rebuilds process, denoiser and sampler from the config stored in the checkpoint, samples with the
EMA weights and writes samples.png (grid) and samples.pt (tensor) into the run directory.
With `init_image=PATH start_t=T` it restores the user's own degraded image instead: the image is
taken as x_T at level T and the reverse process runs from there (Cold Diffusion's use case).
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
from diffusion_lab.samplers.grids import starting_at


def load_image(path: str, data_shape: tuple[int, ...]) -> torch.Tensor:
    """An image file as a (1, C, H, W) tensor in [−1, 1], resized to the model's data shape."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor, resize

    if len(data_shape) != 3:
        raise ConfigError(
            f"init_image needs an image model; this one generates data of shape {data_shape}"
        )
    try:
        image = Image.open(path).convert("L" if data_shape[0] == 1 else "RGB")
    except FileNotFoundError:
        raise ConfigError(f"init_image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ConfigError(f"init_image {path} is not a readable image ({err})") from None
    x = resize(pil_to_tensor(image).float() / 127.5 - 1, list(data_shape[1:]), antialias=True)
    return x.clamp(-1, 1).unsqueeze(0)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    try:
        module, parts, run_cfg = module_from_checkpoint(
            cfg.ckpt_path, sampler_cfg=cfg.get("sampler")
        )
        sampler = (
            parts.sampler
            if cfg.num_steps is None
            else partial(parts.sampler, num_steps=cfg.num_steps)
        )
        x_T = None
        if cfg.init_image is not None:
            x_T = load_image(cfg.init_image, parts.process.data_shape).repeat(
                cfg.num_samples, 1, 1, 1
            )
            sampler = partial(
                sampler,
                grid=partial(starting_at, grid=sampler.keywords["grid"], t_start=cfg.start_t),
            )
    except (CheckpointError, ConfigError, ValueError) as err:
        fail(err)
    device = (
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    module.to(device)
    out = Path(cfg.paths.output_dir)
    try:
        facts = sample_and_save(module, cfg.num_samples, cfg.seed, out, sampler=sampler, x_T=x_T)
    except NotImplementedError as err:
        fail(err)
    facts.update(
        ckpt_path=str(cfg.ckpt_path),
        sampler=OmegaConf.to_container(run_cfg.sampler),
        num_steps=sampler.keywords.get("num_steps"),
        init_image=cfg.init_image,
        start_t=cfg.start_t if cfg.init_image is not None else None,
        versions=versions(),
    )
    write_json(out / "results.json", facts)
    print(f"\nsamples: {facts['grid']}  ({facts['nfe']} NFE, {facts['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
