"""Training stages: the head on cached features, fine-tuning, checkpoints, the run's settings.

The whole run (data -> features -> head -> fine-tune -> evaluation -> run directory) is
orchestrated by :func:`transferlab.api.train`; each stage here is callable alone.
Importing this package does not import TensorFlow; its Keras modules do.
"""
