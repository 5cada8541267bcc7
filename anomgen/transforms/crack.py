"""Crack: long, thin, dark lines that wander about one direction and may branch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from anomgen.core import (
    AnomalyTransform,
    check_int,
    check_int_range,
    check_range,
    finite_number,
    random_int,
    random_uniform,
    register,
)
from anomgen.functional.crack import crack, crack_path

__all__ = ["Crack"]

# Each step's heading keeps this share of the previous step's deviation: a crack wiggles
# about its course instead of drifting away from it as a plain random walk would.
_COURSE_MEMORY = 0.6


@register
@dataclass
class Crack(AnomalyTransform):
    """A crack: a thin dark line across a good part of the image, with side branches.

    Unlike ``LocalCorruption``'s short straight scratches, a crack runs ``length`` of the
    image diagonal in a direction from ``angle`` (degrees; 0 across, 90 down the image),
    in ``steps`` straight steps, centred on a random pixel. Each step turns by up to
    ``wander`` degrees and keeps 60 % of the previous deviation, so the heading wiggles
    about the course (never more than 2.5 x ``wander`` off it) instead of drifting away.
    ``branches`` side cracks leave it at random vertices, ``branch_angle`` degrees off its
    heading to either side, ``branch_length`` of its length. Lines are ``thickness`` px
    wide and darken the image by the fraction ``depth`` (multiplicatively, so the texture
    shows through). The mask is every pixel the lines touch; the rest of the image is
    unchanged.
    """

    length: tuple[float, float] = (0.1, 0.5)
    angle: tuple[float, float] = (0.0, 180.0)
    wander: float = 15.0
    steps: int = 16
    branches: tuple[int, int] = (0, 2)
    branch_angle: tuple[float, float] = (20.0, 60.0)
    branch_length: tuple[float, float] = (0.2, 0.5)
    thickness: tuple[int, int] = (1, 3)
    depth: tuple[float, float] = (0.15, 0.5)
    param_keys = ("lines", "thickness", "depth")

    def __post_init__(self) -> None:
        self.length = check_range("length", self.length, 0.0, 2.0)
        if self.length[1] <= 0:
            raise ValueError(f"length must allow a positive value (max > 0), got {self.length!r}")
        self.angle = check_range("angle", self.angle, -360.0, 360.0)
        self.wander = finite_number("wander", self.wander, 0.0, 90.0)
        self.steps = check_int("steps", self.steps, 1, 1024)
        self.branches = check_int_range("branches", self.branches, 0, 16)
        self.branch_angle = check_range("branch_angle", self.branch_angle, 0.0, 180.0)
        self.branch_length = check_range("branch_length", self.branch_length, 0.0, 2.0)
        self.thickness = check_int_range("thickness", self.thickness, 1, 64)
        self.depth = check_range("depth", self.depth, 0.0, 1.0)
        if self.depth[1] <= 0:
            raise ValueError(f"depth must allow a positive value (max > 0), got {self.depth!r}")

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        height, width = image.shape[-2:]
        length = random_uniform(generator, *self.length) * math.hypot(height, width)
        headings = self._headings(generator, random_uniform(generator, *self.angle), self.steps)
        main = crack_path((0.0, 0.0), length, headings)
        center = (random_uniform(generator, 0, width), random_uniform(generator, 0, height))
        middle = main[len(main) // 2]
        main = [[x + center[0] - middle[0], y + center[1] - middle[1]] for x, y in main]
        lines = [main]
        branch_steps = max(1, self.steps // 2)
        for _ in range(random_int(generator, *self.branches)):
            vertex = random_int(generator, 1, self.steps)
            side = 1.0 if random_int(generator, 0, 1) else -1.0
            course = headings[vertex - 1] + side * random_uniform(generator, *self.branch_angle)
            lines.append(
                crack_path(
                    main[vertex],
                    length * random_uniform(generator, *self.branch_length),
                    self._headings(generator, course, branch_steps),
                )
            )
        return {
            "lines": lines,
            "thickness": random_int(generator, *self.thickness),
            "depth": random_uniform(generator, *self.depth),
        }

    def _headings(self, generator: torch.Generator, course: float, steps: int) -> list[float]:
        headings, drift = [], 0.0
        for _ in range(steps):
            drift = _COURSE_MEMORY * drift + random_uniform(generator, -self.wander, self.wander)
            headings.append(course + drift)
        return headings

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return crack(image, params["lines"], params["thickness"], params["depth"])
