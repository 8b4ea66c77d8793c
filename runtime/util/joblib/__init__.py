"""joblib on the cluster (Ray's ``ray.util.joblib``): ``register_ray()``, then the backend "ray".

Example::

    >>> import joblib
    >>> from runtime.util.joblib import register_ray
    >>> register_ray()
    >>> with joblib.parallel_backend("ray"):
    ...     joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(3))
    [0, 1, 2]
"""

from __future__ import annotations

__all__ = ["register_ray"]


def register_ray() -> None:
    """Register the joblib backends "ray" and "nbcluster" (the same one: a Pool of actors).

    scikit-learn's ``n_jobs=-1`` then runs on every CPU of the cluster inside
    ``with joblib.parallel_backend("ray"):``.
    """
    try:
        from joblib.parallel import register_parallel_backend
    except ImportError as e:
        raise ImportError(
            "runtime.util.joblib needs joblib: pip install joblib (scikit-learn brings it)"
        ) from e
    from .backend import RayBackend

    register_parallel_backend("ray", RayBackend)
    register_parallel_backend("nbcluster", RayBackend)
