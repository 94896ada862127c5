"""Latent diffusion through the real entry points: `train.py latent=AE_CKPT` trains on the
autoencoder's latents and leaves decoded images; its checkpoint is self-contained (sample.py and
evaluate.py never read the autoencoder file again); exact resume; bad inputs get one line."""

import json
from pathlib import Path

import pytest
import torch

from diffusion_lab.checkpoint import CONFIG_KEY
from tests.conftest import run_main
from tests.integration.test_resume import assert_same_training_state
from tests.integration.test_untrusted_checkpoint import touch
from tests.latent_helpers import write_autoencoder_ckpt

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = [
    "debug=fast",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "backbone.model_channels=8",
    "backbone.attn_resolutions=[]",
]


def _train(root: Path, run: Path, *args) -> tuple[int, str]:
    status, _, err = run_main("train.py", *FAST, *args, f"hydra.run.dir={run}", root=root)
    return status, err


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    ae = write_autoencoder_ckpt(root / "ae.ckpt")
    status, err = _train(root, root / "run", f"latent={ae}")
    assert status == 0, err[-3000:]
    return root, root / "run"


def test_a_latent_run_trains_on_latents_and_leaves_images(latent_run):
    root, run = latent_run
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    config = ckpt[CONFIG_KEY]
    assert config["autoencoder"]["_target_"] == "diffusion_lab.autoencoder.kl.KLAutoencoder"
    assert config["backbone"]["in_channels"] == 4 and config["backbone"]["image_size"] == 8
    assert float(ckpt["state_dict"]["codec.scale"]) > 0
    assert any(k.startswith("codec.autoencoder.") for k in ckpt["state_dict"])
    assert (root / ".cache" / "diffusion_lab" / "latents").is_dir()
    samples = torch.load(run / "samples" / "samples.pt", weights_only=True)
    assert samples.shape == (4, 1, 16, 16)  # decoded, not (4, 4, 8, 8) latents
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 2


def test_the_checkpoint_is_self_contained(latent_run, tmp_path):
    root, run = latent_run
    (root / "ae.ckpt").rename(root / "ae_moved.ckpt")  # sample.py must not need it
    try:
        out = tmp_path / "sample"
        status, _, err = run_main(
            "sample.py",
            f"ckpt_path={run}/checkpoints/last.ckpt",
            "num_samples=3",
            "num_steps=2",
            f"hydra.run.dir={out}",
            root=tmp_path,
        )
        assert status == 0, err[-3000:]
        assert torch.load(out / "samples.pt", weights_only=True).shape == (3, 1, 16, 16)
        status, _, err = run_main(
            "sample.py",
            f"ckpt_path={run}/checkpoints/last.ckpt",
            "init_image=whatever.png",
            f"hydra.run.dir={tmp_path / 'init'}",
            root=tmp_path,
        )
        assert status == 2 and "latent model" in err and err.count("\n") == 1, err
    finally:
        (root / "ae_moved.ckpt").rename(root / "ae.ckpt")


def test_evaluate_scores_decoded_images_and_says_why_bits_per_dim_is_skipped(latent_run, tmp_path):
    _, run = latent_run
    out = tmp_path / "eval"
    status, _, err = run_main(
        "evaluate.py",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "metrics=[fid,nll]",
        "evaluation.num_samples=20",
        "evaluation.batch_size=20",
        "num_steps=[2]",
        f"hydra.run.dir={out}",
        root=tmp_path,
    )
    assert status == 0, err[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert "fid_digits_20" in results["samplers"][0]["metrics"]
    assert "real_fid_digits_20" in results["real_floor"]  # of the images, not of latents
    assert "not invertible" in results["likelihood"]["skipped"]["nll"]


def test_resume_is_bitwise_exact(latent_run, tmp_path):
    root, _ = latent_run
    args = [f"latent={root / 'ae.ckpt'}", "trainer.val_check_interval=1"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(tmp_path, straight, *args, "trainer.max_steps=4")[0] == 0
    assert _train(tmp_path, split, *args, "trainer.max_steps=2")[0] == 0
    status, err = _train(
        tmp_path,
        tmp_path / "resumed",
        *args,
        "trainer.max_steps=4",
        f"ckpt_path={split}/checkpoints/last.ckpt",
    )
    assert status == 0, err[-3000:]
    load = lambda run: torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # noqa: E731
    assert_same_training_state(load(straight), load(tmp_path / "resumed"))


def test_gud_in_the_pca_basis_of_the_latents(latent_run, tmp_path):
    """GUD's PCA basis fitted on latents (4·8·8 = 256 components), not on pixels."""
    root, _ = latent_run
    run = tmp_path / "gud"
    status, err = _train(tmp_path, run, "experiment=gud_pca_digits", f"latent={root / 'ae.ckpt'}")
    assert status == 0, err[-3000:]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    components = state["process.degradation.basis.components"]
    assert components.shape == (256, 256)
    assert torch.load(run / "samples" / "samples.pt", weights_only=True).shape[1:] == (1, 16, 16)


def _fails_in_one_line(status: int, err: str, *words: str) -> None:
    assert status == 2, err[-2000:]
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, err


def test_bad_latent_inputs_get_one_line(latent_run, tmp_path):
    root, run = latent_run
    status, err = _train(tmp_path, tmp_path / "a", f"latent={tmp_path / 'missing.ckpt'}")
    _fails_in_one_line(status, err, "not found")
    status, err = _train(tmp_path, tmp_path / "b", f"latent={run}/checkpoints/last.ckpt")
    _fails_in_one_line(status, err, "not an autoencoder")
    other = write_autoencoder_ckpt(tmp_path / "ae8.ckpt", image_size=8)
    status, err = _train(tmp_path, tmp_path / "c", f"latent={other}")
    _fails_in_one_line(status, err, "trained on 1-channel 8×8")
    status, err = _train(
        tmp_path, tmp_path / "d", f"latent={root / 'ae.ckpt'}", "dataset.hflip=true"
    )
    _fails_in_one_line(status, err, "hflip")


def test_a_crafted_autoencoder_node_is_refused_before_any_call(latent_run, tmp_path):
    _, run = latent_run
    marker = tmp_path / "pwned"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt[CONFIG_KEY]["autoencoder"] = touch(marker)
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    status, _, err = run_main(
        "sample.py", f"ckpt_path={crafted}", f"hydra.run.dir={tmp_path / 's'}", root=tmp_path
    )
    _fails_in_one_line(status, err, "autoencoder._target_=pathlib.Path.touch")
    assert not marker.exists()


@pytest.mark.parametrize("degradation", ["blur_noise", "mask", "cold_blur"])
def test_other_corruptions_run_on_latents(latent_run, tmp_path, degradation):
    """A per-frequency process (DCT of the latents), a masking one and a Cold operator: each
    trains on the 4×8×8 latents and leaves decoded 1×16×16 images."""
    root, _ = latent_run
    run = tmp_path / degradation
    status, err = _train(tmp_path, run, f"degradation={degradation}", f"latent={root / 'ae.ckpt'}")
    assert status == 0, err[-3000:]
    assert torch.load(run / "samples" / "samples.pt", weights_only=True).shape == (4, 1, 16, 16)
