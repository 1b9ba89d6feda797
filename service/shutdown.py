"""Graceful shutdown: SIGTERM -> keep serving for a while, then uvicorn's own shutdown.

Each BentoML worker runs uvicorn, whose SIGTERM handler stops accepting at once, lets the requests in flight
finish and exits. ``delay_sigterm`` puts a pause in front of it: the caller learns of the signal at once
(the API service turns not ready, so a load balancer stops sending traffic) while the worker keeps serving
for ``delay_s`` seconds; then uvicorn's handler runs.

A SIGTERM during the pause changes nothing (``bentoml serve`` forwards the signal to its workers, and a
process-group kill delivers it twice); SIGINT still stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger("bentoml.nnserve")


def delay_sigterm(delay_s: float, what: str, on_signal: Callable[[], None] = lambda: None) -> None:
    """Install the pause in this worker (call from the service's ``__init__``, which BentoML runs in the
    worker's event loop on its main thread; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # constructed outside a server (a script or a test)
        return
    uvicorn_handler = signal.getsignal(signal.SIGTERM)
    if not callable(uvicorn_handler):
        return
    signalled = False

    def close(sig: int) -> None:
        log.info("SIGTERM: %s closing the listener now; requests in flight will finish", what)
        uvicorn_handler(sig, None)

    def pause(sig: int) -> None:
        log.info("SIGTERM: %s serving for %g s more before closing", what, delay_s)
        loop.call_later(delay_s, close, sig)

    def on_sigterm(sig: int, frame: object) -> None:  # runs between bytecodes: only flag and schedule
        nonlocal signalled
        if not signalled:
            signalled = True
            on_signal()
            loop.call_soon_threadsafe(pause, sig)

    signal.signal(signal.SIGTERM, on_sigterm)
