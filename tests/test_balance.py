"""service/balance.py: workers share one table of open connections; a worker over ceil(total / workers) + 1 lets
one go, a fair split or a single connection never moves, and only the named service's API workers take a slot."""

from __future__ import annotations

import sys

from service.balance import Balance, attach_worker


def _tcp(proc):
    """A process's TCP connections (psutil 6 renamed connections to net_connections; kserve, in the dev extras,
    keeps psutil below 6)."""
    return (getattr(proc, "net_connections", None) or proc.connections)("tcp")


def test_a_worker_over_its_share_lets_connections_go(tmp_path, monkeypatch):
    monkeypatch.setattr("service.balance.CLOSE_EVERY_S", 0.0)
    table = str(tmp_path / "conns.bin")
    a, b = Balance(), Balance()
    a.attach(table, 0, 2)
    b.attach(table, 1, 2)
    a.publish(32)
    assert a.total() == b.total() == 32
    assert a.over_share(32) and not b.over_share(0)  # 32 / 0: the first must shed
    a.publish(17), b.publish(15)
    assert not a.over_share(17) and not b.over_share(15)  # within one of the even share
    a.publish(6), b.publish(2)
    assert a.over_share(6) and not b.over_share(2)  # 8 connections: 6 is over ceil(8 / 2) + 1 = 5
    a.publish(1), b.publish(0)
    assert not a.over_share(1)  # one connection never moves


def test_inert_without_a_table_or_a_second_worker(tmp_path):
    assert not Balance().over_share(10_000)
    one = Balance()
    one.attach(str(tmp_path / "one.bin"), 0, 1)
    one.publish(100)
    assert not one.over_share(100)


def test_only_the_api_service_workers_attach(tmp_path, monkeypatch):
    import service.balance as balance

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    fresh = Balance()
    monkeypatch.setattr(balance, "BALANCE", fresh)
    model_worker = ["worker", "--service-name", "nnserve-image-models", "--worker-id", "1"]
    monkeypatch.setattr(sys, "argv", model_worker)
    attach_worker("nnserve", 2)
    assert fresh.total() == 0 and not (tmp_path / "nnserve-connections.bin").exists()
    monkeypatch.setattr(sys, "argv", ["worker", "--service-name", "nnserve", "--worker-id", "2"])
    attach_worker("nnserve", 2)
    fresh.publish(7)
    assert fresh.index == 1 and fresh.total() == 7 and (tmp_path / "nnserve-connections.bin").exists()


def test_connections_landed_on_one_worker_spread_out(artifact_root, tmp_path):
    """Worker 2 is stopped while 16 keep-alive connections open, so worker 1 accepts them all; once it runs
    again, worker 1's answers close connections until the clients' reconnections even the split."""
    import base64
    import concurrent.futures as cf
    import json
    import socket
    import time

    import numpy as np
    import psutil

    from tests.conftest import png_bytes
    from tests.raw_http import answer, head
    from tests.server import Server

    srv = Server(artifact_root, tmp_path / "serve.log", NNSERVE_API_WORKERS="2").start()
    try:
        workers = [p for p in psutil.Process(srv.proc.pid).children(recursive=True) if "--worker-id" in p.cmdline()]
        assert len(workers) == 2
        digit = base64.b64encode(png_bytes(np.zeros((28, 28), np.uint8))).decode()
        body = json.dumps({"model": "digits-cnn", "images": [digit]}).encode()
        request = head("/v1/classify", len(body)) + body

        def ask(sock: socket.socket) -> bool:
            """One request; -> whether the server keeps the connection."""
            sock.sendall(request)
            status, headers, body_ = answer(sock)
            assert status == 200, body_
            return headers.get("connection", "").lower() != "close"

        def connect() -> socket.socket:
            return socket.create_connection(("127.0.0.1", srv.port), timeout=30)

        def round_of_requests(socks: list[socket.socket], seconds: float = 0.0) -> None:
            """Each connection in its own thread, asking again and again for ``seconds`` (at least once); one
            told to go is replaced by a new one, as a client's pool does."""

            def client(i: int) -> None:
                end = time.monotonic() + seconds
                while True:
                    if not ask(socks[i]):
                        socks[i].close()
                        socks[i] = connect()
                    if time.monotonic() >= end:
                        return

            with cf.ThreadPoolExecutor(len(socks)) as pool:
                list(pool.map(client, range(len(socks))))

        workers[1].suspend()
        try:
            socks = [connect() for _ in range(16)]
            round_of_requests(socks)  # worker 1 answers every one: worker 2 is stopped
            per_worker = [len(_tcp(w)) for w in workers]
            assert per_worker[0] >= 16, per_worker  # the split the test starts from (and its listening socket)
        finally:
            workers[1].resume()
        round_of_requests(socks, seconds=3.0)  # under load: a busy worker's closed connections go to the other
        per_worker = [len(_tcp(w)) for w in workers]
        assert min(per_worker) >= 6, per_worker  # 16 connections, no worse than 9 / 7 but for one in flight
        for s in socks:
            s.close()
    finally:
        srv.stop()
