"""LitServe: a ``LitAPI`` on nnserve's typed route, two inference workers on the CPU (``workers_per_device=2``)
and LitServe's default of as many API server processes as inference workers. Log level warning: at LitServe's
default (info) uvicorn logs a line per request, which nnserve does not.

    python bench/peers/peer_litserve.py 3913   (in .peers/litserve)
"""

from __future__ import annotations

import sys
from typing import Any

import litserve as ls
from peer_mnist import NAME, Digits


class DigitsAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.digits = Digits()

    def decode_request(self, request):  # type: ignore[no-untyped-def]  (LitServe reads this signature)
        """The JSON body; left unannotated so that LitServe parses it as JSON."""
        return request["images"], int(request.get("top_k", 3))

    def predict(self, x: tuple[list[str], int]) -> list[dict[str, Any]]:
        return self.digits.classify(*x)

    def encode_response(self, output: list[dict[str, Any]]) -> dict[str, Any]:
        return {"model": NAME, "predictions": output}


if __name__ == "__main__":
    server = ls.LitServer(DigitsAPI(api_path="/v1/classify"), accelerator="cpu", workers_per_device=2)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", generate_client_file=False)
