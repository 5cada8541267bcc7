import math

import pytest
import torch

from anomgen.functional import perlin as perlin_module
from anomgen.functional.perlin import perlin_noise
from anomgen.transforms.perlin import PerlinMaskGenerator
from tests.conftest import OPENCV_EXACT_WARPS


def test_shape_range_and_determinism():
    noise = perlin_noise((40, 70), [(4, 8), (1, 32)], [0.0, 45.0], [1, 2])
    assert noise.shape == (2, 40, 70)
    assert noise.abs().max() <= math.sqrt(2) + 1e-5
    assert torch.equal(noise, perlin_noise((40, 70), [(4, 8), (1, 32)], [0.0, 45.0], [1, 2]))
    assert not torch.equal(noise[0], perlin_noise((40, 70), [(4, 8)], [0.0], [3])[0])


def test_sample_independent_of_its_batch():
    lattice = [(2, 4), (32, 32), (2, 4), (8, 1)]
    angles, seeds = [10.0, -30.0, 80.0, 0.0], [5, 6, 7, 8]
    batch = perlin_noise((64, 96), lattice, angles, seeds)
    for i in range(4):
        alone = perlin_noise((64, 96), [lattice[i]], [angles[i]], [seeds[i]])[0]
        assert torch.equal(batch[i], alone)


def test_frequency_follows_lattice():
    """More lattice cells -> more sign changes along a row."""

    def crossings(cells):
        row = perlin_noise((128, 128), [(cells, cells)], [0.0], [0])[0, 64]
        return int((torch.sign(row[1:]) != torch.sign(row[:-1])).sum())

    assert crossings(16) > crossings(2)


