"""Training: the head on cached features, fine-tuning, checkpoints, the run directory."""

from transferlab._tf import import_tf

import_tf()  # before any module here imports Keras: TensorFlow's start-up chatter is filtered once
