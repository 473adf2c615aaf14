"""Scale-out: the work that grows with the data (phase 1, bottleneck features) on a Ray cluster.

    from transferlab.distributed import fill_cache_ray
    result = fill_cache_ray(paths, keys, backbone, resize, cache, address="auto")

Ray is an optional extra (``pip install "transferlab[ray]"``) and is imported only when a
function here runs. Training the head and fine-tuning stay on one machine (docs/scaling.md).
"""

from transferlab.distributed.ray_extract import (
    RAY_REQUIREMENT,
    SharedCacheError,
    WorkerPlan,
    fill_cache_ray,
    import_ray,
    plan_workers,
    ray_session,
)

__all__ = ["RAY_REQUIREMENT", "SharedCacheError", "WorkerPlan", "fill_cache_ray", "import_ray", "plan_workers",
           "ray_session"]