def test_canvas_matches_brute_force_perlin():
    """The matrix form equals the Perlin formula evaluated point by point."""
    points, extent, cell, seed = 20, 40.0, 10.0, 11
    canvas = perlin_module._canvas([(points, points, cell, cell, seed)], extent, "cpu")[0]
    nodes = int(extent // cell) + 2
    grads = torch.rand((nodes, nodes), generator=torch.Generator().manual_seed(seed)) * 2 * math.pi

    def fade(t):
        return t**3 * (t * (t * 6 - 15) + 10)

    def reference(y: float, x: float) -> float:
        iy, ix = math.floor(y / cell), math.floor(x / cell)
        fy, fx = y / cell - iy, x / cell - ix
        total = 0.0
        for dy in (0, 1):
            for dx in (0, 1):
                g = float(grads[iy + dy, ix + dx])
                dot = math.cos(g) * (fx - dx) + math.sin(g) * (fy - dy)
                wy = fade(fy) if dy else 1 - fade(fy)
                wx = fade(fx) if dx else 1 - fade(fx)
                total += wy * wx * dot
        return total * math.sqrt(2)

    step = extent / points
    for k in range(points):
        for j in (0, 7, 19):
            expected = reference((k + 0.5) * step, (j + 0.5) * step)
            assert canvas[k, j].item() == pytest.approx(expected, abs=1e-5)


def _perlin_at_pixels(size, cells, angle_deg, seed):
    """Perlin noise of ``perlin_noise``'s lattice evaluated exactly at each rotated pixel centre."""
    height, width = size
    extent = math.hypot(height, width)
    cell_y, cell_x = height / cells[0], width / cells[1]
    nodes = (int(extent // cell_y) + 2, int(extent // cell_x) + 2)
    generator = torch.Generator().manual_seed(seed)
    grads = torch.rand(nodes, generator=generator).double() * 2 * math.pi
    ys = torch.arange(height, dtype=torch.float64).view(-1, 1) + 0.5 - height / 2
    xs = torch.arange(width, dtype=torch.float64).view(1, -1) + 0.5 - width / 2
    cos, sin = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    ty = (xs * sin + ys * cos + extent / 2) / cell_y
    tx = (xs * cos - ys * sin + extent / 2) / cell_x
    iy, ix = ty.floor().long(), tx.floor().long()
    fy, fx = ty - iy, tx - ix

    def fade(t):
        return t**3 * (t * (t * 6 - 15) + 10)

    total = torch.zeros_like(fy)
    for dy in (0, 1):
        for dx in (0, 1):
            g = grads[iy + dy, ix + dx]
            dot = torch.cos(g) * (fx - dx) + torch.sin(g) * (fy - dy)
            wy = fade(fy) if dy else 1 - fade(fy)
            wx = fade(fx) if dx else 1 - fade(fx)
            total += wy * wx * dot
    return total * math.sqrt(2)


@pytest.mark.parametrize(
    ("size", "cells", "angle"),
    [((256, 256), (32, 1), 0.0), ((64, 64), (32, 32), 30.0), ((48, 96), (32, 16), -70.0)],
)
def test_noise_matches_exact_perlin_also_for_small_cells(size, cells, angle):
    """Cells under 8 px (small images at DRAEM's 32 cells) keep 8 canvas samples per cell.

    With one sample per pixel, a 64 px field at 32 cells was off by 0.1 on average and its
    0.5-threshold mask held a quarter of the pixels of the exact one.
    """
    for seed in range(3):
        noise = perlin_noise(size, [cells], [angle], [seed])[0].double()
        exact = _perlin_at_pixels(size, cells, angle, seed)
        assert (noise - exact).abs().mean() < 0.012
        assert ((noise > 0.5) != (exact > 0.5)).double().mean() < 0.01


def test_canvas_points():
    extent = math.hypot(256, 256)
    # 8 px cells and larger: 8 samples per cell, at most one per pixel (as before).
    assert perlin_module._canvas_points(extent, 8.0) == math.ceil(extent)
    assert perlin_module._canvas_points(extent, 256.0) == math.ceil(8 * extent / 256)
    assert perlin_module._canvas_points(extent, 10_000.0) == 2
    # Smaller cells: still 8 per cell, up to MAX_SAMPLES_PER_PIXEL per pixel.
    assert perlin_module._canvas_points(extent, 2.0) == math.ceil(4 * extent)
    assert perlin_module._canvas_points(extent, 1.0) == math.ceil(4 * extent)


def test_cpu_warp_matches_grid_sample_path():
    """The OpenCV path and the grid_sample path (used on GPUs) agree."""
    size, lattice, angles, seeds = (50, 80), [(4, 8)], [33.0], [4]
    cpu = perlin_noise(size, lattice, angles, seeds)
    extent = math.hypot(*size)
    plan = perlin_module._canvas(
        [
            (
                perlin_module._canvas_points(extent, 50 / 4),
                perlin_module._canvas_points(extent, 80 / 8),
                50 / 4,
                80 / 8,
                4,
            )
        ],
        extent,
        "cpu",
    )
    grid = perlin_module._rotation_grid(50, 80, extent, angles, "cpu")
    gridded = torch.nn.functional.grid_sample(
        plan[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[:, 0]
    # OpenCV 4's 1/32 px sampling positions (tests/conftest.py) add about 1e-4: 0.0011 measured.
    assert (cpu - gridded).abs().mean() < (1e-3 if OPENCV_EXACT_WARPS else 2e-3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="lattice"):
        perlin_noise((32, 32), [(0, 4)], [0.0], [0])
    with pytest.raises(ValueError, match="got 1 lattices"):
        perlin_noise((32, 32), [(2, 4)], [0.0, 1.0], [0])
    with pytest.raises(ValueError, match="scale_exponent"):
        PerlinMaskGenerator(scale_exponent=(3, 1))
    with pytest.raises(ValueError, match="threshold"):
        PerlinMaskGenerator(threshold=1.5)
    with pytest.raises(ValueError, match="threshold must be a number, got None"):
        PerlinMaskGenerator(threshold=None)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((32.5, 32.7), "size must be an integer .* got 32.5"),
        ((32, 32, 3), r"size must be an int or an \(H, W\) pair of ints, got \(32, 32, 3\)"),
        ((0, 32), "size must be an integer .* got 0"),
    ],
)
def test_mask_generator_size_is_two_positive_ints(size, message):
    with pytest.raises(ValueError, match=message):
        PerlinMaskGenerator()(size, seeds=[1])


def test_mask_generator_batched_and_binary():
    generator = PerlinMaskGenerator()
    masks = generator((64, 48), seeds=range(8))
    assert masks.shape == (8, 1, 64, 48)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks[3], generator((64, 48), seeds=[3])[0])
    # DRAEM's threshold keeps a minority of pixels on average.
    assert 0.0 < generator((128, 128), seeds=range(64)).mean() < 0.5


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ([-1], r"seeds\[0\] must be an int in \[0, 2\*\*64\), got -1"),
        ([0, 1.5], r"seeds\[1\] must be an int .* got 1.5"),
        ([True], r"seeds\[0\] must be an int .* got True"),
        ([], r"seeds must be a non-empty sequence of ints, got \[\]"),
        (3, "seeds must be a non-empty sequence of ints, got 3"),
    ],
)
def test_mask_generator_seeds_are_non_negative_ints(seeds, message):
    with pytest.raises(ValueError, match=message):
        PerlinMaskGenerator()((32, 32), seeds=seeds)


@pytest.mark.parametrize(
    ("lattice", "angles", "message"),
    [
        ([(2, 2)], [math.nan], "angles must be finite"),
        ([(2.5, 2)], [0.0], "lattice cells must be integers"),
        ([(True, 2)], [0.0], "lattice cells must be integers"),
    ],
)
def test_perlin_noise_refuses_what_would_give_nan_or_truncated_fields(lattice, angles, message):
    with pytest.raises(ValueError, match=message):
        perlin_noise((16, 16), lattice, angles, [0])
