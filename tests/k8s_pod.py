"""A rendered Deployment's container, run here as the kubelet would run it, without a cluster (none can run here: no
image can be pulled).

The command is the container's; its environment is the image's (the Dockerfile's ENV), then its ConfigMaps, then
its env, as in the pod; its volumes are folders (an emptyDir a new one, a claim the folder the test gives); the
image's WORKDIR is the source tree. Paths in the environment are mapped to those folders, and the listeners to free
loopback ports. As root, with util-linux's unshare, it runs as PID 1 of its own PID namespace (signals reach it as
the kubelet sends them, with no init in front) and, when the container has a read-only root filesystem, in its own
mount namespace where the source tree, the Python installation, HOME and read-only volumes are mounted read-only:
a write outside the pod's writable volumes fails here as it would there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server import free_port

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def image_config(dockerfile: Path = REPO / "Dockerfile") -> dict[str, Any]:
    """The final stage's ENV, WORKDIR, the user's uid and home, read from the Dockerfile."""
    text = dockerfile.read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(tok.split("=", 1) for tok in shlex.split(line[4:]))  # type: ignore[misc]
    useradd = re.search(r"useradd .*--uid (\d+).*--home-dir (\S+)", final)
    assert useradd, "the Dockerfile's useradd names no --uid and --home-dir"
    return {
        "env": env,
        "workdir": re.findall(r"^WORKDIR (\S+)", final, re.M)[-1],
        "uid": int(useradd[1]),
        "home": useradd[2],
    }


def isolated() -> bool:
    """Whether the pod can get its own PID and mount namespaces here (root and unshare)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


class Pod:
    def __init__(
        self,
        deployment: dict[str, Any],
        resources: list[dict[str, Any]],
        claims: dict[str, Path],
        secrets: dict[str, str],
        tmp: Path,
    ) -> None:
        from tests.k8s_checks import container_env

        spec = deployment["spec"]["template"]["spec"]
        (self.container,) = spec["containers"]
        image = image_config()
        self.port, grpc = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.isolated = isolated()
        # container path -> host folder; read-only ones listed
        self.paths: dict[str, Path] = {image["workdir"]: REPO, image["home"]: tmp / "home"}
        self.read_only: list[Path] = []
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                host = claims[volume["persistentVolumeClaim"]["claimName"]]
            else:
                assert "emptyDir" in volume, f"volume {mount['name']}: only emptyDir and claims are run here"
                host = tmp / f"volume-{mount['name']}"
            self.paths[mount["mountPath"]] = host
            if mount.get("readOnly"):
                self.read_only.append(host)
        for host in self.paths.values():
            host.mkdir(parents=True, exist_ok=True)
        if self.container.get("securityContext", {}).get("readOnlyRootFilesystem"):  # the image's files, HOME
            self.read_only += [REPO, Path(sys.base_prefix), self.paths[image["home"]]]
        env = {**image["env"], **container_env(self.container, resources)}
        env.pop("PATH")  # the image's /opt/venv/bin: here the virtual environment's bin, below
        for k, v in env.items():
            if v.startswith("secret:"):
                env[k] = secrets[v.removeprefix("secret:")]
            elif v.startswith("/"):
                env[k] = str(self.host(v))
        self.http_port = int(env["BENTOML_PORT"])
        env |= {"BENTOML_HOST": "127.0.0.1", "BENTOML_PORT": str(self.port), "HOME": str(self.host(image["home"]))}
        if env.get("NNSERVE_GRPC_PORT", "8001") != "0":
            env["NNSERVE_GRPC_PORT"] = str(grpc)
        if "/tmp" in self.paths:
            env["TMPDIR"] = str(self.paths["/tmp"])
        env["PATH"] = f"{VENV_BIN}:{os.environ['PATH']}"  # the image's /opt/venv/bin
        self.env = env
        command = [*self.container["command"], *self.container.get("args", [])]
        exe = shutil.which(command[0], path=env["PATH"])
        assert exe, f"{command[0]} not found"
        self.command = [exe, *command[1:]]
        self.cwd = self.host(image["workdir"])
        self.log_path = tmp / "pod.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def host(self, path: str) -> Path:
        """Where a container path lies here (the longest mapped prefix)."""
        for prefix in sorted(self.paths, key=len, reverse=True):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return self.paths[prefix] / path[len(prefix) :].lstrip("/")
        raise AssertionError(f"{path}: a path outside the image's WORKDIR, HOME and volumes")

    def probe_url(self, probe: str) -> str:
        get = self.container[probe]["httpGet"]
        ports = {p.get("name"): p["containerPort"] for p in self.container["ports"]}
        assert ports.get(get["port"], get["port"]) == self.http_port
        return self.url + get["path"]

    def start(self) -> None:
        argv = self.command
        if self.isolated:
            q = shlex.quote
            mounts = [
                f"mount --bind {q(str(p))} {q(str(p))} && mount -o remount,bind,ro {q(str(p))}" for p in self.read_only
            ]
            script = " && ".join([*mounts, f"cd {q(str(self.cwd))}", 'exec "$@"'])  # cd: onto the read-only mount
            argv = ["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--", "sh", "-c", script, "sh", *argv]
        with open(self.log_path, "wb") as log:  # the process keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def pid1(self) -> int:
        """The container's PID 1, as seen from here."""
        assert self.proc is not None
        if not self.isolated:
            return self.proc.pid
        for _ in range(100):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if children:
                return int(children[0])
            time.sleep(0.05)
        raise AssertionError("unshare started no process")

    def confinement(self) -> tuple[int, set[str]]:
        """PID 1's number in its own namespace, and the folders mounted read-only for it."""
        pid = self.pid1()
        ns_pid = int(re.findall(r"NSpid:\s+(.*)", Path(f"/proc/{pid}/status").read_text())[0].split()[-1])
        read_only = set()
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            if "ro" in fields[5].split(","):
                read_only.add(fields[4])
        return ns_pid, read_only

    def wait_for(self, path_ok: str, timeout: float) -> float:
        """Seconds from now until GET ``path_ok`` answers 200."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            assert self.proc is not None and self.proc.poll() is None, f"the container exited:\n{self.log()}"
            try:
                if httpx.get(path_ok, timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{path_ok} not 200 within {timeout} s:\n{self.log()}")

    def wait_for_status(self, url: str, status: int, timeout: float) -> float:
        """Seconds from now until GET ``url`` answers ``status``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == status:
                    return time.monotonic() - t0
            time.sleep(0.05)
        raise AssertionError(f"{url} not {status} within {timeout} s:\n{self.log()}")

    def rss_mib(self) -> float:
        """Resident memory of the container's processes (PID 1 and its descendants)."""
        parent: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(stat.parent.name)] = int(fields[1])
        tree, total = {self.pid1()}, 0
        for _ in range(8):  # depth: bentoml, its workers, their helpers
            tree |= {p for p, pp in parent.items() if pp in tree}
        for pid in tree:
            try:
                total += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])  # type: ignore[index]
            except (OSError, TypeError):
                continue
        return total / 1024

    def terminate(self) -> None:
        """What the kubelet does to stop the pod: SIGTERM to the container's PID 1."""
        os.kill(self.pid1(), signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]
