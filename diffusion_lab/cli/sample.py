"""`python sample.py ckpt_path=... [sampler=heun] [num_steps=..] [num_samples=..] [seed=..]`.

Rebuilds process, denoiser and sampler from the config stored in the checkpoint, samples with the
EMA weights and writes samples.png (a grid of the first 64) and the samples into the run directory:
samples.pt, a PNG folder or samples.npz (`format=`), block by block (`batch_size=`), resumable by
rerunning with the same hydra.run.dir, over `devices=N` processes (diffusion_lab/streaming.py,
launch.py). Sample i is seeded by (seed, i), so none of these choices changes the samples.
Class-conditional checkpoints take `class_label=3|[1,7]|all` with classifier-free guidance
`guidance=w` (and `guidance_rescale=φ`), see diffusion_lab/guidance.py.
With `init_image=PATH start_t=T` it restores the user's own degraded image instead: the image is
taken as x_T at level T and the reverse process runs from there (Cold Diffusion's use case).
With `onnx=PATH` (export.py's model.onnx or model.int8.onnx) ONNX Runtime evaluates the denoiser;
the checkpoint still gives the process and the sampler.
With `superres=[CKPT, ...]` it samples a cascade (Cascaded Diffusion, diffusion_lab/cascade/):
ckpt_path is the base, each CKPT a super-resolution stage; preview.png (the base) comes first.
"""

import inspect
import sys
import time
from functools import partial
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm.auto import tqdm

from diffusion_lab.build import CALL_ARGUMENTS, module_from_checkpoint
from diffusion_lab.cascade.pipeline import check_chain, sample_cascade
from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.cli.common import terminate_on_sigterm, user_errors
from diffusion_lab.guidance import spread_labels
from diffusion_lab.launch import on_devices
from diffusion_lab.results import versions, write_json
from diffusion_lab.samplers.grids import starting_at
from diffusion_lab.sampling import generate_ema, require_finite_samples
from diffusion_lab.streaming import SampleStore
from diffusion_lab.values import ConfigError, check_values
from diffusion_lab.visualize import save_samples

SAMPLE_KEYS = (
    ("num_steps", "steps_or_null"),
    ("num_samples", "samples"),
    ("batch_size", "samples"),
    ("seed", "seed"),
    ("start_t", "level"),
    ("guidance", "guidance"),
    ("guidance_rescale", "unit"),
)
MAX_INIT_PIXELS = 4096 * 4096  # an init_image is resized to the model's size; larger is a mistake


