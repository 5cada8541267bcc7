import math

import pytest
import torch

from anomgen.functional import perlin as perlin_module
from anomgen.functional.perlin import perlin_noise
from anomgen.transforms.perlin import PerlinMaskGenerator


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


def test_matches_brute_force_perlin():
    """Unrotated noise equals a direct evaluation of the Perlin formula at pixel centres."""
    height, width, cells = 32, 32, (4, 4)
    noise = perlin_noise((height, width), [cells], [0.0], [11])[0]
    extent = math.hypot(height, width)
    points = math.ceil(extent)  # 8 samples/cell at 4 cells > extent: canvas = every pixel
    angles = torch.rand((points, points), generator=torch.Generator().manual_seed(11))
    assert perlin_module.SAMPLES_PER_CELL * extent / (height / cells[0]) >= points
    # The canvas is a (points x points) grid over [0, extent); sample its pixel centres directly.
    weight, disp = perlin_module._axis_basis(points, extent, height / cells[0])
    nodes = weight.shape[1]
    grads = angles[:nodes, :nodes] * 2 * math.pi
    canvas = (weight @ torch.cos(grads) @ disp.T + disp @ torch.sin(grads) @ weight.T) * math.sqrt(2)

    def reference(y: float, x: float) -> float:
        t_y, t_x = y / (height / cells[0]), x / (width / cells[1])
        iy, ix = math.floor(t_y), math.floor(t_x)
        fy, fx = t_y - iy, t_x - ix

        def fade(t):
            return t**3 * (t * (t * 6 - 15) + 10)

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
    for k, j in [(3, 5), (10, 20), (30, 2)]:
        assert canvas[k, j].item() == pytest.approx(reference((k + 0.5) * step, (j + 0.5) * step), abs=1e-5)
    assert torch.isfinite(noise).all()


def test_cpu_warp_matches_grid_sample_path():
    """The OpenCV path and the grid_sample path (used on GPUs) agree."""
    size, lattice, angles, seeds = (50, 80), [(4, 8)], [33.0], [4]
    cpu = perlin_noise(size, lattice, angles, seeds)
    extent = math.hypot(*size)
    plan = perlin_module._canvas(
        [
            (
                min(math.ceil(extent), math.ceil(8 * extent / (50 / 4))),
                min(math.ceil(extent), math.ceil(8 * extent / (80 / 8))),
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
    assert (cpu - gridded).abs().mean() < 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="lattice"):
        perlin_noise((32, 32), [(0, 4)], [0.0], [0])
    with pytest.raises(ValueError, match="got 1 lattices"):
        perlin_noise((32, 32), [(2, 4)], [0.0, 1.0], [0])
    with pytest.raises(ValueError, match="scale_exponent"):
        PerlinMaskGenerator(scale_exponent=(3, 1))
    with pytest.raises(ValueError, match="threshold"):
        PerlinMaskGenerator(threshold=1.5)


def test_mask_generator_batched_and_binary():
    generator = PerlinMaskGenerator()
    masks = generator((64, 48), seeds=range(8))
    assert masks.shape == (8, 1, 64, 48)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks[3], generator((64, 48), seeds=[3])[0])
    # DRAEM's threshold keeps a minority of pixels on average.
    assert 0.0 < generator((128, 128), seeds=range(64)).mean() < 0.5
