"""A run's report.html with its Grad-CAM gallery: the model work the HTML writer does not do.

:func:`~transferlab.evaluation.report.write_report` only turns a run's files into HTML. Here the
gallery's overlays are computed first (from a Keras model: Grad-CAM needs its gradients), then
handed to it. Training, ``transferlab evaluate`` and ``transferlab report`` all come through here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from transferlab import rundir
from transferlab.evaluation.html import THUMB
from transferlab.evaluation.report import _read_csv, mistakes_to_show, write_report

logger = logging.getLogger("transferlab")


def gallery_overlays(clf, rows: list[dict]) -> tuple[dict[str, np.ndarray], str]:
    """Grad-CAM overlays (uint8 (160, 160, 3)) of the predicted class for each row's image, by path.

    Args:
        clf: a :class:`~transferlab.inference.Predictor` on a Keras runtime.
        rows: ``predictions.csv`` rows (``path``, ``predicted``).

    Returns:
        ``(overlays, note)``; the note says why there are none when Grad-CAM could not run.
        Grad-CAM never fails the report.
    """
    from PIL import Image

    from transferlab.evaluation.gradcam import gradcam, overlay

    if clf.runtime.name != "keras":
        return {}, (f"No Grad-CAM overlays: this evaluation ran on a {clf.runtime.name.upper()} model; Grad-CAM "
                    "needs the Keras model (evaluate the run directory instead).")
    try:
        images, keep = [], []
        for row in rows:
            try:
                images.append(clf.resize.load(row["path"]))
                keep.append(row)
            except Exception:  # noqa: BLE001 - moved or broken since: shown without an overlay
                continue
        if not keep:
            return {}, ""
        targets = [clf.class_names.index(row["predicted"]) for row in keep]
        maps = None
        if clf.feature_map_cache is not None:  # frozen backbone: maps of earlier runs are reused
            keys = [hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() for row in keep]
            maps = clf.feature_map_cache.maps(clf, np.stack(images), keys)
        cams = gradcam(clf, np.stack(images), class_index=targets, maps=maps)
    except Exception as exc:  # noqa: BLE001 - the report must not fail because of Grad-CAM
        logger.warning("no Grad-CAM in the report: %s", exc)
        return {}, f"No Grad-CAM overlays: {exc}"
    out = {}
    for row, image, cam in zip(keep, images, cams):
        big = np.asarray(Image.fromarray(image).resize((THUMB, THUMB), Image.BICUBIC))
        out[row["path"]] = overlay(big, cam)
    return out, ""


def write_run_report(run_dir: str | os.PathLike, clf=None, *, max_gallery: int = 48, gradcam: bool = True,
                     figures=None, out: str | os.PathLike | None = None, safe_mode: bool = True) -> Path:
    """Write ``report.html`` for a run (or an evaluation folder), Grad-CAM overlays included.

    Args:
        run_dir: the run directory or evaluation output folder.
        clf: the model whose mistakes are explained; default: the run's ``model.keras``.
        max_gallery: at most this many misclassified images.
        gradcam: False for a gallery without overlays.
        figures: pictures still being drawn (waited for before the page is assembled).
        out: the output file (default ``run_dir/report.html``).
        safe_mode: Keras safe mode when the run's model has to be loaded.

    Returns:
        The path of the written report.
    """
    run = Path(run_dir)
    overlays, note = {}, ""
    if gradcam and max_gallery > 0:
        shown, _ = mistakes_to_show(_read_csv(run / rundir.PREDICTIONS_FILE), max_gallery)
        if shown:
            if clf is None:
                try:
                    from transferlab.inference import load

                    clf = load(run, safe_mode=safe_mode)
                except Exception as exc:  # noqa: BLE001 - the report is still useful without overlays
                    note = f"No Grad-CAM overlays: {exc}"
            if clf is not None:
                overlays, note = gallery_overlays(clf, shown)
    return write_report(run, max_gallery=max_gallery, overlays=overlays, overlay_note=note, out=out, figures=figures)


def write_report_safely(run_dir: str | os.PathLike, clf, *, max_gallery: int = 48, figures=None) -> Path | None:
    """:func:`write_run_report` for the end of ``train``/``evaluate``: report.html is a convenience, so a
    problem writing it is logged and never fails the run; the run's figures are on disk either way."""
    try:
        path = write_run_report(run_dir, clf, max_gallery=max_gallery, figures=figures)
        logger.info("Report: %s", path)
        return path
    except Exception as exc:  # noqa: BLE001
        logger.warning("report.html not written: %s: %s", type(exc).__name__, exc)
        return None
    finally:
        if figures is not None:
            figures.wait()
