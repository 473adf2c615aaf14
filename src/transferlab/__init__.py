"""transferlab: turn a folder of labeled images into a deployable image classifier.

The one-call path::

    import transferlab
    clf = transferlab.train("photos/")            # folder of class subfolders
    clf.predict(["new.jpg"])

and the parts under it, one module per stage: :mod:`transferlab.data` (find, check, split,
stream), :mod:`transferlab.backbones` (pretrained networks), :mod:`transferlab.features`
(bottleneck cache), :mod:`transferlab.training`, :mod:`transferlab.evaluation`,
:mod:`transferlab.export` and :mod:`transferlab.inference`; :mod:`transferlab.audit` checks a
dataset; :mod:`transferlab.api` runs them in order, and :mod:`transferlab.cli` is a thin layer over it.

Attributes are imported lazily so that ``import transferlab`` stays fast and does not import
TensorFlow (ONNX/TFLite prediction works without it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# TensorFlow's C++ start-up chatter (CPU flags, oneDNN notes) hides our own messages; users can
# still turn it back on by setting the variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# public name -> module that defines it
from transferlab._lazy import lazy_attributes

_LAZY = {
    "inspect": "transferlab.data.dataset:inspect_dataset",
    "list_runs": "transferlab.rundir:list_runs",
    "load_dataset": "transferlab.data.dataset:load_dataset",
    "ImageDataset": "transferlab.data.dataset:ImageDataset",
    "DatasetError": "transferlab.data.sources:DatasetError",
    "make_sample_dataset": "transferlab.data.sample:make_sample_dataset",
    "ResizeConfig": "transferlab.data.decode:ResizeConfig",
    "AugmentConfig": "transferlab.data.pipeline:AugmentConfig",
    "list_backbones": "transferlab.backbones:list_backbones",
    "load_backbone": "transferlab.backbones:load_backbone",
    "get_backbone_info": "transferlab.backbones:get_backbone_info",
    "train": "transferlab.api:train",
    "extract": "transferlab.api:extract",
    "compare": "transferlab.api:compare",
    "load": "transferlab.api:load",
    "resume": "transferlab.api:resume",
    "TrainingInterrupted": "transferlab.errors:TrainingInterrupted",
    "evaluate": "transferlab.api:evaluate",
    "predict": "transferlab.api:predict",
    "Classifier": "transferlab.api:Classifier",
    "Predictor": "transferlab.inference:Predictor",
    "TransferlabError": "transferlab.errors:TransferlabError",
    "TrainConfig": "transferlab.training.config:TrainConfig",
    "audit": "transferlab.audit:",  # a package that is also callable: transferlab.audit("photos/")
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from transferlab.data.dataset import ImageDataset, load_dataset  # noqa: F401


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
