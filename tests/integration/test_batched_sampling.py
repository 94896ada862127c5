"""sample.py and evaluate.py at scale, through the CLI: batched, streamed to disk, resumed, and
split over 2 processes (gloo on CPU, as the DDP training tests do) with the same set of samples.

Comparisons between runs with other batch sizes or process counts: float32 samples agree to
torch's float32 tolerance (the batched convolutions round differently); their 8-bit images may
then differ by one level where a value sits on a rounding boundary, which a handful of the 2560
pixels may do, so they are compared by that bound and by the fraction that is exactly equal.
"""

import json

import numpy as np
import pytest
import torch

import diffusion_lab.cli.sample as sample_cli
from diffusion_lab.streaming import to_uint8
from tests.conftest import run_cli, run_main

STOCHASTIC = ["sampler=ddim", "sampler.eta=1.0", "num_steps=4"]  # fresh noise every step


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("batched")
    proc = run_cli("train.py", "debug=fast", f"hydra.run.dir={cwd}/run", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, f"ckpt_path={cwd}/run/checkpoints/last.ckpt"


def _sample(cwd, ckpt, name, *args):
    status, out, err = run_main(
        "sample.py",
        ckpt,
        *STOCHASTIC,
        "num_samples=10",
        f"hydra.run.dir={cwd}/{name}",
        *args,
        root=cwd,
    )
    assert status == 0, err[-3000:]
    return cwd / name, out


def _close_images(a: np.ndarray, b: np.ndarray):
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert (a == b).mean() > 0.99


def test_batch_size_and_format_change_nothing_but_the_file(ckpt):
    cwd, ck = ckpt
    one, _ = _sample(cwd, ck, "one", "batch_size=10")
    three, _ = _sample(cwd, ck, "three", "batch_size=3")
    x = torch.load(one / "samples.pt", weights_only=True)
    assert x.shape == (10, 1, 16, 16)
    torch.testing.assert_close(torch.load(three / "samples.pt", weights_only=True), x)
    npz, _ = _sample(cwd, ck, "npz", "batch_size=4", "format=npz")
    with np.load(npz / "samples.npz") as data:
        _close_images(data["arr_0"], to_uint8(x))
    results = json.loads((npz / "results.json").read_text())
    assert results["generated"] == 10 and results["nfe"] == 4 and results["processes"] == 1
    assert (npz / "samples.png").is_file() and not (npz / "blocks").exists()


def test_an_interrupted_run_resumes_to_the_same_samples(ckpt, monkeypatch):
    cwd, ck = ckpt
    whole, _ = _sample(cwd, ck, "whole", "batch_size=3", "format=npz")
    written = []
    real_write = sample_cli.SampleStore.write_block

    def dies_after_two_blocks(self, k, x):
        if len(written) == 2:
            raise KeyboardInterrupt  # as ^C or a pre-empted job would, between blocks
        written.append(k)
        real_write(self, k, x)

    monkeypatch.setattr(sample_cli.SampleStore, "write_block", dies_after_two_blocks)
    with pytest.raises(KeyboardInterrupt):
        run_main(
            "sample.py",
            ck,
            *STOCHASTIC,
            "num_samples=10",
            "batch_size=3",
            "format=npz",
            f"hydra.run.dir={cwd}/cut",
            root=cwd,
        )
    assert len(list((cwd / "cut" / "blocks").glob("*.npy"))) == 2
    assert not (cwd / "cut" / "samples.npz").exists()
    monkeypatch.setattr(sample_cli.SampleStore, "write_block", real_write)
    cut, out = _sample(cwd, ck, "cut", "batch_size=3", "format=npz")
    assert "resuming: 6 of 10 samples" in out
    assert json.loads((cut / "results.json").read_text())["generated"] == 4
    with np.load(whole / "samples.npz") as a, np.load(cut / "samples.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"])  # the same blocks, the same batches: bitwise
    # the folder is bound to its settings
    status, _, err = run_main(
        "sample.py",
        ck,
        *STOCHASTIC,
        "num_samples=10",
        "batch_size=3",
        "format=npz",
        "seed=9",
        f"hydra.run.dir={cwd}/cut",
        root=cwd,
    )
    assert status == 2 and "holds samples made with other settings (seed: 0 there, 9 now)" in err


