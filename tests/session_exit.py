"""End a pytest process that used Ray right after its session, without interpreter finalisation.

Ray's native threads outlive ``ray.shutdown()``: after one local instance is started and shut down, the process still
holds gRPC event-engine and timer threads, the GCS client's io thread and the core worker's io thread (listed from
``/proc/self/task``). This suite starts and stops more than twenty Ray instances in one process, and when the
interpreter tears itself down one of those threads can call into it: CI printed "169 passed" and the process then died
of a segmentation fault (exit 139), the run counted as failed. Ray knows the hazard (ray-project/ray#31145).

So once pytest has finished and written its report, the process runs the usual ``atexit`` handlers registered after this
module (Ray's own shutdown hook, pytest's temporary-folder cleanup, ...) while the interpreter is whole, flushes its
streams and leaves with ``os._exit`` and pytest's own exit status (0, 1 for failed tests, 5 for none collected, ...).
A process that never imported Ray exits the ordinary way. ``tests/test_session_exit.py`` checks both paths.
"""
import atexit
import logging
import os
import sys

_session = None


def pytest_sessionfinish(session, exitstatus):
    global _session
    _session = session


def _exit_without_finalisation() -> None:
    if _session is None or "ray" not in sys.modules:  # no session ran, or Ray never loaded: the ordinary exit
        return
    code = int(_session.exitstatus)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


# registered at import, so it runs after every atexit handler registered later (LIFO) and before finalisation
atexit.register(_exit_without_finalisation)
