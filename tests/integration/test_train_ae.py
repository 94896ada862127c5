"""`python train_ae.py` through the real CLI: the run directory it leaves, the checkpoint that
`load_autoencoder` (latent=...) reads, exact resume, and its one-line errors."""

import json

import pytest
import torch

from diffusion_lab.autoencoder.kl import KLAutoencoder
from diffusion_lab.autoencoder.load import load_autoencoder
from tests.conftest import run_cli

# debug=fast (6 steps, batch 16, no rFID) on 16×16 digits with a small network: exactness and the
# run directory do not depend on the network's size. The discriminator is on from step 1 so the
# adversarial path (two optimizers, BatchNorm statistics) is part of what must resume exactly.
FAST = [
    "debug=fast",
    "autoencoder.channels=8",
    "autoencoder.channel_mult=[1,2]",
    "autoencoder.mid_attention=false",
    "discriminator.enabled=true",
    "discriminator.channels=8",
    "discriminator.start=1",
    "trainer.val_check_interval=2",
    "num_samples=8",
]


def _ckpt(run):
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """4 steps in one go."""
    cwd = tmp_path_factory.mktemp("train_ae")
    proc = run_cli("train_ae.py", *FAST, "trainer.max_steps=4", f"hydra.run.dir={cwd}/run", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, cwd / "run"


def test_run_directory_results_and_checkpoint(straight):
    _, run = straight
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 4  # the discriminator's steps are not counted
    rec = results["reconstruction"]
    assert rec["latent_shape"] == [4, 8, 8] and rec["compression_ratio"] == 1.0
    for key in ("psnr", "ssim", "kl_per_dim", "latent_std"):
        assert isinstance(rec[key], float), key
    for key in ("val/rec_loss", "val/kl", "val/psnr", "test/psnr", "train/d_loss"):
        assert key in results["metrics"], key
    assert results["fit_seconds"] > 0 and results["versions"]["torch"]
    assert results["choices"]["autoencoder"] == "kl"
    assert (run / "reconstructions.png").is_file() and (run / "logs" / "metrics.csv").is_file()
    model, cfg = load_autoencoder(run / "checkpoints" / "last.ckpt")
    assert isinstance(model, KLAutoencoder) and cfg.autoencoder.channels == 8
    assert model.latent_shape((1, 16, 16)) == (4, 8, 8)


def test_resume_is_bitwise_exact(straight, tmp_path):
    """2 steps, then the same command with max_steps=4 in the same run directory (auto_resume),
    equal 4 steps straight: weights, discriminator, BatchNorm statistics and both optimizers."""
    cwd, run = straight
    split = tmp_path / "split"
    for steps in (2, 4):
        proc = run_cli(
            "train_ae.py", *FAST, f"trainer.max_steps={steps}", f"hydra.run.dir={split}", cwd=cwd
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout
    a, b = _ckpt(run), _ckpt(split)
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert any(k.startswith("discriminator.") for k in a["state_dict"])
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert len(a["optimizer_states"]) == len(b["optimizer_states"]) == 2
    for sa, sb in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for i in sa["state"]:
            for k in sa["state"][i]:
                assert torch.equal(
                    torch.as_tensor(sa["state"][i][k]), torch.as_tensor(sb["state"][i][k])
                )


def test_resuming_with_another_network_is_one_line(straight):
    cwd, run = straight
    proc = run_cli(
        "train_ae.py",
        *FAST,
        "autoencoder.channels=16",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        f"hydra.run.dir={cwd}/other",
        cwd=cwd,
    )
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "different `autoencoder`" in line
