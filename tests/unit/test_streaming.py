"""Per-index seeds (seeds.py), the block store (streaming.py) and rank sharing (launch.py).

Per-index seeds promise that sample i depends on (seed, i) only. The denoisers below act row by
row, so a batch's rows agree with the same rows drawn in other batches up to float32 rounding of
the batched arithmetic: compared with torch's float32 tolerance (rtol 1.3e-6, atol 1e-5).
"""

import json
import zipfile
from functools import partial

import numpy as np
import pytest
import torch

from diffusion_lab.degradations import VariancePreserving
from diffusion_lab.launch import Ranks
from diffusion_lab.metrics.report import generate_many
from diffusion_lab.process import ForwardProcess
from diffusion_lab.samplers import ancestral, grids
from diffusion_lab.sampling import generate
from diffusion_lab.schedules import Cosine
from diffusion_lab.seeds import IndexGenerators, index_seed
from diffusion_lab.streaming import SampleStore, from_uint8, to_uint8
from diffusion_lab.values import ConfigError
from tests.oracles import two_modes

PROCESS = ForwardProcess(VariancePreserving(), Cosine(), (3,))
SAMPLER = partial(ancestral.ancestral, num_steps=20, grid=grids.uniform)  # stochastic steps


def test_index_streams_do_not_depend_on_the_batch():
    whole = IndexGenerators(7, range(6)).randn((6, 2, 3))
    parts = [IndexGenerators(7, idx).randn((len(idx), 2, 3)) for idx in ([4, 5], [0, 1, 2, 3])]
    assert torch.equal(whole, torch.cat([parts[1], parts[0]]))  # the same bits, row by row
    assert not torch.equal(whole[0], whole[1])
    assert index_seed(0, 1) != index_seed(1, 0)  # unlike seed + i
    assert not torch.equal(whole, IndexGenerators(8, range(6)).randn((6, 2, 3)))
    with pytest.raises(ValueError, match="3 samples asked of 6"):
        IndexGenerators(7, range(6)).randn((3, 2))


def test_generate_with_indices_gives_each_sample_its_own_stream():
    """A stochastic sampler (ancestral: fresh noise every step) on an exact mixture denoiser:
    the 8 samples drawn as one batch equal them drawn as batches of 3, 3 and 2, or out of order."""
    data = two_modes((3,))
    whole, nfe = generate(data, PROCESS, SAMPLER, 8, seed=5, indices=range(8))
    parts = [
        generate(data, PROCESS, SAMPLER, len(i), seed=5, indices=i)[0]
        for i in ([5, 6, 7], [0, 1, 2], [3, 4])
    ]
    torch.testing.assert_close(torch.cat([parts[1], parts[2], parts[0]]), whole)
    assert nfe == 20
    other, _ = generate(data, PROCESS, SAMPLER, 8, seed=6, indices=range(8))
    assert (other - whole).abs().max() > 0.1  # another seed, other samples
    with pytest.raises(ValueError, match="3 indices given for 4 samples"):
        generate(data, PROCESS, SAMPLER, 4, indices=range(3))


def _images(n, seed=0):
    return torch.rand((n, 3, 4, 5), generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("fmt", ["png", "npz", "pt"])
def test_store_writes_resumes_and_assembles(tmp_path, fmt):
    x = _images(10)
    store = SampleStore(tmp_path, 10, 4, fmt, {"seed": 1}, (3, 4, 5))
    store.claim()
    assert store.missing_blocks() == [0, 1, 2] and list(store.block(2)) == [8, 9]
    store.write_block(1, x[4:8])
    # a new store on the same folder (a rerun) sees what is there
    again = SampleStore(tmp_path, 10, 4, fmt, {"seed": 1}, (3, 4, 5))
    again.claim()
    assert again.missing_blocks() == [0, 2]
    with pytest.raises(RuntimeError, match="not written"):
        again.finish()
    again.write_block(2, x[8:])
    again.write_block(0, x[:4])
    labels = torch.arange(10) % 3
    path = again.finish(labels=labels)
    assert again.missing_blocks() == [] and not (tmp_path / "blocks").exists()
    expected = from_uint8(to_uint8(x)) if fmt != "pt" else x
    assert torch.equal(again.first(10), expected) and torch.equal(again.first(3), expected[:3])
    if fmt == "npz":  # what ADM's evaluator and np.load read
        with np.load(path) as data:
            assert data["arr_0"].shape == (10, 4, 5, 3) and data["arr_0"].dtype == np.uint8
            assert np.array_equal(data["arr_0"], to_uint8(x))
            assert np.array_equal(data["arr_1"], labels.numpy())
        assert zipfile.ZipFile(path).testzip() is None
    if fmt == "png":
        assert sorted(p.name for p in path.iterdir()) == [f"{i:06d}.png" for i in range(10)]
    assert json.loads((tmp_path / "sampling.json").read_text())["seed"] == 1


def test_uint8_quantisation_rounds_like_edm():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.5]).view(1, 1, 1, 6)
    assert to_uint8(x).ravel().tolist() == [0, 0, 128, 191, 255, 255]


