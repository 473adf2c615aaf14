"""Decode any supported image file to 8-bit RGB, and resize it the way a backbone expects.

This is the single decode path of transferlab: dataset validation, the training pipeline,
feature extraction and prediction all call :func:`decode_image`, so training never meets a file
that validation would have rejected, and prediction sees pixels exactly as training did.

Conversions (decided by file content, never by extension):

* EXIF orientation is applied (phone and camera photos are stored rotated).
* GIF / multi-frame TIFF / WebP: the first frame.
* Grayscale, 1-bit and palette images are expanded to RGB.
* Alpha (RGBA, LA, palette transparency) is composited over **white**, so transparent
  regions become a neutral background instead of the arbitrary colours hidden under alpha = 0.
* CMYK and YCbCr are converted with Pillow's colour conversion.
* 16-bit and 32-bit integer or float images are scaled to 0..255 (16-bit by ``>> 8``).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferlab.errors import ConfigError, TransferlabError

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP", "TIFF"})
RESIZE_MODES = ("squash", "center-crop", "pad")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}
ResizeMode = Literal["squash", "center-crop", "pad"]
ALPHA_BACKGROUND = (255, 255, 255)
# Pillow refuses images over 2x this many pixels as decompression bombs; 180 MP covers
# real high-resolution inspection cameras while still stopping malicious files.
Image.MAX_IMAGE_PIXELS = 180_000_000


class ImageDecodeError(TransferlabError, ValueError):
    """A file could not be decoded as an image; ``reason`` says why in a few words."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{reason}")


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageDecodeError(None, "empty file (0 bytes)")
        return Image.open(io.BytesIO(source))
    path = Path(source)
    if path.stat().st_size == 0:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    return Image.open(path)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            arr8 = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        else:
            # 32-bit int or float: scale by the type's natural range when it fits, else by max.
            arr = arr.astype(np.float64)
            hi = float(arr.max()) if arr.size else 0.0
            scale = 1.0 if hi <= 255 else (257.0 if hi <= 65535 else hi / 255.0)
            if mode == "F" and hi <= 1.0:
                scale = 1.0 / 255.0
            arr8 = np.clip(np.round(arr / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return img.convert("RGB")


def decode_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Decode an image file (or its bytes) fully to a uint8 RGB array of shape (H, W, 3).

    Raises:
        ImageDecodeError: with a short ``reason`` (empty, truncated, not an image,
            unsupported format, too large, ...). Never returns a partial image.
    """
    return np.asarray(open_rgb(source))


def open_rgb(source: str | os.PathLike | bytes, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open, fully decode and convert to RGB; see :func:`decode_image`.

    ``draft_size`` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while decoding when
    the image is much larger than needed (several times faster, still at least that size).
    """
    path = None if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) for big-but-allowed images and odd metadata; a
            # warning per file would drown the real messages.
            warnings.simplefilter("ignore")
            img = _open(source)
            fmt = img.format or "unknown"
            if fmt not in SUPPORTED_FORMATS:
                raise ImageDecodeError(
                    path, f"unsupported image format {fmt} (supported: JPEG, PNG, BMP, GIF, WebP, TIFF)"
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if draft_size is not None and fmt in ("JPEG", "MPO"):
                img.draft("RGB", draft_size)
            img.load()  # forces a full decode: truncation shows up here, not later
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
            rgb.info["source_format"] = fmt
            return rgb
    except ImageDecodeError as exc:
        if exc.path is None and path is not None:
            raise ImageDecodeError(path, exc.reason) from None
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(path, "not an image (unrecognised content)") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(path, f"image too large ({exc})") from None
    except FileNotFoundError:
        raise ImageDecodeError(path, "file not found") from None
    except PermissionError:
        raise ImageDecodeError(path, "permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        message = str(exc) or type(exc).__name__
        if "truncated" in message.lower() or isinstance(exc, EOFError):
            message = f"truncated or incomplete file ({message})"
        else:
            message = f"cannot decode ({message})"
        raise ImageDecodeError(path, message) from None


def resize_image(
    img: Image.Image,
    size: tuple[int, int],
    *,
    mode: ResizeMode = "squash",
    interpolation: str = "bilinear",
    crop_fraction: float = 1.0,
) -> np.ndarray:
    """Resize an RGB image to ``size`` = (height, width); returns uint8 (height, width, 3).

    Modes:
        ``squash``: stretch to the target size, aspect ratio not kept (nothing is lost).
        ``center-crop``: keep aspect ratio, crop the central ``crop_fraction`` of the shorter
        side (0.875 is the classic ImageNet evaluation crop), then resize.
        ``pad``: keep aspect ratio, fit inside the target and pad with black (letterbox).
    """
    if mode not in RESIZE_MODES:
        raise ConfigError(f"Unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}.")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"Unknown interpolation {interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}.")
    if not 0.0 < crop_fraction <= 1.0:
        raise ConfigError(f"crop_fraction must be in (0, 1], got {crop_fraction}.")
    height, width = size
    resample = INTERPOLATIONS[interpolation]
    w, h = img.size
    if mode == "squash":
        out = img.resize((width, height), resample)
    elif mode == "center-crop":
        # Crop the largest centred box with the target's aspect ratio, scaled by crop_fraction.
        target_ratio = width / height
        crop_w, crop_h = (h * target_ratio, h) if w / h > target_ratio else (w, w / target_ratio)
        crop_w, crop_h = crop_w * crop_fraction, crop_h * crop_fraction
        left, top = (w - crop_w) / 2.0, (h - crop_h) / 2.0
        out = img.resize((width, height), resample, box=(left, top, left + crop_w, top + crop_h))
    else:
        scale = min(width / w, height / h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        resized = img.resize((new_w, new_h), resample)
        out = Image.new("RGB", (width, height), (0, 0, 0))
        out.paste(resized, ((width - new_w) // 2, (height - new_h) // 2))
    return np.asarray(out, dtype=np.uint8)


def load_image(
    source: str | os.PathLike | bytes,
    size: tuple[int, int],
    *,
    mode: ResizeMode = "squash",
    interpolation: str = "bilinear",
    crop_fraction: float = 1.0,
) -> np.ndarray:
    """Decode and resize in one step: uint8 array (height, width, 3)."""
    # Ask the JPEG decoder for at least twice the target size so the final (anti-aliased)
    # resize still has enough pixels; this keeps results close to a full decode.
    draft = (size[1] * 2, size[0] * 2)
    img = open_rgb(source, draft_size=draft)
    return resize_image(img, size, mode=mode, interpolation=interpolation, crop_fraction=crop_fraction)


@dataclass(frozen=True)
class ResizeConfig:
    """How a decoded image becomes the backbone's input: size, mode, crop and filter.

    Attributes:
        size: side of the square input in pixels (>= 8).
        mode: one of :data:`RESIZE_MODES`: "squash" (stretch to a square), "center-crop" (scale the
            short side, keep the centre ``crop_fraction``), "pad" (letterbox on black).
        interpolation: one of :data:`INTERPOLATIONS`.
        crop_fraction: share of the short side kept by "center-crop", in (0, 1].
    """

    size: int = 224
    mode: str = "squash"
    interpolation: str = "bilinear"
    crop_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ConfigError(f"Unknown resize mode {self.mode!r}; choose one of {', '.join(RESIZE_MODES)}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"Unknown interpolation {self.interpolation!r}; "
                              f"choose one of {', '.join(INTERPOLATIONS)}.")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 8:
            raise ConfigError(f"Image size must be an integer of at least 8 pixels, got {self.size!r}.")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ConfigError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}.")

    def to_dict(self) -> dict:
        return asdict(self)

    def load(self, path: str | os.PathLike | bytes) -> np.ndarray:
        """Decode and resize one file to uint8 (size, size, 3)."""
        return load_image(path, (self.size, self.size), mode=self.mode, interpolation=self.interpolation,
                          crop_fraction=self.crop_fraction)
