"""RayBackend: joblib's multiprocessing backend with our `Pool` (actors) instead of processes.

joblib hands it batches of calls (``submit``); they run through
``Pool.apply_async``, and joblib's own callback collects each result.
"""

from __future__ import annotations

from typing import Any

from joblib._parallel_backends import FallbackToBackend, MultiprocessingBackend, SequentialBackend

from ... import cluster_resources, init, is_initialized
from ..multiprocessing import Pool

__all__ = ["RayBackend"]


def _cluster_cpus() -> int:
    if not is_initialized():
        init()
    return max(1, int(cluster_resources().get("CPU", 1)))


class RayBackend(MultiprocessingBackend):
    """The joblib backend "ray" (and "nbcluster"): each joblib worker is an actor of a `Pool`.

    ``ray_remote_args`` (in ``parallel_backend("ray", ray_remote_args=...)``)
    sets the actors' options, e.g. ``{"num_cpus": 2}``.
    """

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.ray_remote_args = ray_remote_args
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **kwargs)

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(_cluster_cpus() + 1 + n_jobs, 1)
        return n_jobs

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **pool_kwargs: Any,
    ) -> int:
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self._pool = Pool(n_jobs, ray_remote_args=ray_remote_args or self.ray_remote_args)
        self.parallel = parallel
        return n_jobs
