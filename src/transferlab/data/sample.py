"""A small, deterministic, synthetic visual-inspection dataset for demos and tests.

transferlab may not ship other people's photos, so the demo dataset is rendered here: textured
surfaces (brushed metal, woven fabric, matte paint) under uneven lighting, with sensor noise and
slight colour casts, and one of four classes:

* ``ok``: clean surface (it may still carry dust specks and faint smudges, as real parts do);
* ``scratch``: thin, long, slightly curved bright or dark lines at random angles;
* ``spot``: dark or rust-coloured blobs with soft edges;
* ``crack``: a dark, jagged, branching polyline.

Defect size, contrast and position vary so a pretrained backbone with a linear head learns the
task well without it being trivial. Only numpy and Pillow are used, so importing this module does
not pull in TensorFlow.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from transferlab.errors import ConfigError, RunExistsError

__all__ = ["SAMPLE_CLASSES", "make_sample_dataset", "render_sample"]

SAMPLE_CLASSES: tuple[str, ...] = ("ok", "scratch", "spot", "crack")

# Bump when the rendering changes, so existing sample folders are regenerated instead of reused.
_GENERATOR_VERSION = 1
_MANIFEST = "MANIFEST.json"
_JPEG_QUALITY = 90
# Defect masks are drawn at this multiple of the image size and reduced, for antialiased lines.
_SUPERSAMPLE = 2
_OWN_FILE = re.compile(r"^(?P<cls>[A-Za-z0-9_-]+)_\d{4}\.jpg$")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def make_sample_dataset(
    out_dir: str | os.PathLike[str],
    *,
    images_per_class: int = 60,
    image_size: int = 224,
    seed: int = 0,
    classes: Sequence[str] = SAMPLE_CLASSES,
) -> pathlib.Path:
    """Write a synthetic inspection dataset as ``out_dir/<class>/<class>_0000.jpg`` ...

    Parameters
    ----------
    out_dir : str or PathLike
        Destination folder; created if missing.
    images_per_class : int, default 60
        Number of images written per class.
    image_size : int, default 224
        Nominal side length in pixels; each image's width and height vary by up to +-10 %.
    seed : int, default 0
        Non-negative seed. The same arguments always give byte-identical files.
    classes : sequence of str, default ("ok", "scratch", "spot", "crack")
        Which classes to render, any subset of :data:`SAMPLE_CLASSES`.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Notes
    -----
    A ``MANIFEST.json`` records the arguments. If the folder already holds exactly the files those
    arguments produce, nothing is rendered; otherwise the sample files are rewritten. The function
    refuses to write into a folder holding files it did not create, so it never mixes synthetic
    images into a real dataset.
    """
    classes = tuple(classes)
    _check_args(images_per_class, image_size, seed, classes)
    out = pathlib.Path(out_dir)
    manifest = {
        "generator": "transferlab.data.sample",
        "version": _GENERATOR_VERSION,
        "images_per_class": images_per_class,
        "image_size": image_size,
        "seed": seed,
        "classes": list(classes),
    }
    expected = {
        pathlib.Path(cls, f"{cls}_{i:04d}.jpg") for cls in classes for i in range(images_per_class)
    }

    existing = _list_files(out)
    if _read_manifest(out) == manifest and existing == expected | {pathlib.Path(_MANIFEST)}:
        return out

    foreign = sorted(str(p) for p in existing if not _is_own_file(p))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise RunExistsError(
            f"{out} holds files that are not transferlab sample data ({shown}); "
            "choose an empty or new folder for the sample dataset."
        )

    # Remove the previous sample first: a stale image left behind (fewer images per class, a
    # dropped class) would silently become training data. The manifest goes first, so an
    # interrupted run never looks complete.
    (out / _MANIFEST).unlink(missing_ok=True)
    for rel in existing - expected:
        (out / rel).unlink(missing_ok=True)
    for sub in list(out.iterdir()) if out.is_dir() else []:
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()

    for cls in classes:
        (out / cls).mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            image = render_sample(cls, _image_rng(seed, cls, i), image_size)
            # optimize/progressive off and no EXIF: output depends only on the pixels.
            image.save(out / cls / f"{cls}_{i:04d}.jpg", format="JPEG", quality=_JPEG_QUALITY)

    (out / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def render_sample(
    class_name: str, rng: np.random.Generator, image_size: int = 224
) -> Image.Image:
    """Render one synthetic inspection image.

    The surface is drawn from ``rng`` before anything class-specific, so two generators in the same
    state give the same surface for every class: an ``ok`` image and a ``scratch`` image rendered
    from equal generators differ only by the scratch.

    Parameters
    ----------
    class_name : str
        One of :data:`SAMPLE_CLASSES`.
    rng : numpy.random.Generator
        Source of all randomness; consumed.
    image_size : int, default 224
        Nominal side length; width and height each vary by up to +-10 %.

    Returns
    -------
    PIL.Image.Image
        RGB image of size about (image_size, image_size).
    """
    if class_name not in SAMPLE_CLASSES:
        raise ConfigError(f"Unknown sample class {class_name!r}; choose from {SAMPLE_CLASSES}.")
    # Independent streams for surface, defect and noise: the defect's draws then do not shift
    # the noise, so equal generators give pixel-identical surfaces across classes.
    surface_rng, defect_rng, noise_rng = rng.spawn(3)
    w, h = (int(round(image_size * surface_rng.uniform(0.9, 1.1))) for _ in range(2))
    img = _surface(surface_rng, w, h)
    # Distractors in every class, so "ok" vs "spot" is not just "any dark pixel at all".
    _dust_and_smudges(surface_rng, img)
    if class_name == "scratch":
        _scratches(defect_rng, img)
    elif class_name == "spot":
        _spots(defect_rng, img)
    elif class_name == "crack":
        _crack(defect_rng, img)
    # Sensor noise last: it sits on top of defects too, as in a real capture.
    img += noise_rng.normal(0.0, noise_rng.uniform(1.5, 5.0), size=img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="RGB")


# --------------------------------------------------------------------------------------------
# Folder bookkeeping
# --------------------------------------------------------------------------------------------


def _check_args(
    images_per_class: int, image_size: int, seed: int, classes: tuple[str, ...]
) -> None:
    if int(images_per_class) != images_per_class or images_per_class < 1:
        raise ConfigError(f"images_per_class must be a positive integer, got {images_per_class!r}.")
    if int(image_size) != image_size or image_size < 32:
        raise ConfigError(f"image_size must be an integer >= 32, got {image_size!r}.")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    if not classes:
        raise ConfigError("classes must not be empty.")
    unknown = [c for c in classes if c not in SAMPLE_CLASSES]
    if unknown:
        raise ConfigError(f"Unknown sample classes {unknown}; choose from {SAMPLE_CLASSES}.")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes contains duplicates: {list(classes)}.")


def _image_rng(seed: int, class_name: str, index: int) -> np.random.Generator:
    # crc32, not hash(): str hashes are salted per process, which would break determinism.
    return np.random.default_rng([seed, zlib.crc32(class_name.encode("utf-8")), index])


def _list_files(out: pathlib.Path) -> set[pathlib.Path]:
    if not out.exists():
        return set()
    if not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder.")
    # Hidden files (.DS_Store and the like) are ignored: image loaders skip them too.
    files = {p.relative_to(out) for p in out.rglob("*") if not p.is_dir()}
    return {p for p in files if not any(part.startswith(".") for part in p.parts)}


def _read_manifest(out: pathlib.Path) -> dict | None:
    try:
        return json.loads((out / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_own_file(rel: pathlib.Path) -> bool:
    if rel == pathlib.Path(_MANIFEST):
        return True
    m = _OWN_FILE.match(rel.name)
    # Only our own class names: a real "cats/cats_0001.jpg" must count as foreign, not be deleted.
    return (
        len(rel.parts) == 2
        and m is not None
        and m.group("cls") == rel.parts[0]
        and rel.parts[0] in SAMPLE_CLASSES
    )


# --------------------------------------------------------------------------------------------
# Surfaces. Images are float arrays (h, w, 3) in 0..255 until the very end.
# --------------------------------------------------------------------------------------------


def _surface(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    kind = rng.choice(["metal", "fabric", "paint"], p=[0.45, 0.3, 0.25])
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "metal":
        img = _brushed_metal(rng, x, y)
    elif kind == "fabric":
        img = _fabric(rng, x, y)
    else:
        img = _matte_paint(rng, x, y)
    return img * _lighting(rng, x, y)[..., None]


def _smooth_noise_1d(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Unit-variance-ish 1-D noise with features about ``scale`` samples wide."""
    knots = rng.normal(size=int(n / scale) + 3)
    return np.interp(np.arange(n) / scale, np.arange(knots.size), knots)


