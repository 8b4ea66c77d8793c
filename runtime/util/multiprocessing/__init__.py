"""``multiprocessing.Pool`` on the cluster (Ray's ``ray.util.multiprocessing``).

Example::

    >>> from runtime.util.multiprocessing import Pool
    >>> with Pool() as p:
    ...     p.map(abs, [-1, -2, 3])
    [1, 2, 3]
"""

from multiprocessing import TimeoutError

from .pool import AsyncResult, IMapIterator, Pool

__all__ = ["AsyncResult", "IMapIterator", "Pool", "TimeoutError"]
