"""``transferlab.extract``: fill the feature cache for a dataset, in this process or on a Ray cluster.

    result = transferlab.extract("photos/")                        # in this process
    result = transferlab.extract("photos/", ray="auto")            # on a Ray cluster (transferlab[ray])
    clf = transferlab.train("photos/")                             # then finds every feature cached

The cache entries are the ones ``train`` reads (same backbone and resize settings), so
extracting first, on many machines, makes the training run's phase 1 a pass of cache hits.
"""

from __future__ import annotations

import os

from transferlab.data.dataset import ImageDataset, load_dataset
from transferlab.data.decode import ResizeConfig
from transferlab.features import FillResult, feature_cache_for, fill_cache
from transferlab.training.config import TrainConfig


def fill_dataset_cache(dataset: ImageDataset, backbone, info, resize: ResizeConfig, *,
                       cache_dir: str | os.PathLike | None = None, engine: str = "auto", ray: str | None = None,
                       actors: int | None = None, actor_cpus: float | None = None,
                       show_progress: bool = True) -> FillResult:
    """Make the feature cache hold every image of ``dataset`` (all splits) for this backbone setting.

    Args:
        dataset: a loaded dataset.
        backbone: the Keras backbone, raw pixels (N, S, S, 3) -> (N, D).
        info: its :class:`~transferlab.backbones.BackboneInfo` (part of the cache fingerprint).
        resize: how images are resized (part of the cache fingerprint).
        cache_dir: the cache's root (default: user cache dir or ``$TRANSFERLAB_CACHE_DIR``); with
            ``ray``, a path every node mounts.
        engine: "auto", "onnx" or "keras" (not with ``ray``).
        ray: None (this process), or the Ray cluster: "auto", "local" or an address.
        actors, actor_cpus: Ray only, see :func:`transferlab.distributed.fill_cache_ray`.

    Returns:
        A :class:`~transferlab.features.FillResult`.
    """
    cache = feature_cache_for(info, resize, cache_dir)
    paths, keys = [r.path for r in dataset.records], [r.sha256 for r in dataset.records]
    if ray:
        from transferlab.distributed import fill_cache_ray

        return fill_cache_ray(paths, keys, backbone, resize, cache, address=ray, engine=engine, actors=actors,
                              actor_cpus=actor_cpus, show_progress=show_progress)
    return fill_cache(paths, keys, backbone, resize, cache, engine=engine, show_progress=show_progress)


def extract(data: str | os.PathLike, config: TrainConfig | None = None, *, ray: str | None = None,
            actors: int | None = None, actor_cpus: float | None = None, show_progress: bool = True,
            **settings) -> FillResult:
    """Fill the feature cache with the features ``train`` would compute for ``data``.

    Args:
        data: folder of class subfolders, pre-split folder, or CSV of path,label.
        config: a :class:`~transferlab.TrainConfig`; its backbone, input, ``engine`` and
            ``cache_dir`` settings apply (``settings`` override fields, e.g. ``backbone=...``).
        ray: None for this process (default: ``config.ray``), or "auto", "local" or a Ray address.
        actors, actor_cpus: Ray only, see :func:`transferlab.distributed.fill_cache_ray`.

    Returns:
        A :class:`~transferlab.features.FillResult`: hits, misses, failures, throughput.

    Raises:
        MissingDependencyError: ``ray`` given without the ``transferlab[ray]`` extra.
    """
    from transferlab.api.choices import build_backbone, run_resize

    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    ray = ray if ray is not None else config.ray
    if ray:
        from transferlab.distributed import import_ray

        import_ray()  # before scanning a million files
        if config.engine == "keras":
            config.replace(ray=ray)  # raises the ConfigError that explains the conflict
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    backbone, info = build_backbone(config)  # as train builds it, so train finds these features
    resize = run_resize(config, info)
    return fill_dataset_cache(dataset, backbone, info, resize, cache_dir=config.cache_dir, engine=config.engine,
                              ray=ray, actors=actors, actor_cpus=actor_cpus, show_progress=show_progress)
