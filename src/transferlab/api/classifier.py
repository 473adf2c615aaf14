"""``transferlab.Classifier``: a trained model that predicts, evaluates, explains, reports and exports.

It is a :class:`~transferlab.inference.Predictor` (prediction on any runtime, no TensorFlow for
ONNX/TFLite) with the rest of the pipeline as methods, so a notebook needs no shell. Each method
calls the stage that does the work; nothing is imported before it is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from transferlab import rundir
from transferlab.errors import ConfigError
from transferlab.inference import Predictor
from transferlab.inference import load as _load_predictor

__all__ = ["Classifier", "load"]


class Classifier(Predictor):
    """A trained image classifier (see :class:`~transferlab.inference.Predictor` for prediction).

    Attributes:
        class_names: labels in output order (also ``classes_``, as in scikit-learn).
        resize: how images are resized before the model (the training setting).
        run_dir: the run directory it came from, if any.
        metadata: the run's ``config.json`` contents (plus ``metrics`` after training).
    """

    @property
    def classes_(self) -> list[str]:
        return self.class_names

    @property
    def model_path(self) -> Path | None:
        """The run's ``model.keras``, when the classifier comes from a run directory."""
        return rundir.RunDir(self.run_dir).model if self.run_dir else None

    def evaluate(self, data, *, batch_size: int = 32, split: str | None = None, show_progress: bool = True,
                 out_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> dict:
        """Metrics on labeled data; see :func:`transferlab.evaluation.evaluate.evaluate_predictor`.

        By default the images this model was trained on are left out (``report["seen_in_training"]``
        says how many); ``split="all"`` keeps them, ``split="train"|"val"|"test"`` takes that split
        of ``data``.
        """
        from transferlab.evaluation.evaluate import evaluate_predictor

        return evaluate_predictor(self, data, batch_size=batch_size, split=split, show_progress=show_progress,
                                  out_dir=out_dir, cache_dir=cache_dir)

    def report(self, *, max_gallery: int = 48, gradcam: bool = True) -> Path:
        """(Re)write the run's report.html and return its path."""
        from transferlab.evaluation.reporting import write_run_report

        if self.run_dir is None:
            raise ConfigError("This classifier has no run directory to report on; use evaluate(data, out_dir=...).")
        return write_run_report(self.run_dir, self, max_gallery=max_gallery, gradcam=gradcam)

    def explain(self, images, out_dir: str | os.PathLike = "gradcam", *, class_name: str | None = None) -> list[Path]:
        """Grad-CAM overlays of ``images`` written as PNG files into ``out_dir``; returns their paths."""
        from transferlab.evaluation.gradcam import explain

        return explain(self, images, out_dir, class_name=class_name)

    def export(self, formats: str = "all", **kwargs) -> dict:
        """Export the run (SavedModel, ONNX, TFLite, int8); see :func:`transferlab.export.export_run`."""
        from transferlab.export.exporter import export_run

        if self.run_dir is None or not rundir.RunDir(self.run_dir).is_run():
            raise ConfigError("Only a run directory can be exported; this classifier was loaded from a model file.")
        return export_run(self.run_dir, formats, **kwargs)


def load(path: str | os.PathLike, *, safe_mode: bool = True) -> Classifier:
    """Load a :class:`Classifier` from a run directory, export folder or model file (any format).

    See :func:`transferlab.inference.load` for where class names and the resize come from.
    ``safe_mode`` (Keras files only) stays on unless you trust the file.
    """
    return _load_predictor(path, safe_mode=safe_mode, cls=Classifier)
