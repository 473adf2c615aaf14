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

with ``L = S + (grid - 1) * stride`` (:class:`~transferlab.data.tiles.TileGrid`). Only built-in
Keras layers are used, so the model saves and loads with safe mode on and converts to
SavedModel, ONNX and TFLite like any other backbone: everything after the backbone sees a
backbone whose input is ``L`` pixels. Preprocessing runs once on the whole image before the
crops: it is per pixel, so this equals preprocessing each tile.

Max over tiles suits "a defect in one tile" (the tile that shows it decides); ``"max+mean"``
also keeps the average of the tiles (twice the features).
"""

from __future__ import annotations

import math

import keras

from transferlab.data.tiles import TileGrid

__all__ = ["TILED_BASE", "tile_backbone_graph", "pool_tiles", "is_tiled", "grid_of"]

TILED_BASE = "tiled_base"


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
    """Whether ``backbone`` (an assembled backbone, image -> features) runs its base over tiles."""
    return any(layer.name == TILED_BASE for layer in backbone.layers)


def grid_of(backbone: keras.Model) -> TileGrid:
    """The :class:`~transferlab.data.tiles.TileGrid` a tiled backbone was built with, read from its layers
    (so a saved model needs no metadata beside it)."""
    tiles = backbone.get_layer(TILED_BASE).input.shape  # (N, T, S, S, 3)
    count, tile, size = int(tiles[1]), int(tiles[2]), int(backbone.input.shape[1])
    grid = math.isqrt(count)
    stride = (size - tile) // (grid - 1)
    names = {layer.name for layer in backbone.layers}
    pool = "max+mean" if "tile_pool" in names else "max" if "tile_max" in names else "mean"
    return TileGrid(grid, tile, (tile - stride) / tile, pool)
