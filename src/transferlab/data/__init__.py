"""Data stage: find labeled files, check every one, split them stably, stream them."""

from transferlab.data.dataset import BadFile, ImageDataset, ImageRecord, inspect_dataset, load_dataset
from transferlab.data.decode import ImageDecodeError, decode_image, load_image
from transferlab.data.sources import DatasetError
from transferlab.data.split import assign_split

__all__ = [
    "BadFile", "DatasetError", "ImageDataset", "ImageDecodeError", "ImageRecord", "assign_split",
    "decode_image", "inspect_dataset", "load_dataset", "load_image",
]
