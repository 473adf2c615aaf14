"""Tiling: features of an overlapping grid of tiles of a large image, pooled over the tiles.

The default resize brings a whole photo down to the backbone's input (224 px for
EfficientNet-Lite0): a crack a few pixels wide in a 900 px inspection photo is then gone. A
tiled backbone takes a larger square instead, cuts it into ``grid x grid`` tiles of the base
size that overlap by ``overlap`` of a tile (so a small defect on a tile border is whole in one
of them), runs the base network on every tile and pools the tiles' features::

    Input "image" (L, L, 3) -> preprocessing -> Cropping2D/Reshape per tile -> "tiles" (N, T, S, S, 3)
      -> TimeDistributed "tiled_base" (the nested "base", T = grid**2 tiles) -> (N, T, h, w, C)
      -> TimeDistributed GlobalAveragePooling2D "tile_features" (N, T, C)
      -> max over tiles "tile_max" (and/or mean "tile_mean", concatenated) -> (N, D)

with ``L = S + (grid - 1) * stride`` and ``stride = S - round(S * overlap)``. Only built-in
Keras layers are used, so the model saves and loads with safe mode on and converts to
SavedModel, ONNX and TFLite like any other backbone: everything after the backbone sees a
backbone whose input is ``L`` pixels. Preprocessing runs once on the whole image before the
crops: it is per pixel, so this equals preprocessing each tile.

Max over tiles suits "a defect in one tile" (the tile that shows it decides); ``"max+mean"``
also keeps the average of the tiles (twice the features).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np

from transferlab.errors import ConfigError

__all__ = ["TILE_POOLS", "DEFAULT_OVERLAP", "DEFAULT_POOL", "MAX_GRID", "TileGrid", "check_tiling",
           "tile_backbone_graph", "is_tiled", "place_tiles"]

TILE_POOLS = ("max", "mean", "max+mean")
DEFAULT_OVERLAP = 0.25
DEFAULT_POOL = "max"
MAX_GRID = 6  # 36 tiles: 36x the backbone's cost per image already
MAX_OVERLAP = 0.75
TILED_BASE = "tiled_base"


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
    """The geometry of ``grid x grid`` square tiles of ``tile_size`` px overlapping by ``overlap`` of a tile.

    ``size`` is the side of the whole input; ``offsets()`` the (top, left) of each tile, row by row.
    """

    grid: int
    tile_size: int
    overlap: float = DEFAULT_OVERLAP
    pool: str = DEFAULT_POOL

    def __post_init__(self) -> None:
        check_tiling(self.grid, self.overlap, self.pool)

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
        return base_dim * (2 if self.pool == "max+mean" else 1)

    def to_dict(self) -> dict:
        """What ``BackboneInfo.tiling`` and the feature cache's fingerprint record."""
        return {**asdict(self), "stride": self.stride, "input_size": self.size}


def _stack_tiles(x, grid: TileGrid):
    """(N, L, L, 3) -> (N, T, S, S, 3): static crops, tile axis second."""
    size, tile = grid.size, grid.tile_size
    tiles = []
    for i, (top, left) in enumerate(grid.offsets()):
        crop = keras.layers.Cropping2D(((top, size - top - tile), (left, size - left - tile)), name=f"tile_{i}")(x)
        tiles.append(keras.layers.Reshape((1, tile, tile, int(x.shape[-1])), name=f"tile_{i}_axis")(crop))
    return keras.layers.Concatenate(axis=1, name="tiles")(tiles) if len(tiles) > 1 else tiles[0]


def pool_tiles(x, pool: str):
    """(N, T, C) tile features -> (N, D) with ``pool`` ("max", "mean" or "max+mean")."""
    parts = []
    if pool in ("max", "max+mean"):
        parts.append(keras.layers.GlobalMaxPooling1D(name="tile_max")(x))
    if pool in ("mean", "max+mean"):
        parts.append(keras.layers.GlobalAveragePooling1D(name="tile_mean")(x))
    return keras.layers.Concatenate(name="tile_pool")(parts) if len(parts) > 1 else parts[0]


def tile_backbone_graph(x, base: keras.Model, grid: TileGrid):
    """The tiled part of a backbone graph: preprocessed pixels (N, L, L, 3) -> pooled features (N, D).

    Raises:
        ValueError: the base's output is neither 2-D nor 4-D.
    """
    x = keras.layers.TimeDistributed(base, name=TILED_BASE)(_stack_tiles(x, grid))
    if len(x.shape) == 5:  # (N, T, h, w, C): the base's own pooling, per tile
        x = keras.layers.TimeDistributed(keras.layers.GlobalAveragePooling2D(), name="tile_features")(x)
    elif len(x.shape) != 3:
        raise ValueError(f"Backbone base output has shape {x.shape[:1] + x.shape[2:]}; expected 2-D or 4-D.")
    return pool_tiles(x, grid.pool)


def is_tiled(backbone: keras.Model) -> bool:
    """Whether ``backbone`` (a backbone or a whole classifier's backbone) runs its base over tiles."""
    return any(layer.name == TILED_BASE for layer in backbone.layers)


def place_tiles(maps: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Per-tile maps (N, T, h, w) placed back where their tiles are: (N, M, M), overlaps by maximum.

    ``M = round(L * h / S)``: the whole input at the tiles' map resolution.
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
