"""Latent diffusion's data side: the codec's scale and round trip, the encoded datamodule, and its
cache (written once, read back, invalidated when the autoencoder or the data changes)."""

import warnings

import pytest
import torch

from diffusion_lab.data.digits import DigitsDataModule
from diffusion_lab.latent import LatentCodec, LatentDataModule
from tests.latent_helpers import tiny_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")


def digits(**kw):
    return DigitsDataModule(image_size=16, batch_size=32, **kw)


def test_codec_scale_gives_the_latents_sigma_data_and_the_round_trip_undoes_it():
    ae = tiny_autoencoder().double()
    codec = LatentCodec(ae, (1, 16, 16)).double()
    assert codec.latent_shape == (4, 8, 8)
    x = torch.rand(64, 1, 16, 16, dtype=torch.float64) * 2 - 1
    with pytest.raises(RuntimeError, match="scale is not set"):
        codec.encode(x)
    s = codec.fit_scale(codec.unscaled(x), sigma_data=0.5)
    z = codec.encode(x)
    assert float(z.std()) == pytest.approx(0.5, rel=1e-12)
    assert torch.allclose(z, s * ae.encode(x).mode(), rtol=1e-12, atol=0)
    # decode(encode(x)) is the autoencoder's own reconstruction from the posterior mean
    assert torch.allclose(codec.decode(z), ae.decode(ae.encode(x).mode()), rtol=1e-10, atol=1e-12)


def test_codec_is_frozen_and_stays_in_eval_mode():
    codec = LatentCodec(tiny_autoencoder(), (1, 16, 16))
    codec.train()
    assert not codec.autoencoder.training
    assert not any(p.requires_grad for p in codec.parameters())


def test_digest_names_the_weights():
    a, b = (
        LatentCodec(tiny_autoencoder(0), (1, 16, 16)),
        LatentCodec(tiny_autoencoder(0), (1, 16, 16)),
    )
    assert a.digest() == b.digest()
    with torch.no_grad():
        next(b.autoencoder.parameters()).view(-1)[0] += 1e-3
    assert a.digest() != b.digest()


def test_latent_datamodule_encodes_every_split_with_its_labels(tmp_path):
    images = digits()
    dm = LatentDataModule(images, LatentCodec(tiny_autoencoder(), images.data_shape), tmp_path)
    assert dm.data_shape == (4, 8, 8) and dm.num_classes == 10 and dm.pixels is images
    dm.setup("fit")
    for latents, pixels in ((dm.train_set, images.train_set), (dm.test_set, images.test_set)):
        assert len(latents) == len(pixels)
        z, y = latents.tensors
        assert z.shape == (len(pixels), 4, 8, 8)
        assert torch.equal(y, torch.stack([torch.as_tensor(p[1]) for p in pixels]))
    z_train = dm.train_set.tensors[0]
    assert float(z_train.double().std()) == pytest.approx(images.sigma_data, rel=1e-5)
    # the stored latents are the codec's encodings of the images
    x0 = torch.stack([images.test_set[i][0] for i in range(5)])
    torch.testing.assert_close(
        dm.test_set.tensors[0][:5], dm.codec.encode(x0), rtol=1e-5, atol=1e-6
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (32, 4, 8, 8)


def test_the_cache_is_read_back_and_invalidated_by_new_weights_or_data(tmp_path, monkeypatch):
    images = digits()
    first = LatentDataModule(images, LatentCodec(tiny_autoencoder(0), images.data_shape), tmp_path)
    first.setup("fit")
    assert first.cache_path.is_file()

    # same weights, same data: read from the cache, nothing encoded
    again = LatentDataModule(digits(), LatentCodec(tiny_autoencoder(0), (1, 16, 16)), tmp_path)
    monkeypatch.setattr(LatentCodec, "unscaled", lambda *a: pytest.fail("encoded again"))
    again.setup("fit")
    assert again.cache_path == first.cache_path
    assert torch.equal(again.train_set.tensors[0], first.train_set.tensors[0])
    monkeypatch.undo()

    # another autoencoder, or another split of the data: another cache file, encoded anew
    other = LatentDataModule(digits(), LatentCodec(tiny_autoencoder(1), (1, 16, 16)), tmp_path)
    resplit = LatentDataModule(
        digits(split_seed=1), LatentCodec(tiny_autoencoder(0), (1, 16, 16)), tmp_path
    )
    assert len({first.cache_path, other.cache_path, resplit.cache_path}) == 3
    other.setup("fit")
    assert not torch.equal(other.train_set.tensors[0], first.train_set.tensors[0])


@pytest.mark.parametrize("damage", ["truncate", "wrong_shape"])
def test_an_unusable_cache_is_encoded_again(tmp_path, damage):
    images = digits()
    dm = LatentDataModule(images, LatentCodec(tiny_autoencoder(), images.data_shape), tmp_path)
    dm.setup("fit")
    reference = dm.train_set.tensors[0].clone()
    if damage == "truncate":
        dm.cache_path.write_bytes(dm.cache_path.read_bytes()[:100])
    else:
        saved = torch.load(dm.cache_path, weights_only=True)
        saved["train"] = (saved["train"][0][:, :2], saved["train"][1])
        torch.save(saved, dm.cache_path)
    fresh = LatentDataModule(digits(), LatentCodec(tiny_autoencoder(), (1, 16, 16)), tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh.setup("fit")
    assert any("re-encoding" in str(w.message) for w in caught)
    assert torch.equal(fresh.train_set.tensors[0], reference)


def test_fixed_scale_and_restored_scale(tmp_path):
    images = digits()
    fixed = LatentDataModule(
        images, LatentCodec(tiny_autoencoder(), images.data_shape), tmp_path, scale=0.25
    )
    fixed.setup("fit")
    assert float(fixed.codec.scale) == 0.25
    # a restored model keeps the scale its checkpoint holds
    codec = LatentCodec(tiny_autoencoder(), images.data_shape)
    codec.scale.fill_(3.0)
    restored = LatentDataModule(digits(), codec, tmp_path, fit_scale=False)
    restored.setup("fit")
    assert float(codec.scale) == 3.0
    torch.testing.assert_close(restored.train_set.tensors[0], fixed.train_set.tensors[0] * 12)


def test_hflip_is_refused():
    images = digits(hflip=True)
    with pytest.raises(ValueError, match="hflip"):
        LatentDataModule(images, LatentCodec(tiny_autoencoder(), images.data_shape), ".")