def test_store_refuses_other_settings_and_bad_formats(tmp_path):
    SampleStore(tmp_path, 10, 4, "npz", {"seed": 1}, (1, 4, 4)).claim()
    with pytest.raises(ConfigError, match="seed: 1 there, 2 now"):
        SampleStore(tmp_path, 10, 4, "npz", {"seed": 2}, (1, 4, 4)).claim()
    with pytest.raises(ConfigError, match="batch_size: 4 there, 5 now"):  # shards are cut by it
        SampleStore(tmp_path, 10, 5, "npz", {"seed": 1}, (1, 4, 4)).claim()
    SampleStore(tmp_path / "p", 10, 4, "png", {}, (1, 4, 4)).claim()
    SampleStore(tmp_path / "p", 10, 5, "png", {}, (1, 4, 4)).claim()  # PNG files are per index
    with pytest.raises(ConfigError, match="use format=pt"):
        SampleStore(tmp_path, 10, 4, "png", {}, (2,))
    with pytest.raises(ConfigError, match="choose one of png, npz, pt"):
        SampleStore(tmp_path, 10, 4, "jpg", {}, (1, 4, 4))
    with pytest.raises(ValueError, match="block 0 needs shape"):
        SampleStore(tmp_path / "q", 10, 4, "pt", {}, (1, 4, 4)).write_block(
            0, torch.zeros(3, 1, 4, 4)
        )


def test_ranks_share_every_block_once():
    blocks = list(range(7))
    shares = [Ranks(r, 3, torch.device("cpu")).share(blocks) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert Ranks(0, 1, torch.device("cpu")).gather("x") == ["x"]


def _generate_on_rank(rank, world, init_file, out_dir):
    """One process of a 2-process gloo group: its share of generate_many, gathered on rank 0."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        x, nfe = generate_many(
            _TinyModule(), 11, 3, 2, progress=False, ranks=Ranks(rank, world, torch.device("cpu"))
        )
        if rank == 0:
            torch.save((x, nfe), f"{out_dir}/gathered.pt")
        else:
            assert x is None
    finally:
        torch.distributed.destroy_process_group()


class _TinyModule(torch.nn.Module):
    """What generate_ema needs of a DiffusionModule: an exact denoiser as `ema`, the process and
    a stochastic sampler, no codec."""

    def __init__(self):
        super().__init__()
        self.ema, self.process, self.sampler = two_modes((3,)), PROCESS, SAMPLER
        self.lowres, self.class_conditional, self.num_classes = None, False, None

    def decode(self, x):
        return x


def test_generate_many_over_two_processes_returns_the_single_process_set(tmp_path):
    single, nfe = generate_many(_TinyModule(), 11, 3, 2, progress=False)
    torch.multiprocessing.spawn(_generate_on_rank, args=(2, tmp_path / "init", tmp_path), nprocs=2)
    gathered, nfe2 = torch.load(tmp_path / "gathered.pt", weights_only=True)
    torch.testing.assert_close(gathered, single)  # batches [0,1],[4,5],.. from rank 0, in order
    assert nfe == nfe2 == 20 and single.shape == (11, 3)


@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_a_foreign_shard_gets_one_line_not_an_unpickle(tmp_path, fmt):
    """Shards are read back without unpickling; one that is not this run's block is refused."""
    import pickle

    store = SampleStore(tmp_path, 4, 2, fmt, {}, (1, 2, 2))
    store.write_block(0, torch.zeros(2, 1, 2, 2))
    store.write_block(1, torch.zeros(2, 1, 2, 2))
    shard = store._shard(1)
    shard.write_bytes(pickle.dumps(object()))  # a pickled object where a tensor/array belongs
    with pytest.raises(ConfigError, match="is not readable"):
        store.finish()
    store.write_block(1, torch.zeros(2, 1, 2, 2))
    if fmt == "pt":
        torch.save(torch.zeros(3, 1, 2, 2), shard)
    else:
        np.save(shard, np.zeros((2, 2, 2, 1), np.float32))
    with pytest.raises(ConfigError, match="does not hold block 1"):
        store.finish()
