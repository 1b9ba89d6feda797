"""Each peer's own virtual environment, .peers/<peer>/ (git-ignored), with pinned versions.

A venv is (re)built, ``python3 -m venv --clear`` and one ``pip install`` of its pins, only when the marker file
it got from its last install (.peers/<peer>/.pins.json) records other pins or another interpreter, so re-runs
start at once. No peer needs torch: a constraint file forbids torch and torchvision, so a peer whose
dependencies would pull either in fails to install (and says so) instead of downloading it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.common import REPO

PEERS = REPO / ".peers"

# the same runtime as the repo's .venv, in every peer
_RUNTIME = ["onnxruntime==1.32.0", "pillow==13.0.0"]
# peer -> everything its venv gets, pinned (the versions that install and run on this machine, Python 3.11)
PINS: dict[str, list[str]] = {
    "fastapi": ["fastapi==0.165.0", "uvicorn[standard]==0.54.0", "numpy==2.4.6", *_RUNTIME],
    "bentoml-docs": ["bentoml==1.4.40", "numpy==2.4.6", *_RUNTIME],
    "kserve": ["kserve==0.21.0", "numpy==2.4.6", *_RUNTIME],
    "litserve": ["litserve==0.2.19", "numpy==2.4.6", *_RUNTIME],
    # uvloop 0.22 made get_event_loop() raise outside a running loop; MLServer 1.7.1's parallel workers call
    # it at start and die, so its venv keeps the last uvloop before that
    "mlserver": ["mlserver==1.7.1", "uvloop==0.21.0", "numpy==2.4.6", *_RUNTIME],
    # nvidia-pytriton 0.7.0 requires numpy < 2
    "pytriton": ["nvidia-pytriton==0.7.0", "numpy==1.26.4", *_RUNTIME],
}
NO_TORCH = "torch<0\ntorchvision<0\n"
INSTALL_TIMEOUT_S = 1800


class PeerError(RuntimeError):
    """A peer that could not be installed or started; the message is the short reason the table prints."""


def python(peer: str) -> Path:
    return PEERS / peer / "bin" / "python"


def _wanted(peer: str, base: str) -> dict[str, object]:
    version = subprocess.run([base, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True)
    return {"pins": PINS[peer], "python": version.stdout.strip()}


def short_error(text: str, limit: int = 160) -> str:
    """The line of pip's (or a server's) output that says what went wrong, shortened for a table cell: pip's
    first ERROR line, else the last line that names an error or exception (a traceback's last word)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Location 'file:" not in ln]
    pip_errors = [ln for ln in lines if ln.startswith("ERROR") and not ln.startswith("ERROR: Ignored the following")]
    errors = [ln for ln in lines if re.search(r"error|exception|exited|refused|timeout", ln, re.I)]
    line = pip_errors[0] if pip_errors else (errors or lines or ["no output"])[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def ensure(peer: str, log: Callable[[str], None] = print) -> Path:
    """The peer's venv python, installing its pins first when its marker says they changed."""
    base = shutil.which("python3") or sys.executable
    venv, marker = PEERS / peer, PEERS / peer / ".pins.json"
    wanted = _wanted(peer, base)
    try:
        if json.loads(marker.read_text()).get("wanted") == wanted and python(peer).exists():
            return python(peer)
    except (OSError, ValueError):
        pass
    log(f"installing {peer} into {venv.relative_to(REPO)}: {' '.join(PINS[peer])}")
    PEERS.mkdir(exist_ok=True)
    constraints = PEERS / "no-torch.txt"
    constraints.write_text(NO_TORCH)
    made = subprocess.run([base, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        raise PeerError(f"venv: {short_error(made.stderr + made.stdout)}")
    cmd = [str(python(peer)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS[peer],
           "-c", str(constraints)]  # fmt: skip
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PeerError(f"pip install took over {INSTALL_TIMEOUT_S} s") from None
    (venv / "install.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        if re.search(r"\(constraint\) torch(vision)?<0", done.stdout + done.stderr):
            raise PeerError("pip install: its dependencies need torch or torchvision, which the peers' venvs refuse")
        raise PeerError(f"pip install: {short_error(done.stderr + done.stdout)}")
    marker.write_text(json.dumps({"wanted": wanted, "installed": installed(python(peer))}, indent=1))
    return python(peer)


def installed(py: Path) -> dict[str, str]:
    """Package name (lower case) -> version, as the venv's pip lists them."""
    out = subprocess.run([str(py), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                         capture_output=True, text=True)  # fmt: skip
    try:
        return {p["name"].lower(): p["version"] for p in json.loads(out.stdout)}
    except ValueError:
        return {}


KEY_PACKAGES = (
    *("nnserve", "bentoml", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "kserve", "litserve"),
    *("mlserver", "nvidia-pytriton", "tritonclient", "onnxruntime", "numpy", "pillow"),
)


def versions(peer: str) -> dict[str, str]:
    """The versions that matter of a peer's installed venv (from its marker), or of the repo's .venv for nnserve."""
    if peer == "nnserve":
        from importlib import metadata

        found = {}
        for name in KEY_PACKAGES:
            with contextlib.suppress(metadata.PackageNotFoundError):
                found[name] = metadata.version(name)
        return found
    try:
        pkgs = json.loads((PEERS / peer / ".pins.json").read_text())["installed"]
    except (OSError, ValueError, KeyError):
        return {}
    return {k: v for k, v in pkgs.items() if k in KEY_PACKAGES}
