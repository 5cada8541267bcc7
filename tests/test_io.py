"""Reading images, masks and anomaly folders the way users keep them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomgen import AnomalyPool, read_image, read_mask


def test_sixteen_bit_grey_keeps_its_range(tmp_path):
    """PIL's convert("L") clips 16-bit values at 255; such files must be scaled instead."""
    ramp = np.linspace(0, 65535, 64 * 32).round().astype(np.uint16).reshape(32, 64)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    image = read_image(path)
    assert image.shape == (1, 32, 64)
    np.testing.assert_allclose(image[0].numpy(), ramp / 65535.0, atol=1e-6)
    assert read_image(path, channels=3).shape == (3, 32, 64)
    mask = read_mask(path)[0].numpy().astype(bool)
    np.testing.assert_array_equal(mask, ramp >= 128 * 257)


def test_eight_bit_mask_threshold_is_128(tmp_path):
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png")[0].numpy(), values >= 128)


def test_float_image_out_of_range_is_named(tmp_path):
    path = tmp_path / "wide.tif"
    Image.fromarray(np.full((8, 8), 3.5, np.float32)).save(path)
    with pytest.raises(ValueError, match="wide.tif.*outside the mode's range"):
        read_image(path)


def test_png_anomaly_is_never_its_own_mask(tmp_path):
    """MVTec's layout with the masks folder forgotten: each .png would mask itself."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
            tmp_path / f"{name}.png"
        )
    with pytest.raises(FileNotFoundError, match="no mask for anomalous image"):
        AnomalyPool(tmp_path)


def test_texture_pool_caches_per_texture_and_stays_bounded():
    """Images of many sizes must not resize the whole pool each time, nor grow without end."""
    import torch

    from anomgen import TexturePool

    textures = [torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    pool, fresh = TexturePool(textures), TexturePool(textures)
    for height in range(16, 40):
        drawn = pool.get(height % 3, (height, 24), 1, torch.device("cpu"))
        assert torch.equal(drawn, fresh.get(height % 3, (height, 24), 1, torch.device("cpu")))
        assert len(pool._resized) <= 4 * len(textures)
    assert len(pool._resized) == 4 * len(textures)


def test_in_memory_pool_names_a_mask_of_the_wrong_type():
    import torch

    with pytest.raises(ValueError, match="mask 0 must be a \\(1,H,W\\) tensor, got ndarray"):
        AnomalyPool([torch.rand(1, 8, 8)], [np.ones((1, 8, 8))])


def test_a_missing_mask_folder_is_named_and_an_empty_mask_says_why(tmp_path):
    images = tmp_path / "defects"
    images.mkdir()
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(images / "a.jpg")
    with pytest.raises(FileNotFoundError, match="mask folder .*nodir' does not exist"):
        AnomalyPool(images, masks=tmp_path / "nodir")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        AnomalyPool(images, masks=tmp_path / "file")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(images / "a.png")
    with pytest.raises(ValueError, match="'a.jpg' is empty: it marks no defect"):
        AnomalyPool(images)


def test_pools_reject_nan_tensors():
    """NaN fails no min/max test, so it must be looked for: it would poison every blend."""
    import torch

    from anomgen import TexturePool

    nan = torch.full((1, 8, 8), float("nan"))
    with pytest.raises(ValueError, match="texture 0 must be float with finite values"):
        TexturePool([nan])
    with pytest.raises(ValueError, match="anomaly image 0 must be float with finite values"):
        AnomalyPool([nan], [torch.ones(1, 8, 8)])


@pytest.mark.parametrize("channels", [True, 3.0, 2, "3"])
def test_read_image_channels_is_none_1_or_3(tmp_path, channels):
    path = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(path)
    with pytest.raises(ValueError, match=f"channels must be .* got {channels!r}"):
        read_image(path, channels=channels)
    assert read_image(path, channels=np.int64(3)).shape == (3, 8, 8)


def test_a_file_given_as_a_folder_is_named_as_such(tmp_path):
    from anomgen import TexturePool, list_images

    file = tmp_path / "x.jpg"
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(file)
    with pytest.raises(FileNotFoundError, match="image folder .*x.jpg' is not a folder"):
        list_images(file)
    with pytest.raises(FileNotFoundError, match="texture folder .*x.jpg' is not a folder"):
        TexturePool(file)


def test_pools_reject_empty_tensors():
    """An empty tensor has no min or max: named, rather than torch's reduction error."""
    import torch

    from anomgen import TexturePool

    with pytest.raises(ValueError, match=r"texture 0 is empty: \(3, 0, 0\)"):
        TexturePool([torch.rand(3, 0, 0)])
    with pytest.raises(ValueError, match=r"anomaly image 0 is empty: \(1, 0, 4\)"):
        AnomalyPool([torch.rand(1, 0, 4)], [torch.ones(1, 0, 4)])


@pytest.mark.parametrize("entry", ["folder", "broken link"])
def test_an_image_named_entry_that_is_not_a_file_is_named_not_dropped(normal_dir, entry):
    """A folder ``x.png`` or a broken link ``x.png`` is an error naming it, as in TexturePool,
    for every entry point handed a folder of images; prn-predict lists it as not scored."""
    from anomgen import SynthesisDataset, TexturePool, list_images
    from anomgen.cli import main
    from anomgen.transforms import Normal

    odd = normal_dir / "x.png"
    if entry == "folder":
        odd.mkdir()
    else:
        odd.symlink_to(normal_dir / "gone.png")
    kind = "a folder" if entry == "folder" else "a broken link"
    message = f"image folder entry '{odd}' is {kind}, not an image file"
    with pytest.raises(ValueError, match=message):
        list_images(normal_dir)
    with pytest.raises(ValueError, match=message):
        SynthesisDataset(normal_dir, Normal())
    with pytest.raises(ValueError, match="x.png"):
        TexturePool(normal_dir)
    assert odd not in list_images(normal_dir, keep_non_files=True)
    assert len(list_images(normal_dir, keep_non_files=True)) == 4
    out = normal_dir.parent / "grid.png"
    assert main(["preview", "--images", str(normal_dir), "--out", str(out)]) == 2
    assert not out.exists()
