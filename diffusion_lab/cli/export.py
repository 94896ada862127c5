"""`python export.py ckpt_path=... [format=onnx] [quantize=none|dynamic|static] [opset=18]`.

Exports the checkpoint's EMA denoiser, with its schedule, preconditioning and basis, as one ONNX
graph (x, t[, cond]) → x0_hat with a dynamic batch axis (diffusion_lab/deploy/onnx_export.py),
checks it against PyTorch on a fresh batch, and with `quantize=` also writes its INT8 version
(diffusion_lab/deploy/quantize.py). Files: model.onnx, model.int8.onnx, export.json, in `output`
(default: this run's directory). Sample with it through diffusion_lab.deploy.OnnxDenoiser.
"""

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from diffusion_lab.build import module_from_checkpoint
from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.cli.common import terminate_on_sigterm, user_errors
from diffusion_lab.results import versions, write_json
from diffusion_lab.values import ConfigError, check_values

FORMATS = ("onnx",)
QUANTIZE = ("none", "dynamic", "static")
OPSETS = range(18, 24)  # 18: the dynamo exporter's own; up to what ONNX Runtime 1.14+ reads
EXPORT_KEYS = (
    ("seed", "seed"),
    ("calibration_batches", "count"),
    ("calibration_batch_size", "count"),
    ("parity_batch", "count"),
)


def check_options(cfg: DictConfig) -> None:
    """format, quantize and opset by their allowed values; counts and seed by kind."""
    check_values(cfg, EXPORT_KEYS)
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not valid: it must be {' or '.join(FORMATS)}")
    if str(cfg.quantize) not in QUANTIZE:  # YAML reads `none` as a string, `null` as None
        raise ConfigError(f"quantize={cfg.quantize} is not valid: it must be one of {QUANTIZE}")
    if not (isinstance(cfg.opset, int) and cfg.opset in OPSETS):
        raise ConfigError(
            f"opset={cfg.opset} is not valid: it must be an integer in "
            f"[{OPSETS[0]}, {OPSETS[-1]}] (18: the dynamo exporter's own)"
        )


def check_exportable(module, ckpt_path) -> None:
    """Refuse what one (x, t[, labels]) graph cannot hold, in one line."""
    if module.lowres is not None:
        raise ConfigError(
            f"{ckpt_path} is a super-resolution stage (trained with lowres=...): its image "
            "condition is not an input of the exported graph; export the cascade's base model"
        )
    if module.codec is not None:
        raise ConfigError(
            f"{ckpt_path} is a latent model (trained with latent=...): the graph would output "
            "latents and its autoencoder's decoder is not in it; export a pixel-space model"
        )


def main_impl(cfg: DictConfig) -> dict:
    for name in ("onnx_ir", "onnxscript", "onnxruntime", "root"):  # their INFO notes: not for users
        logging.getLogger(None if name == "root" else name).setLevel(logging.WARNING)
    from diffusion_lab.deploy.onnx_export import DenoiserAtTime, example_inputs, export_onnx, parity
    from diffusion_lab.deploy.quantize import calibration_data, quantize
    from diffusion_lab.deploy.runtime import OnnxDenoiser

    check_options(cfg)
    module, parts, _ = module_from_checkpoint(cfg.ckpt_path, paths=cfg.paths)
    check_exportable(module, cfg.ckpt_path)
    out = Path(cfg.output if cfg.output is not None else cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = DenoiserAtTime(module.ema, module.process).eval()
    num_classes = module.num_classes if module.class_conditional else None
    shape = module.process.data_shape
    path = out / "model.onnx"
    facts = export_onnx(model, example_inputs(shape, 2, num_classes, cfg.seed), path, cfg.opset)
    if facts["exporter"] != "dynamo":
        print(f"note: the dynamo exporter failed ({facts['dynamo_failed']}); used TorchScript's")
    ort = OnnxDenoiser(path)
    inputs = example_inputs(shape, cfg.parity_batch, num_classes, cfg.seed + 1)

    def run(onnx):
        return lambda x, t, c=None: onnx(x, module.process.state(t), c)

    check = parity(model, run(ort), inputs)
    if not check["within_tolerance"]:
        raise FloatingPointError(
            f"the exported graph differs from PyTorch by {check['max_abs_diff']:.3g} (tolerance "
            f"{check['tolerance']:.3g}, 4 × float32 rounding); {path} is not trustworthy"
        )
    facts.update(
        ckpt_path=str(cfg.ckpt_path),
        format=cfg.format,
        model=str(path),
        size_bytes=path.stat().st_size,
        data_shape=list(shape),
        class_conditional=num_classes is not None,
        has_prior=module.process.has_prior,
        parity=check,
        usage="diffusion_lab.sampling.generate(OnnxDenoiser(model), module.process, sampler, n)"
        + ("" if module.process.has_prior else " with x_T: this process has no prior"),
    )
    if cfg.quantize != "none":
        reader = None
        if cfg.quantize == "static":
            reader = calibration_data(
                parts.datamodule,
                module.process,
                cfg.calibration_batches,
                cfg.calibration_batch_size,
                seed=cfg.seed,
                labels=num_classes is not None,
            )
        int8 = out / "model.int8.onnx"
        settings = quantize(path, int8, cfg.quantize, reader)
        with torch.no_grad():
            y32 = model(*inputs)
        y8 = run(OnnxDenoiser(int8))(*inputs)
        facts["quantized"] = settings | {
            "model": str(int8),
            "size_bytes": int8.stat().st_size,
            "max_abs_diff_vs_float32": float((y8 - y32).abs().max()),
            "rms_diff_vs_float32": float((y8 - y32).pow(2).mean().sqrt()),
        }
    facts["versions"] = versions() | {
        name: _version(name) for name in ("onnx", "onnxscript", "onnxruntime")
    }
    write_json(out / "export.json", facts)
    _print(facts, out)
    return facts


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _print(facts: dict, out: Path) -> None:
    p = facts["parity"]
    print(
        f"\n{facts['model']}  ({facts['size_bytes'] / 1e6:.2f} MB, {facts['exporter']} exporter, "
        f"opset {facts['opset']}); parity vs PyTorch: max |Δ| {p['max_abs_diff']:.2e} "
        f"<= {p['tolerance']:.2e}"
    )
    if "quantized" in facts:
        q = facts["quantized"]
        print(
            f"{q['model']}  ({q['size_bytes'] / 1e6:.2f} MB, int8 {q['mode']}); "
            f"max |Δ| vs float32 {q['max_abs_diff_vs_float32']:.2e}"
        )
    print(f"facts: {out / 'export.json'}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors(), terminate_on_sigterm("the export was not finished"):
        main_impl(cfg)


if __name__ == "__main__":
    main()
