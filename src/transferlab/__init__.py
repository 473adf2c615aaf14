"""transferlab: turn a folder of labeled images into a deployable image classifier."""

__version__ = "0.1.0"