def load_image(path: str, data_shape: tuple[int, ...]) -> torch.Tensor:
    """An image file as a (1, C, H, W) tensor in [−1, 1], resized to the model's data shape."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor, resize

    if len(data_shape) != 3:
        raise ConfigError(
            f"init_image needs an image model; this one generates data of shape {data_shape}"
        )
    try:
        image = Image.open(path)  # reads the header only
        if image.width * image.height > MAX_INIT_PIXELS:
            raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels")
        image = image.convert("L" if data_shape[0] == 1 else "RGB")
    except FileNotFoundError:
        raise ConfigError(f"init_image not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"init_image {path} is a directory, not an image file") from None
    except Image.DecompressionBombError as err:  # raised by PIL itself above 2 × its own limit
        raise ConfigError(
            f"init_image {path} is too large to read safely ({err}; this reads up to "
            f"{MAX_INIT_PIXELS} pixels and resizes to {tuple(data_shape[1:])}): downscale it first"
        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise ConfigError(f"init_image {path} is not a readable image ({err})") from None
    x = resize(pil_to_tensor(image).float() / 127.5 - 1, list(data_shape[1:]), antialias=True)
    return x.clamp(-1, 1).unsqueeze(0)


def _plain(value):
    return OmegaConf.to_container(value) if isinstance(value, ListConfig) else value


def requested_labels(cfg: DictConfig, module, datamodule, ckpt_path) -> torch.Tensor | None:
    """`class_label` as (num_samples,) labels, checked against the checkpoint and its dataset."""
    spec = cfg.get("class_label")
    if spec is None:
        return None
    spec = _plain(spec)
    if not module.class_conditional:
        raise ConfigError(
            f"class_label={spec} needs a class-conditional checkpoint; {ckpt_path} was trained "
            "with conditional=false. Leave class_label unset, or train with conditional=true "
            "backbone.num_classes=<number of classes>."
        )
    return spread_labels(spec, cfg.num_samples, datamodule.num_classes or module.num_classes)


def with_num_steps(sampler, num_steps: int | None, who: str):
    """(`sampler` with `num_steps` bound when given, the sampler function's parameters); a
    ConfigError when the sampler chooses its own steps (adaptive, consistency...)."""
    takes = inspect.signature(getattr(sampler, "func", sampler)).parameters
    if num_steps is None:
        return sampler, takes
    if "num_steps" not in takes:
        raise ConfigError(
            f"num_steps={num_steps}: {who} chooses its own steps (it takes "
            f"{', '.join(k for k in takes if k not in CALL_ARGUMENTS)}); leave num_steps unset."
        )
    return partial(sampler, num_steps=num_steps), takes


def main_impl(cfg: DictConfig) -> dict:
    check_values(cfg, SAMPLE_KEYS)
    module, parts, run_cfg = module_from_checkpoint(
        cfg.ckpt_path,
        sampler_cfg=cfg.get("sampler"),
        paths=cfg.paths,
        sampler_choice=HydraConfig.get().runtime.choices.get("sampler"),
    )
    sampler, takes = with_num_steps(parts.sampler, cfg.num_steps, "this sampler")
    x_T = None
    if cfg.init_image is not None and "grid" not in takes:
        raise ConfigError("init_image restarts a fixed grid at start_t; use a grid sampler (ddim)")
    if cfg.init_image is not None and module.codec is not None:
        raise ConfigError(
            "init_image is taken as the degraded state x_T, but this is a latent model (trained "
            "with latent=...): its process degrades latents, not images. Sample without init_image."
        )
    if cfg.init_image is not None:
        x_T = load_image(cfg.init_image, parts.process.data_shape)  # (1, C, H, W)
        sampler = partial(
            sampler, grid=partial(starting_at, grid=sampler.keywords["grid"], t_start=cfg.start_t)
        )
    cond = requested_labels(cfg, module, parts.datamodule, cfg.ckpt_path)
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={cfg.device}, but no CUDA GPU is visible: use device=cpu or auto"
        )
    out = Path(cfg.paths.output_dir)
    if cfg.get("superres"):
        if cfg.format != "pt" or cfg.devices not in (1, "1") or cfg.num_nodes != 1 or cfg.onnx:
            raise ConfigError(
                "superres=[...] samples with PyTorch on one device into samples.pt: leave "
                "format, devices, num_nodes and onnx at their defaults"
            )
        device = (
            cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        return sample_superres(cfg, module.to(device), sampler, device, out, labels=cond, x_T=x_T)
    if x_T is None and not module.process.has_prior:
        raise ConfigError(
            "this degradation has no prior to sample from: restore your own image with "
            "`python sample.py ckpt_path=... init_image=PATH start_t=T`"
        )
    if cfg.get("onnx") is not None:
        check_onnx(cfg.onnx, module, parts.process)
    settings = {
        "ckpt_path": str(cfg.ckpt_path),
        "onnx": cfg.get("onnx"),
        "sampler": OmegaConf.to_container(run_cfg.sampler),
        "num_steps": sampler.keywords.get("num_steps"),
        "seed": cfg.seed,
        "init_image": cfg.init_image,
        "start_t": cfg.start_t if cfg.init_image is not None else None,
        "class_label": _plain(cfg.class_label),
        "guidance": None if cond is None else cfg.guidance,
        "guidance_rescale": None if cond is None else cfg.guidance_rescale,
    }
    store = SampleStore(
        out,
        cfg.num_samples,
        cfg.batch_size,
        cfg.format,
        settings,
        parts.datamodule.pixels.data_shape,
    )
    store.claim()
    todo = sum(len(store.block(k)) for k in store.missing_blocks())
    if todo < cfg.num_samples:
        print(f"resuming: {cfg.num_samples - todo} of {cfg.num_samples} samples are in {out}")
    run = on_devices(
        sample_blocks,
        module,
        sampler,
        store,
        dict(
            onnx=cfg.get("onnx"),
            seed=cfg.seed,
            x_T=x_T,
            cond=cond,
            guidance=cfg.guidance,
            guidance_rescale=cfg.guidance_rescale,
        ),
        device=str(cfg.device),
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
    )
    if run is None:  # a rank > 0 of a re-launched script: rank 0 writes the results
        return {}
    path = store.finish(labels=cond)
    facts = {
        **settings,
        "num_samples": cfg.num_samples,
        "nfe": run["nfe"],
        "seconds": run["seconds"],
        "generated": todo,
        "images_per_s": todo / run["seconds"] if todo and run["seconds"] > 0 else None,
        "processes": run["world"],
        "batch_size": cfg.batch_size,
        "format": cfg.format,
        "samples": str(path),
        "grid": str(save_samples(store.first(64), out / "samples.png")),
        "labels": None if cond is None else cond.tolist()[:1000],
        "nfe_counts": "network calls per batch (with guidance != 1, each evaluates the conditional "
        "and the unconditional prediction as one doubled batch)",
        "seeds": "per sample index (diffusion_lab/seeds.py): the same samples for any batch_size "
        "and number of devices",
        "versions": versions(),
    }
    if cfg.format == "pt":
        facts["tensor"] = str(path)
    write_json(out / "results.json", facts)
    nfe = "" if run["nfe"] is None else f"{run['nfe']} NFE, "
    print(f"\nsamples: {path}  grid: {facts['grid']}  ({nfe}{run['seconds']:.1f} s)")
    return facts


def check_onnx(path: str, module, process) -> None:
    """`onnx=PATH`: a readable ONNX file whose denoiser takes this checkpoint's data shape and
    (exactly when the checkpoint does) class labels; else a ConfigError."""
    try:
        from diffusion_lab.deploy.runtime import OnnxDenoiser
    except ImportError as err:
        raise ConfigError(f"onnx=... needs onnxruntime ({err}): pip install -e .[deploy]") from None
    if not Path(path).is_file():
        raise ConfigError(f"onnx={path}: no such file (python export.py ckpt_path=... writes one)")
    try:
        graph = OnnxDenoiser(path)
    except Exception as err:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...)
        raise ConfigError(f"onnx={path} is not a model ONNX Runtime can load: {err}") from None
    inputs = {i.name: i.shape for i in graph.session.get_inputs()}
    if set(inputs) - {"x", "t", "cond"} or "x" not in inputs or "t" not in inputs:
        raise ConfigError(f"onnx={path} takes {sorted(inputs)}, not export.py's (x, t[, cond])")
    if list(inputs["x"][1:]) != list(process.data_shape):
        raise ConfigError(
            f"onnx={path} denoises x of shape {inputs['x'][1:]}, this checkpoint's process "
            f"{list(process.data_shape)}: export this checkpoint (python export.py ckpt_path=...)"
        )
    if graph.takes_cond != bool(module.class_conditional):
        raise ConfigError(
            f"onnx={path} {'takes' if graph.takes_cond else 'takes no'} class labels, this "
            "checkpoint does the opposite: export this checkpoint (python export.py ckpt_path=...)"
        )


def sample_blocks(ranks, module, sampler, store: SampleStore, kwargs: dict) -> dict:
    """This process's share of the blocks still missing from `store`, generated and written;
    returns {nfe, seconds, world} (the time from the first to the last barrier)."""
    module.to(ranks.device)
    missing = store.missing_blocks()
    ranks.barrier()  # every rank has listed the same missing blocks before any is written
    start = time.perf_counter()
    mine = ranks.share(missing)
    kwargs = dict(kwargs)
    x_T, cond, onnx = kwargs.pop("x_T"), kwargs.pop("cond"), kwargs.pop("onnx")
    if onnx is not None:  # a session per process: it cannot travel to a spawned one
        from diffusion_lab.deploy.runtime import OnnxDenoiser

        kwargs["denoiser"] = OnnxDenoiser(onnx)
    nfe = None
    with tqdm(
        total=sum(len(store.block(k)) for k in mine),
        desc=f"sampling{f' (rank 0 of {ranks.world})' if ranks.world > 1 else ''}",
        unit="img",
        disable=ranks.rank != 0,
        file=sys.stdout,  # as Lightning's bars: stderr holds only an error line
    ) as bar:
        for k in mine:
            idx = store.block(k)
            x, nfe = generate_ema(
                module,
                len(idx),
                sampler=sampler,
                indices=idx,
                x_T=None if x_T is None else x_T.repeat(len(idx), *[1] * (x_T.ndim - 1)),
                cond=None if cond is None else cond[idx.start : idx.stop],
                **kwargs,
            )
            store.write_block(k, require_finite_samples(x))
            bar.update(len(idx))
    ranks.barrier()
    return {"nfe": nfe, "seconds": time.perf_counter() - start, "world": ranks.world}


def sample_superres(cfg, base, sampler, device, out: Path, labels=None, x_T=None) -> dict:
    """`superres=[ckpt, ...]`: sample the cascade base → super-resolution stages (Cascaded
    Diffusion, diffusion_lab/cascade/): preview.png (the base's samples) is written as soon as
    they exist, samples.png/.pt are the last stage's. `sampler=`/`num_steps=` apply to every stage."""
    if labels is not None or x_T is not None:
        raise ConfigError(
            "superres=[...] samples a cascade from its base's prior: class_label and init_image "
            "are not supported with it"
        )
    paths = [str(path) for path in cfg.superres]
    stages, samplers = [], [sampler]
    for path in paths:
        stage, stage_parts, _ = module_from_checkpoint(
            path,
            sampler_cfg=cfg.get("sampler"),
            paths=cfg.paths,
            sampler_choice=HydraConfig.get().runtime.choices.get("sampler"),
        )
        stages.append(stage.to(device))
        samplers.append(
            with_num_steps(stage_parts.sampler, cfg.num_steps, f"the sampler of {path}")[0]
        )
    names = [f"ckpt_path={cfg.ckpt_path}", *(f"superres[{k}]={p}" for k, p in enumerate(paths))]
    check_chain(base, stages, names)

    def on_stage(k, x, seconds):
        if k == 0:
            print(f"\npreview: {save_samples(x, out / 'preview.png')}  ({seconds:.1f} s)")

    result = sample_cascade(
        base,
        stages,
        cfg.num_samples,
        cfg.seed,
        samplers=samplers,
        on_stage=on_stage,
        progress=True,
    )
    torch.save(result.images[-1], out / "samples.pt")
    facts = {
        "num_samples": cfg.num_samples,
        "seed": cfg.seed,
        "ckpt_path": str(cfg.ckpt_path),
        "superres": paths,
        "preview": str(out / "preview.png"),
        "grid": str(save_samples(result.images[-1], out / "samples.png")),
        "tensor": str(out / "samples.pt"),
        "time_to_preview_s": result.time_to_preview,
        "seconds": result.total_seconds,
        "images_per_s": cfg.num_samples / result.total_seconds,
        "stages": [
            {"shape": list(x.shape[1:]), "nfe": nfe, "seconds_at_end": sec}
            | ({"aug_sample": stage.lowres.aug_sample} if stage.lowres is not None else {})
            for x, nfe, sec, stage in zip(
                result.images, result.nfe, result.seconds, [base, *stages]
            )
        ],
        "nfe": sum(result.nfe),
        "nfe_counts": "network calls, summed over the stages (each stage's in `stages`)",
        "versions": versions(),
    }
    write_json(out / "results.json", facts)
    print(f"samples: {facts['grid']}  ({facts['nfe']} NFE, {facts['seconds']:.1f} s)")
    return facts


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    with user_errors(), terminate_on_sigterm("results.json was not written"):
        main_impl(cfg)


if __name__ == "__main__":
    main()
