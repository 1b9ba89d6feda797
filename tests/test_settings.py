"""An operator's mistakes in the NNSERVE_ settings: a bad value stops `bentoml serve` with one line naming the
variable (it printed an 85-line traceback naming pydantic's field), a gRPC port equal to the HTTP port is refused
before the workers loop on it, a version policy that picks nothing stops start-up, and a misspelt variable or a
blank API key is said so in the log (an operator audit, 2026-12-06)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from service.grpc_port import http_port
from service.runtime import preflight
from service.settings import PILLOW_MAX_PIXELS, Settings, settings_error, unknown_variables

REPO = Path(__file__).resolve().parent.parent


def serve(root: Path, port: int = 0, **env: str) -> list[str]:
    """``bentoml serve`` of ``root`` with these settings, expected to exit at once: its output's lines."""
    cmd = [sys.executable, "-m", "bentoml", "serve", "service.service:NNServe", "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    environ = {**os.environ, "NNSERVE_MODEL_DIR": str(root), **env}
    out = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 1, (out.stdout + out.stderr)[-2000:]
    return (out.stdout + out.stderr).strip().splitlines()


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"NNSERVE_MAX_BATCH_SIZE": "-1"}, "nnserve: NNSERVE_MAX_BATCH_SIZE='-1': Input should be greater than"),
        ({"NNSERVE_GC_FREEZE": "maybe"}, "nnserve: NNSERVE_GC_FREEZE='maybe': Input should be a valid boolean"),
        ({"NNSERVE_MODELS": "mnist-cnn"}, "nnserve: NNSERVE_MODELS is not valid JSON"),
        ({"NNSERVE_VERSION_POLICY": '{"m": {"lastest": 2}}'}, "nnserve: NNSERVE_VERSION_POLICY (m.lastest): Extra"),
        ({"NNSERVE_METRICS_MAX_AGE_S": "inf"}, "nnserve: NNSERVE_METRICS_MAX_AGE_S='inf': Input should be less"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_the_variable(artifact_root, env, line):
    lines = serve(artifact_root, **env)
    assert len(lines) == 1 and lines[0].startswith(line), lines[-5:]


def test_a_grpc_port_equal_to_the_http_port_is_refused(artifact_root):
    """Its probe ran before BentoML bound the HTTP port, so it passed, and every worker then failed to bind and was
    restarted for ever (37 times in 6 minutes in the audit)."""
    lines = serve(artifact_root, 18999, NNSERVE_GRPC_PORT="18999")
    assert len(lines) == 1 and "NNSERVE_GRPC_PORT 18999 is the HTTP port" in lines[0], lines[-5:]


def test_a_grpc_host_not_of_this_machine_is_named_as_such(artifact_root):
    """An address of another machine was "the gRPC port 18997 is taken (Cannot assign requested address)": the
    port was never the matter (found writing the setting's first test)."""
    import socket

    from tests.server import free_port

    host = "203.0.113.9"  # TEST-NET-3 (RFC 5737): no machine's own
    with socket.socket() as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            pass
        else:  # net.ipv4.ip_nonlocal_bind: any address binds here, so none is "not of this machine"
            pytest.skip("this machine binds addresses it does not have (ip_nonlocal_bind)")
    lines = serve(artifact_root, free_port(), NNSERVE_GRPC_PORT=str(free_port()), NNSERVE_GRPC_HOST=host)
    assert len(lines) == 1 and f"NNSERVE_GRPC_HOST {host!r} is not an address of this machine" in lines[0], lines


def test_the_grpc_listener_binds_the_host_it_is_given():
    """NNSERVE_GRPC_HOST: the listener answers on that address and on no other (127.0.0.1 is loopback too)."""
    import asyncio
    import socket

    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from service.oip_grpc import GrpcServer
    from tests.server import free_port

    port = free_port()

    async def main() -> bool:
        server = GrpcServer(None, Settings(grpc_port=port, grpc_host="127.0.0.2"), asyncio.get_running_loop())  # type: ignore[arg-type]
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.2:{port}") as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                live = await stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return live.live
        finally:
            await server.server.stop(0)

    assert asyncio.run(main())


def test_settings_reach_bentoml_and_onnxruntime(artifact_root):
    """NNSERVE_TRACE_V1, NNSERVE_MODEL_WORKERS and NNSERVE_ORT_INTRA_OP_THREADS had no test (a docs audit's): each is
    read where it acts, BentoML's service configuration and the onnxruntime session a model runs in."""
    code = (
        "import pathlib; from service.service import NNServe; from service.runtime import load_model; "
        "from service.settings import get_settings; "
        "print(NNServe.config['tracing']['excluded_urls']); "
        "print(sorted({d.on.config['workers'] for d in NNServe.dependencies.values()})); "
        f"m = load_model(pathlib.Path({str(artifact_root / 'digits-cnn')!r}), get_settings()); "
        "print(m.session.get_session_options().intra_op_num_threads)"
    )
    for env, want in [
        ({}, ["['/v1/', '/v2/']", "[1]", "1"]),
        (
            {"NNSERVE_TRACE_V1": "true", "NNSERVE_MODEL_WORKERS": "3", "NNSERVE_ORT_INTRA_OP_THREADS": "2"},
            ["[]", "[3]", "2"],
        ),
    ]:
        environ = {**os.environ, "NNSERVE_MODEL_DIR": str(artifact_root), "NNSERVE_BATCHING": "services", **env}
        out = subprocess.run(
            [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120, cwd=REPO
        )
        assert out.stdout.split("\n")[-4:-1] == want, (env, out.stdout[-500:], out.stderr[-2000:])


def test_the_http_port_is_read_as_bentoml_serve_reads_it(monkeypatch):
    monkeypatch.delenv("BENTOML_PORT", raising=False)
    assert http_port(["serve", "x:Y", "--port", "8100"]) == 8100 and http_port(["serve", "--port=8101"]) == 8101
    assert http_port(["serve", "-p", "8102"]) == 8102 and http_port(["serve", "x:Y"]) == 3000
    assert http_port(["serve", "-p8104"]) == 8104
    monkeypatch.setenv("BENTOML_PORT", "8103")
    assert http_port(["serve", "x:Y"]) == 8103


def test_a_version_policy_that_picks_nothing_stops_start_up_or_is_logged(artifact_root, caplog):
    policy = {"digits-cnn": {"specific": ["7"]}}
    with pytest.raises(SystemExit, match=r"picks no version of digits-cnn \(on disk: 1\)"):
        preflight(Settings(model_dir=artifact_root, version_policy=policy))
    with caplog.at_level("WARNING"):  # with model control, a version 7 may come: said, not refused
        preflight(Settings(model_dir=artifact_root, version_policy=policy, model_control="poll"))
    assert "picks no version of digits-cnn" in caplog.text
    with pytest.raises(SystemExit, match="picks no version of nope"):  # a model the folder does not hold
        preflight(Settings(model_dir=artifact_root, version_policy={"nope": {"latest": 1}}))


@pytest.mark.parametrize(
    ("env", "line"),
    [  # a default over the limit a request may ask for was cut to the limit while /docs showed the default
        ({"NNSERVE_GIBBS_STEPS": "60", "NNSERVE_MAX_GIBBS_STEPS": "50"}, "NNSERVE_GIBBS_STEPS (60) is over"),
        ({"NNSERVE_RECALL_SWEEPS": "9", "NNSERVE_MAX_RECALL_SWEEPS": "8"}, "NNSERVE_RECALL_SWEEPS (9) is over"),
        ({"NNSERVE_MAX_SAMPLES": "1"}, "NNSERVE_MAX_SAMPLES='1': Input should be greater than or equal to 2"),
        ({"NNSERVE_MAX_IMAGE_PIXELS": "100000000"}, "NNSERVE_MAX_IMAGE_PIXELS='100000000': Input should be less"),
        # a repository audit's (2026-12-07): a path served a model from outside the folder, which the repository API
        # then could neither load nor unload; model control with services batching refused every load, not the start
        ({"NNSERVE_MODELS": '["../elsewhere/mnist-cnn"]'}, "NNSERVE_MODELS (0): String should match pattern"),
        (
            {"NNSERVE_MODEL_CONTROL": "poll", "NNSERVE_BATCHING": "services"},
            "MODEL_CONTROL=poll needs NNSERVE_BATCHING=api",
        ),
    ],
)
def test_a_limit_serving_cannot_keep_is_refused(monkeypatch, env, line):
    """Limits that could not hold as set: a default over its own limit, interpolation with fewer than its two
    ends (every /v1/interpolate a 400), and more pixels than Pillow decodes before calling an image a bomb."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError) as e:
        Settings()
    assert line in settings_error(e.value)
    assert PILLOW_MAX_PIXELS == Image.MAX_IMAGE_PIXELS


def test_a_misspelt_variable_is_named_with_the_setting_meant():
    environ = {"NNSERVE_MAX_IMAGE": "2", "NNSERVE_MAX_IMAGES": "2", "NNSERVE_UI_SHOTS": "x", "HOME": "/"}
    lines = unknown_variables(environ)
    assert lines == ["NNSERVE_MAX_IMAGE is no setting and is ignored; did you mean NNSERVE_MAX_IMAGES?"]


def test_an_api_key_keeps_no_surrounding_whitespace_and_a_blank_one_is_none():
    """A key read from a file ends in a newline, which no client can send (HTTP strips a header's whitespace):
    every request was a 401."""
    key = Settings(api_key="secret\n").api_key
    assert key is not None and key.get_secret_value() == "secret"
    assert Settings(api_key=" \n").api_key is None
    with pytest.raises(ValidationError):
        Settings(metrics_max_age_s=61)