def _lowres_noise_2d(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Smooth 2-D noise in about -1..1: a coarse random grid upsampled bicubically."""
    coarse = rng.uniform(0, 255, size=(cells, cells)).astype(np.uint8)
    up = Image.fromarray(coarse, mode="L").resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float64) / 127.5 - 1.0


def _brushed_metal(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = x.shape
    # Grain runs along u; brightness varies across it (v), with fine and coarse streaks.
    theta = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.08)
    v = -x * np.sin(theta) + y * np.cos(theta)
    v = v - v.min()
    n = int(np.ceil(v.max())) + 2
    fine = _smooth_noise_1d(rng, n, rng.uniform(0.7, 1.5))
    coarse = _smooth_noise_1d(rng, n, rng.uniform(8, 25))
    streak = np.interp(v, np.arange(n), fine * rng.uniform(4, 9) + coarse * rng.uniform(3, 8))
    base = rng.uniform(130, 195)
    grain = rng.normal(0, 2.0, size=(h, w))
    tint = 1.0 + rng.normal(0, 0.025, size=3)  # slight warm/cool cast of the steel or alloy
    return (base + streak + grain)[..., None] * tint


_FABRIC_COLOURS = np.array(
    [[170, 160, 140], [120, 130, 150], [95, 110, 95], [150, 150, 155], [175, 150, 120]],
    dtype=np.float64,
)


def _fabric(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = x.shape
    theta = rng.normal(0, 0.15)
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    period = rng.uniform(3.5, 6.5)
    # Plain weave: warp and weft threads alternate over/under in a checkerboard of thread cells.
    over = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(bool)
    warp = np.sin(np.pi * u / period) ** 2
    weft = np.sin(np.pi * v / period) ** 2
    weave = np.where(over, warp, weft)
    fibre = rng.normal(0, 1, size=(h, w))
    slub = _lowres_noise_2d(rng, w, h, cells=int(rng.integers(4, 9)))  # uneven yarn thickness
    colour = _FABRIC_COLOURS[rng.integers(len(_FABRIC_COLOURS))] * rng.uniform(0.9, 1.1, size=3)
    shade = 0.8 + 0.22 * weave + 0.035 * fibre + 0.05 * slub
    return shade[..., None] * colour


def _matte_paint(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = x.shape
    mottle = 0.6 * _lowres_noise_2d(rng, w, h, cells=int(rng.integers(5, 12)))
    mottle += 0.4 * _lowres_noise_2d(rng, w, h, cells=int(rng.integers(20, 40)))
    orange_peel = rng.normal(0, 1, size=(h, w))
    colour = rng.uniform(110, 200) * (1.0 + rng.normal(0, 0.05, size=3))
    shade = 1.0 + 0.04 * mottle + 0.015 * orange_peel
    return shade[..., None] * colour


def _lighting(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = x.shape
    xn, yn = x / w - 0.5, y / h - 0.5
    phi = rng.uniform(0, 2 * np.pi)
    gradient = rng.uniform(0.05, 0.3) * (xn * np.cos(phi) + yn * np.sin(phi))
    # A soft highlight from a ring light or window, and some lens vignetting.
    cx, cy = rng.uniform(-0.4, 0.4, size=2)
    spread = rng.uniform(0.02, 0.1)
    highlight = rng.uniform(0.0, 0.2) * np.exp(-((xn - cx) ** 2 + (yn - cy) ** 2) / spread)
    vignette = rng.uniform(0.0, 0.35) * (xn**2 + yn**2)
    return 1.0 + gradient + highlight - vignette


# --------------------------------------------------------------------------------------------
# Marks. Each is drawn as a greyscale coverage mask and blended towards a colour.
# --------------------------------------------------------------------------------------------


def _blend(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float) -> None:
    if not mask.any():  # e.g. no dust this time: skip three full-image passes
        return
    a = (alpha * mask)[..., None]
    img *= 1.0 - a
    img += a * colour


def _new_mask(img: np.ndarray) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    h, w = img.shape[:2]
    mask = Image.new("L", (w * _SUPERSAMPLE, h * _SUPERSAMPLE), 0)
    return mask, ImageDraw.Draw(mask)


def _finish_mask(mask: Image.Image, img: np.ndarray, blur: float) -> np.ndarray:
    h, w = img.shape[:2]
    small = mask.resize((w, h), Image.Resampling.BOX)
    if blur > 0:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(small, dtype=np.float64) / 255.0


def _scaled(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(px), float(py)) for px, py in points * _SUPERSAMPLE]


def _dust_and_smudges(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    mask, draw = _new_mask(img)
    for _ in range(int(rng.integers(0, 7))):
        cx, cy = rng.uniform(0, w) * _SUPERSAMPLE, rng.uniform(0, h) * _SUPERSAMPLE
        r = rng.uniform(0.4, 1.3) * _SUPERSAMPLE
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    _blend(img, _finish_mask(mask, img, 0.3), np.array([40.0, 38.0, 35.0]), rng.uniform(0.2, 0.5))
    if rng.random() < 0.4:
        # A large, very faint fingerprint-like smudge; softer and fainter than any spot.
        s = min(w, h)
        cx, cy, radius = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.12, 0.25) * s
        smudge = _blob_mask(rng, img, cx, cy, radius, soft=0.5)
        _blend(img, smudge, np.array([90.0, 88.0, 85.0]), rng.uniform(0.04, 0.1))


def _scratches(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    s = min(w, h)
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
        length = rng.uniform(0.3, 0.95) * s
        angle = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        d = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-d[1], d[0]])
        # Quadratic Bezier: a tool slipping across the part bows the line a little.
        t = np.linspace(-0.5, 0.5, 40)[:, None]
        bow = rng.normal(0, 0.06) * length
        pts = np.array([cx, cy]) + t * length * d + (1 - 4 * t**2) * bow * normal
        pts += np.cumsum(rng.normal(0, 0.15, size=pts.shape), axis=0)  # slight hand wobble
        mask, draw = _new_mask(img)
        width = int(rng.integers(2, 5))  # in supersampled pixels: 1 to 2 px
        draw.line(_scaled(pts), fill=255, width=width, joint="curve")
        m = _finish_mask(mask, img, rng.uniform(0.0, 0.4))
        # Fade in/out along the line: real scratches start and end shallow.
        m *= _line_fade(rng, pts, img.shape[:2])
        # Contrast relative to the surface, not a fixed colour: a fixed near-white line would
        # vanish on bright steel. Mostly bright (bare metal catching the light), some dark.
        sign = 1.0 if rng.random() < 0.65 else -1.0
        img += (sign * rng.uniform(25, 85) * m)[..., None]


def _line_fade(rng: np.random.Generator, pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    p0, p1 = pts[0], pts[-1]
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / max(float(d @ d), 1e-9)
    edge = rng.uniform(0.05, 0.25)
    return np.clip(np.minimum(t, 1 - t) / edge, 0.15, 1.0)


def _blob_mask(
    rng: np.random.Generator, img: np.ndarray, cx: float, cy: float, radius: float, soft: float
) -> np.ndarray:
    """Irregular filled blob (radius-jittered polygon) with Gaussian-softened edges."""
    n = 24
    ang = np.sort(rng.uniform(0, 2 * np.pi, size=n))
    # Smooth radial jitter (low harmonics) gives organic outlines rather than stars.
    r = np.ones(n)
    for k in (2, 3, 5):
        r += rng.normal(0, 0.12) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.4, 1.6)
    aspect = rng.uniform(0.7, 1.0)
    pts = np.stack([cx + r * np.cos(ang), cy + aspect * r * np.sin(ang)], axis=1)
    mask, draw = _new_mask(img)
    draw.polygon(_scaled(pts), fill=255)
    return _finish_mask(mask, img, max(radius * soft, 0.5))


def _spots(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    s = min(w, h)
    rust = rng.random() < 0.5
    for _ in range(int(rng.choice([1, 1, 2, 2, 3, 4]))):
        radius = rng.uniform(0.025, 0.1) * s
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        m = _blob_mask(rng, img, cx, cy, radius, soft=rng.uniform(0.12, 0.35))
        if rust:
            colour = np.array([125.0, 65.0, 30.0]) * rng.uniform(0.6, 1.1)
        else:
            colour = np.full(3, rng.uniform(25, 70)) * (1 + rng.normal(0, 0.05, size=3))
        # Darker core than rim (m**0.7 widens the rim, the second pass deepens the core).
        _blend(img, m**0.7, colour, rng.uniform(0.35, 0.75))
        _blend(img, m**2, colour * 0.7, rng.uniform(0.1, 0.4))


def _crack(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    s = min(w, h)
    mask, draw = _new_mask(img)
    start = np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h])
    heading = rng.uniform(0, 2 * np.pi)
    trunk = _jagged_walk(rng, start, heading, rng.uniform(0.25, 0.65) * s, s)
    trunk_width = int(rng.integers(3, 7))  # in supersampled pixels
    draw.line(_scaled(trunk), fill=255, width=trunk_width, joint="curve")
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(1, len(trunk) - 1))
        seg = trunk[min(i + 1, len(trunk) - 1)] - trunk[i - 1]
        branch_heading = np.arctan2(seg[1], seg[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
        branch = _jagged_walk(rng, trunk[i], branch_heading, rng.uniform(0.08, 0.3) * s, s)
        draw.line(_scaled(branch), fill=255, width=max(2, trunk_width - 2), joint="curve")
    m = _finish_mask(mask, img, rng.uniform(0.0, 0.4))
    colour = np.full(3, rng.uniform(10, 45)) * (1 + rng.normal(0, 0.05, size=3))
    _blend(img, m, colour, rng.uniform(0.45, 0.9))


def _jagged_walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, scale: float
) -> np.ndarray:
    """Random walk of short straight steps whose heading wanders but reverts to ``heading``."""
    pts = [start]
    direction = heading
    travelled = 0.0
    while travelled < length:
        step = rng.uniform(0.012, 0.035) * scale
        direction += rng.normal(0, 0.5) + 0.3 * (heading - direction)
        pts.append(pts[-1] + step * np.array([np.cos(direction), np.sin(direction)]))
        travelled += step
    return np.array(pts)
