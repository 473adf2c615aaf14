"""Shared fixtures: tiny generated images and datasets, and the real photos when present."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests never reach for the network: Keras weight downloads fail fast instead of hanging.
os.environ.setdefault("TRANSFERLAB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Nothing a test computes (file checks, features) lands in the user's own cache directory.
os.environ.setdefault("TRANSFERLAB_CACHE_DIR", tempfile.mkdtemp(prefix="transferlab-test-cache-"))

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def rgb_array(width: int = 32, height: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_image(path: Path, array: np.ndarray | None = None, fmt: str | None = None, **save_kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb_array() if array is None else array)
    img.save(path, format=fmt, **save_kwargs)
    return path


def make_class_folders(root: Path, classes: dict[str, int], size: int = 32, seed: int = 0) -> Path:
    """Write ``count`` distinct small PNGs into ``root/<class>/`` for each class."""
    for c, (name, count) in enumerate(classes.items()):
        for i in range(count):
            # A per-class tint keeps the classes separable for tiny training tests.
            arr = rgb_array(size, size, seed=seed * 100_000 + c * 10_000 + i)
            arr[..., c % 3] = np.clip(arr[..., c % 3].astype(int) // 2 + 128, 0, 255).astype(np.uint8)
            write_image(root / name / f"{name}_{i:04d}.png", arr)
    return root


@pytest.fixture
def shared_datasets() -> Path:
    return SHARED_DATASETS


def require_shared(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real photos not available: {path} is absent (only inside the transferlab project)")
    return path
