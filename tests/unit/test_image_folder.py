"""Image folders with bad inputs: corrupt, truncated, empty, degenerate files; odd modes and sizes."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

import diffusion_lab.data.image_folder as image_folder
from diffusion_lab.data import ImageFolderDataModule

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "dataset" / "image_folder.yaml"


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    width, height = size
    return Image.fromarray(
        np.random.RandomState(seed).randint(0, 256, (height, width, 3), np.uint8)
    )


def _bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _good_files(root: Path) -> dict[str, Image.Image]:
    """Usable files of every mode and odd sizes, written under root; name -> image."""
    gray16 = Image.fromarray(np.full((30, 20), 32768, np.uint16))  # mid-gray in 16 bits
    rgba = Image.new("RGBA", (24, 24), (0, 0, 0, 0))  # fully transparent black...
    rgba.paste((255, 0, 0, 255), (0, 0, 24, 6))  # ...with an opaque red band at the top
    palette = Image.new("RGB", (16, 16), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    images = {
        "rgb_odd.png": _noise((37, 23)),
        "photos/wide.jpg": _noise((50, 31), seed=1),
        "photos/tall.jpeg": _noise((9, 40), seed=2),
        "tiny.png": _noise((5, 4), seed=3),  # smaller than image_size: upscaled
        "gray.png": Image.new("L", (20, 30), 200),
        "gray16.png": gray16,
        "rgba.png": rgba,
        "palette.png": palette,
        "palette.bmp": palette,
        "lossy.webp": _noise((19, 17), seed=4),
    }
    for name, image in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / name)
    return images


BAD = {  # name -> the reason the error gives
    "truncated.png": "truncated",
    "photos/truncated.jpg": "truncated",
    "empty.png": "empty file",
    "notes.png": "not an image",
    "strip.png": "degenerate size 1x40",
}


def _bad_files(root: Path) -> None:
    (root / "photos").mkdir(parents=True, exist_ok=True)
    png, jpeg = _bytes(_noise((64, 48)), "PNG"), _bytes(_noise((64, 48)), "JPEG")
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "photos/truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.png").write_text("not an image")
    _noise((1, 40)).save(root / "strip.png")


@pytest.fixture
def folder(tmp_path) -> Path:
    _good_files(tmp_path)
    _bad_files(tmp_path)
    (tmp_path / "README.txt").write_text("ignored: not an image extension")
    return tmp_path


def _listed(message: str) -> dict[str, str]:
    """The `path: reason` lines of an error or warning, keyed by path."""
    lines = [line.strip() for line in message.splitlines() if line.startswith("  /")]
    return dict(line.split(": ", 1) for line in lines)


def test_default_setup_raises_listing_exactly_the_bad_files(folder):
    dm = ImageFolderDataModule(str(folder), image_size=16)
    with pytest.raises(ValueError) as err:
        dm.setup()
    message = str(err.value)
    listed = _listed(message)
    assert set(listed) == {str(folder / name) for name in BAD}
    for name, reason in BAD.items():
        assert listed[str(folder / name)].startswith(reason)
    assert "5 of 15 image files" in message
    assert "Remove or fix them, or set dataset.skip_corrupt=true" in message
    assert dm.train_set is None


def test_error_lists_the_first_twenty_and_counts_the_rest(tmp_path):
    _noise((8, 8)).save(tmp_path / "good.png")
    for i in range(25):
        (tmp_path / f"empty{i:02d}.png").write_bytes(b"")
    with pytest.raises(ValueError) as err:
        ImageFolderDataModule(str(tmp_path), image_size=8).setup()
    assert len(_listed(str(err.value))) == 20 and "  and 5 more" in str(err.value)


@pytest.mark.parametrize("channels", [1, 3])
def test_skip_corrupt_trains_on_the_rest(folder, channels):
    dm = ImageFolderDataModule(
        str(folder),
        image_size=16,
        channels=channels,
        skip_corrupt=True,
        val_fraction=0.2,
        batch_size=4,
    )
    with pytest.warns(UserWarning, match="skipping 5 of 15 image files") as record:
        dm.setup()
    assert len(record) == 1
    assert set(_listed(str(record[0].message))) == {str(folder / name) for name in BAD}
    assert (len(dm.train_set), len(dm.val_set)) == (8, 2)
    samples = [dm.train_set[i] for i in range(8)] + [dm.val_set[i] for i in range(2)]
    for x, y in samples:
        assert x.shape == (channels, 16, 16) and x.dtype == torch.float32 and y == 0
        assert x.min() >= -1 and x.max() <= 1
    xb, _ = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, channels, 16, 16)


def _load(root: Path, name: str, channels: int) -> torch.Tensor:
    """The tensor of root/name alone, at 8 x 8."""
    single = root / "single"
    single.mkdir(exist_ok=True)
    (single / name).write_bytes((root / name).read_bytes())
    dm = ImageFolderDataModule(str(single), image_size=8, channels=channels, val_fraction=0)
    dm.setup()
    x = dm.train_set[0][0]
    (single / name).unlink()
    return x


@pytest.mark.parametrize("channels", [1, 3])
def test_modes_convert_to_the_configured_channels(tmp_path, channels):
    _good_files(tmp_path)
    gray = _load(tmp_path, "gray.png", channels)
    torch.testing.assert_close(gray, torch.full((channels, 8, 8), 200 / 255 * 2 - 1))
    gray16 = _load(tmp_path, "gray16.png", channels)  # scaled to 8 bits, not clipped to white
    torch.testing.assert_close(gray16, torch.full((channels, 8, 8), 128 / 255 * 2 - 1))
    rgba = _load(tmp_path, "rgba.png", channels)  # transparent pixels composited on white
    torch.testing.assert_close(rgba[:, -1], torch.ones(channels, 8))
    red = torch.tensor([1.0, -1, -1]) if channels == 3 else torch.tensor([0.299 * 2 - 1])
    torch.testing.assert_close(rgba[:, 0, 0], red, atol=0.01, rtol=0)
    for name in ("palette.png", "palette.bmp"):
        blue = torch.tensor([-1.0, -1, 1]) if channels == 3 else torch.tensor([0.114 * 2 - 1])
        torch.testing.assert_close(
            _load(tmp_path, name, channels)[:, 4, 4], blue, atol=0.01, rtol=0
        )


def test_nothing_left_after_skipping_raises(tmp_path):
    _bad_files(tmp_path)
    with pytest.raises(ValueError, match="all 5 image files .* are bad, nothing is left"):
        ImageFolderDataModule(str(tmp_path), skip_corrupt=True).setup()


def test_missing_folder_and_folder_without_images_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: put your images") as err:
        ImageFolderDataModule(str(tmp_path / "nope")).setup()
    assert "paths.data_dir=" in str(err.value)
    (tmp_path / "a.tif").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=r"no images .*1 files of other types, e\.g\. a\.tif"
    ):
        ImageFolderDataModule(str(tmp_path)).setup()


def test_check_is_cached_by_path_size_and_mtime(folder, tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.mktemp("cache")
    checked = []
    check_image = image_folder.check_image
    monkeypatch.setattr(image_folder, "check_image", lambda p: checked.append(p) or check_image(p))

    def setup():
        dm = ImageFolderDataModule(str(folder), skip_corrupt=True, cache_dir=str(cache))
        with pytest.warns(UserWarning, match="skipping"):
            dm.setup()
        return len(dm.train_set) + len(dm.val_set)

    assert setup() == 10 and len(checked) == 15 and len(list(cache.iterdir())) == 1
    checked.clear()
    assert setup() == 10 and checked == []  # every verdict from the cache
    (folder / "empty.png").write_bytes(_bytes(_noise((8, 8)), "PNG"))  # fixed: size changed
    assert setup() == 11 and checked == [folder / "empty.png"]


def test_yaml_defaults_fail_fast_and_cache_in_paths_cache_dir(folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    paths = {"data_dir": str(folder), "cache_dir": str(cache)}
    dm = instantiate(OmegaConf.merge({"paths": paths}, {"dataset": OmegaConf.load(CONFIG)}).dataset)
    assert dm.skip_corrupt is False
    with pytest.raises(ValueError, match="skip_corrupt"):
        dm.setup()
    assert [p.name.startswith("image_folder_check-") for p in cache.iterdir()] == [True]