def test_png_folder_fills_in_missing_files(ckpt):
    cwd, ck = ckpt
    png, _ = _sample(cwd, ck, "png", "batch_size=4", "format=png")
    files = sorted((png / "samples").glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(10)]
    before = {f.name: f.read_bytes() for f in files}
    for name in ("000001.png", "000009.png"):
        (png / "samples" / name).unlink()
    _, out = _sample(cwd, ck, "png", "batch_size=4", "format=png")
    assert "resuming: 4 of 10 samples" in out  # block 1 only: blocks 0 and 2 lost a file
    assert {f.name: f.read_bytes() for f in sorted((png / "samples").glob("*.png"))} == before


def test_two_processes_draw_the_same_set(ckpt):
    """devices=2 on CPU: 2 gloo processes share the blocks; the set equals one process's."""
    cwd, ck = ckpt
    single, _ = _sample(cwd, ck, "single", "batch_size=3", "format=npz")
    proc = run_cli(
        "sample.py",
        ck,
        *STOCHASTIC,
        "num_samples=10",
        "batch_size=3",
        "format=npz",
        "device=cpu",
        "devices=2",
        "strategy=ddp_spawn",
        f"hydra.run.dir={cwd}/two",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(single / "samples.npz") as a, np.load(cwd / "two" / "samples.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"])  # each block made by one process either way
    assert json.loads((cwd / "two" / "results.json").read_text())["processes"] == 2


def test_evaluate_over_two_processes_scores_the_same_samples(ckpt):
    cwd, ck = ckpt
    scores = []
    for devices in (1, 2):
        proc = run_cli(
            "evaluate.py",
            ck,
            "metrics=[fid]",
            "evaluation.num_samples=40",
            "evaluation.batch_size=7",
            "evaluation.real_floor=false",
            "samplers=[ancestral]",
            "num_steps=[4]",
            "accelerator=cpu",
            f"devices={devices}",
            "strategy=ddp_spawn",
            f"hydra.run.dir={cwd}/eval{devices}",
            cwd=cwd,
        )
        assert proc.returncode == 0, (devices, proc.stdout[-2000:], proc.stderr[-3000:])
        rows = json.loads((cwd / f"eval{devices}" / "results.json").read_text())["samplers"]
        scores.append(rows[0]["metrics"]["fid_digits_40"])
    assert scores[0] == pytest.approx(scores[1], rel=1e-4)


def test_sample_with_the_exported_graph(ckpt):
    """onnx=model.onnx: ONNX Runtime evaluates the denoiser inside the same sampler loop.

    The float32 graph's samples agree with PyTorch's to 1e-4: its per-call error is float32
    rounding (~1e-6 here, export.json's parity), which 4 DDIM steps do not grow by 100×. A copy
    of the graph with its backbone's weights doubled must give samples more than 1e-3 away (6e-3
    measured on this 6-step model, whose c_skip term dominates): the file's graph, not the
    checkpoint's weights, made them."""
    import onnx
    from onnx import numpy_helper

    cwd, ck = ckpt
    status, _, err = run_main("export.py", ck, f"hydra.run.dir={cwd}/export", root=cwd)
    assert status == 0, err[-3000:]
    model = onnx.load(cwd / "export" / "model.onnx")
    for init in model.graph.initializer:
        if init.name.startswith("denoiser.backbone") and init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2, init.name))
    onnx.save(model, cwd / "export" / "doubled.onnx")
    torch_run, _ = _sample(cwd, ck, "torch_run")
    x = torch.load(torch_run / "samples.pt", weights_only=True)
    for graph in ("model.onnx", "doubled.onnx"):
        run, _ = _sample(cwd, ck, graph, f"onnx={cwd}/export/{graph}", "batch_size=4")
        gap = (torch.load(run / "samples.pt", weights_only=True) - x).abs().max().item()
        assert gap < 1e-4 if graph == "model.onnx" else gap > 1e-3, (graph, gap)
        assert json.loads((run / "results.json").read_text())["onnx"].endswith(graph)
    # files that are not this checkpoint's graph get one line
    (cwd / "junk.onnx").write_text("not a model")
    for path, words in (
        (cwd / "junk.onnx", "is not a model ONNX Runtime can load"),
        (cwd / "none.onnx", "no such file"),
    ):
        status, _, err = run_main(
            "sample.py", ck, f"onnx={path}", f"hydra.run.dir={cwd}/bad", root=cwd
        )
        assert status == 2 and words in err and err.count("\n") == 1, err
