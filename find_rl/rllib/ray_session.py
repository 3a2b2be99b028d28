"""The one place every command starts or attaches to Ray: ``with ray_session(resources, actors=n): ...``.

- Ray already initialised in this process (a comparison running several methods, a test's own instance): use it,
  leave it running.
- ``--address`` / ``$RAY_ADDRESS``: check that it answers (a one-line error instead of ``ray.init`` retrying for
  minutes), attach, and detach at the end.
- Otherwise a private local Ray with enough logical CPUs that every requested actor starts (a pending env runner
  would sit idle; the physical cores still bound the work), optionally with the dashboard on 127.0.0.1; it is shut
  down by its own handle at the end (never ``ray stop``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from urllib.parse import urlparse

from find_rl.core.settings import ResourceSettings


def cluster_address(resources: ResourceSettings) -> str | None:
    return resources.address or os.environ.get("RAY_ADDRESS") or None


def check_address(address: str, timeout: float = 5.0) -> None:
    """A one-line error, fast, for a Ray address that does not answer."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or not port:
        raise ValueError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379), 'auto' or ray://HOST:PORT")
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"Ray cluster at {address} does not answer ({e.strerror or e}); start it (ray start --head) or fix "
                         "--address / $RAY_ADDRESS") from None


@contextlib.contextmanager
def ray_session(resources: ResourceSettings | None = None, *, actors: int = 0):
    """Ray for the duration of the block (see the module docstring). ``actors``: one-CPU actors the work will start."""
    import ray

    resources = resources or ResourceSettings()
    if ray.is_initialized():
        yield
        return
    address = cluster_address(resources)
    if address:
        check_address(address)
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, actors + 1), include_dashboard=resources.dashboard,
                 dashboard_host="127.0.0.1", dashboard_port=resources.dashboard_port, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
