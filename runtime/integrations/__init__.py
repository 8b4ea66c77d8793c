"""Libraries that run on Ray, run here: their Ray plug-ins, with ``runtime`` underneath.

- `runtime.integrations.hamilton`: ``GraphAdapter`` and ``TaskExecutor``
  (Hamilton's ``h_ray.RayGraphAdapter`` and ``h_ray.RayTaskExecutor``).

Each submodule imports its library only when it is imported itself.
"""

__all__: list[str] = []
