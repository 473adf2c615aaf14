"""The geometry of a tiled view of an image: ``grid x grid`` overlapping square tiles.

Keras-free (configs validate with it; :mod:`transferlab.backbones.tiling` builds the graph
from it). A grid of tiles of ``tile_size`` px whose neighbours overlap by ``overlap`` of a tile
covers a square of ``size = tile_size + (grid - 1) * stride`` px, ``stride = tile_size -
round(tile_size * overlap)``: e.g. 2 x 2 tiles of 224 px with 25% overlap cover 392 px.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from transferlab.errors import ConfigError

__all__ = ["TILE_POOLS", "DEFAULT_OVERLAP", "DEFAULT_POOL", "MAX_GRID", "MAX_OVERLAP", "TileGrid", "check_tiling",
           "place_tiles"]

TILE_POOLS = ("max", "mean", "max+mean")
DEFAULT_OVERLAP = 0.25
DEFAULT_POOL = "max"
MAX_GRID = 6  # 36 tiles: 36x the backbone's cost per image already
MAX_OVERLAP = 0.75


def check_tiling(grid: int, overlap: float, pool: str) -> None:
    """Raise :class:`~transferlab.errors.ConfigError` naming the bad tiling value and the valid ones."""
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or not 1 <= grid <= MAX_GRID:
        raise ConfigError(f"tiles must be a whole number from 1 (no tiling) to {MAX_GRID}, or 'auto', got {grid!r}.")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0.0 <= overlap <= MAX_OVERLAP:
        raise ConfigError(f"tile_overlap must be a fraction of a tile from 0 to {MAX_OVERLAP}, got {overlap!r}.")
    if pool not in TILE_POOLS:
        raise ConfigError(f"tile_pool must be one of {', '.join(TILE_POOLS)}, got {pool!r}.")


@dataclass(frozen=True)
class TileGrid:
    """``grid x grid`` square tiles of ``tile_size`` px overlapping by ``overlap`` of a tile, pooled by ``pool``.

    ``size`` is the side of the whole input; :meth:`offsets` the (top, left) of each tile, row by row.
    """

    grid: int
    tile_size: int
    overlap: float = DEFAULT_OVERLAP
    pool: str = DEFAULT_POOL

    def __post_init__(self) -> None:
        check_tiling(self.grid, self.overlap, self.pool)

    @classmethod
    def from_dict(cls, data: dict) -> "TileGrid":
        """From :meth:`to_dict` (e.g. ``BackboneInfo.tiling`` as config.json keeps it)."""
        return cls(int(data["grid"]), int(data["tile_size"]), float(data["overlap"]), str(data["pool"]))

    @property
    def stride(self) -> int:
        # At least one pixel: an overlap of a whole tile would repeat the same tile.
        return max(1, self.tile_size - round(self.tile_size * self.overlap))

    @property
    def size(self) -> int:
        return self.tile_size + (self.grid - 1) * self.stride

    @property
    def count(self) -> int:
        return self.grid * self.grid

    def offsets(self) -> list[tuple[int, int]]:
        """(top, left) in pixels of each of the ``count`` tiles, row-major."""
        return [(r * self.stride, c * self.stride) for r in range(self.grid) for c in range(self.grid)]

    def feature_dim(self, base_dim: int) -> int:
        """Pooled feature size for a base with ``base_dim`` features ("max+mean" doubles it)."""
        return base_dim * (2 if self.pool == "max+mean" else 1)

    def to_dict(self) -> dict:
        """What ``BackboneInfo.tiling`` and the feature cache's fingerprint record."""
        return {**asdict(self), "stride": self.stride, "input_size": self.size}


def place_tiles(maps: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Per-tile maps (N, T, h, w) placed back where their tiles are: (N, M, M'), overlaps by maximum.

    ``M = round(size * h / tile_size)``: the whole input at the tile maps' resolution.
    """
    maps = np.asarray(maps, np.float32)
    n, count, h, w = maps.shape
    if count != grid.count:
        raise ValueError(f"expected {grid.count} tile maps, got {count}")
    scale_h, scale_w = h / grid.tile_size, w / grid.tile_size
    out = np.zeros((n, round(grid.size * scale_h), round(grid.size * scale_w)), np.float32)
    for i, (top, left) in enumerate(grid.offsets()):
        r, c = round(top * scale_h), round(left * scale_w)
        region = out[:, r:r + h, c:c + w]
        np.maximum(region, maps[:, i, :region.shape[1], :region.shape[2]], out=region)
    return out
