"""Keeping the API workers' shares of the connections even.

BentoML's workers all accept from one listening socket, and uvloop accepts every connection waiting when it
wakes: a client that opens its keep-alive connections at once (wrk, a connection pool) can land them all on one
worker, which then does all the work while the other idles (one worker took every connection in 2 of 12 runs
measured for issue 16; docs/peers.json records each worker's share in every run). Nothing moves a connection
once it is accepted, so a worker holding more than its share closes some, politely: its answer to the next
request on such a connection says ``Connection: close``, and the client reconnects, most likely to a worker
that is waiting in accept rather than busy.

Each worker publishes its number of open connections in one slot of a small shared file (in the folder
BentoML gives the workers of one ``bentoml serve`` for their Prometheus files); a worker is over its share when
it holds more than ``ceil(total / workers) + 1``, so 8 connections split no worse than 5 / 3 and 32 no worse than
17 / 15, and one connection is never moved.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import struct
import sys
import time

_SLOT = struct.Struct("q")
CLOSE_EVERY_S = 0.01  # 32 connections on one worker are even in 16 closes, about 0.2 s


class Balance:
    """This worker's slot in the table of open connections per worker; inert with one worker or no table."""

    def __init__(self) -> None:
        self.workers = 1
        self.index = 0
        self._table: mmap.mmap | None = None
        self._closed = 0.0  # when over_share last said yes

    def attach(self, path: str, index: int, workers: int) -> None:
        """Map the table at ``path`` (created if need be) and take slot ``index`` of ``workers``."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SLOT.size * workers:
                os.ftruncate(fd, _SLOT.size * workers)
            self._table = mmap.mmap(fd, _SLOT.size * workers)
        finally:
            os.close(fd)
        self.workers, self.index = workers, index
        self.publish(0)

    def publish(self, connections: int) -> None:
        if self._table is not None:
            _SLOT.pack_into(self._table, _SLOT.size * self.index, connections)

    def total(self) -> int:
        if self._table is None:
            return 0
        return sum(_SLOT.unpack_from(self._table, _SLOT.size * i)[0] for i in range(self.workers))

    def over_share(self, connections: int) -> bool:
        """Whether this worker, holding ``connections``, should let one of them go: at most one every
        CLOSE_EVERY_S, so that a worker left alone while another is stalled does not close a connection per
        request (its clients would only reconnect to it)."""
        if self._table is None or self.workers < 2:
            return False
        now = time.monotonic()
        if now - self._closed < CLOSE_EVERY_S or connections <= math.ceil(self.total() / self.workers) + 1:
            return False
        self._closed = now
        return True


BALANCE = Balance()


def worker_slot(service: str, workers: int) -> tuple[str, int] | None:
    """In a worker of the BentoML service ``service`` (``--service-name`` and ``--worker-id`` in its command line,
    PROMETHEUS_MULTIPROC_DIR in its environment): (the folder the workers of this ``bentoml serve`` share, this
    worker's index from 0); elsewhere (the serving process, a model service's workers, tests) None."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    argv = sys.argv
    if folder is None or "--worker-id" not in argv[:-1] or "--service-name" not in argv[:-1]:
        return None
    if argv[argv.index("--service-name") + 1] != service:
        return None
    with contextlib.suppress(ValueError):
        worker = int(argv[argv.index("--worker-id") + 1])  # 1-based
        if 1 <= worker <= workers:
            return folder, worker - 1
    return None


def attach_worker(service: str, workers: int) -> None:
    """In an API worker of several, take its slot of the table; elsewhere do nothing."""
    slot = worker_slot(service, workers)
    if workers < 2 or slot is None:
        return
    with contextlib.suppress(OSError):
        BALANCE.attach(os.path.join(slot[0], "nnserve-connections.bin"), slot[1], workers)
