"""The gRPC port's guard, in the serving process (``bentoml serve``) before its workers start: every API worker
binds the port with SO_REUSEPORT (service/oip_grpc.py), so a second server on the same port would silently share
its connections. ``check_port`` refuses to start when another nnserve holds the port's lock or another process
listens there. ``http_host``, in each API worker: the HTTP listener's address, where its gRPC server listens by
default."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sys
from typing import Any

from service.settings import Settings

log = logging.getLogger("bentoml.nnserve")

_PORT_LOCKS: list[Any] = []  # held for the serving process's lifetime


def http_port(argv: list[str], default: int = 3000) -> int | None:
    """The port ``bentoml serve`` listens on for HTTP: its --port (or -p, or -p joined to the value as click
    takes it: -p8100) option, else BENTOML_PORT, else 3000."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--port=") else arg[2:] if arg.startswith("-p") else None
        value = value or None  # a -p with nothing after it: as a --port without a value, not given
        if arg in ("--port", "-p") and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            return int(value) if value.isdigit() else None
    env = os.environ.get("BENTOML_PORT", "")
    return int(env) if env.isdigit() else default


def reserve_port(port: int) -> None:
    """Take this host's lock of gRPC port ``port`` for the process's lifetime (a file in the temporary folder,
    flock'd), or exit naming the port: two servers that both probed the port before either bound it (started at
    the same moment) would otherwise both bind it with SO_REUSEPORT and share its connections."""
    import fcntl
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"nnserve-grpc-{port}.lock")
    try:  # another user's file is read-only to this one, and flock works on a read-only descriptor
        f = open(path, "a") if not os.path.exists(path) or os.access(path, os.W_OK) else open(path)  # noqa: SIM115
    except OSError as e:  # no lock to be had (an unwritable temporary folder): the bind probe alone decides
        log.warning("no lock of the gRPC port %d (%s): two servers started at once could share it", port, e)
        return
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise SystemExit(
            f"nnserve: the gRPC port {port} is held by another nnserve on this host (its lock {path}); set "
            "NNSERVE_GRPC_PORT to a free port, or 0 to serve no gRPC"
        ) from None
    _PORT_LOCKS.append(f)


def check_port(settings: Settings) -> None:
    """In the serving process (``bentoml serve``, before its workers start): refuse to start when another
    nnserve holds the gRPC port's lock (``reserve_port``) or another process listens on it, since every worker
    binds it with SO_REUSEPORT and would share it."""
    if settings.grpc_port == 0 or sys.argv[1:2] != ["serve"]:
        return
    if settings.grpc_port == http_port(sys.argv):  # not listening yet: the probe below would not see it
        raise SystemExit(
            f"nnserve: NNSERVE_GRPC_PORT {settings.grpc_port} is the HTTP port (bentoml serve --port); choose "
            "another, or 0 to serve no gRPC"
        )
    reserve_port(settings.grpc_port)
    probe = socket.socket(socket.AF_INET6 if ":" in (settings.grpc_host or "") else socket.AF_INET)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT left by a restart is no conflict
    with probe:
        try:
            probe.bind(("" if settings.grpc_host is None else settings.grpc_host.strip("[]"), settings.grpc_port))
        except OSError as e:
            if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:  # no such name; another's address
                raise SystemExit(
                    f"nnserve: NNSERVE_GRPC_HOST {settings.grpc_host!r} is not an address of this machine "
                    f"({e.strerror})"
                ) from None
            raise SystemExit(
                f"nnserve: the gRPC port {settings.grpc_port} is taken ({e.strerror}); set NNSERVE_GRPC_PORT to a "
                "free port, or 0 to serve no gRPC"
            ) from None


def http_host() -> str:
    """The address of the HTTP listener this worker was handed (``--fd``), else loopback: where an API worker's gRPC
    server listens unless NNSERVE_GRPC_HOST says otherwise (service/oip_grpc.py)."""
    argv = sys.argv
    with contextlib.suppress(ValueError, OSError, IndexError):
        fd = os.dup(int(argv[argv.index("--fd") + 1]))
        with socket.socket(fileno=fd) as sock:
            host = sock.getsockname()[0]
            return f"[{host}]" if ":" in host else host
    return "127.0.0.1"
