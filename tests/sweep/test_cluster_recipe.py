"""The multi-node recipe of docs/cluster.md, run as written on loopback: a head, a worker that
joins it and a driver that connects with --address, for a user who has run a local sweep before.

Such a user has ~/.ray/auth_token (a local `ray.init()` writes one), and since Ray 2.52
`ray start --head` turns token authentication on whenever that file exists, while
`ray start --address` and a driver with an explicit address do not: a recipe without
RAY_AUTH_MODE=token leaves the worker with `AuthenticationError: InvalidAuthToken`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAY = shutil.which("ray", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
DRIVER = """import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print("alive nodes:", sum(n["Alive"] for n in ray.nodes()))
"""


def readme_recipe() -> list[tuple[dict[str, str], list[str]]]:
    """(environment, argv) of each command in docs/cluster.md's cluster block, `export`s applied."""
    text = (REPO / "docs" / "cluster.md").read_text()
    block = re.search(r"To use several machines.*?```bash\n(.*?)```", text, re.S).group(1)
    exported: dict[str, str] = {}
    steps = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "export":
            exported.update(w.split("=", 1) for w in words[1:])
            continue
        env = dict(exported)
        while re.fullmatch(r"[A-Z_]+=.*", words[0]):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        steps.append((env, words))
    return steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(RAY is None, reason="the ray CLI is not installed")
def test_readme_cluster_recipe_joins_a_worker_when_an_auth_token_exists(tmp_path):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(uuid.uuid4().hex)  # what a local sweep leaves
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Unix socket paths must stay short, so not under tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    # Ours, not the docs': one CPU each, loopback, no dashboard, ports nobody else holds, and
    # --block so that stopping these two processes stops their nodes (never `ray stop`, which
    # would stop every Ray node of this user on the machine).
    local = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]

    def argv(words: list[str]) -> list[str]:
        words = [w.replace("HEAD_IP:6379", address).replace("6379", str(port)) for w in words]
        return [RAY if words[0] == "ray" else words[0], *words[1:]]

    steps = readme_recipe()
    heads = [s for s in steps if s[1][:3] == ["ray", "start", "--head"]]
    workers = [s for s in steps if s[1][:2] == ["ray", "start"] and "--head" not in s[1]]
    drivers = [s for s in steps if s[1][:2] == ["sae-lab", "sweep"]]
    assert len(heads) == len(workers) == len(drivers) == 1, steps
    assert f"--address={address}" in argv(workers[0][1])
    assert f"--address {address}" in " ".join(argv(drivers[0][1]))
    for env, words in steps:  # e.g. `ray get-auth-token --generate`: run it as written
        if (env, words) not in heads + workers + drivers:
            subprocess.run(argv(words), env={**base, **env}, check=True, timeout=60,
                           capture_output=True)

    procs: list[subprocess.Popen] = []

    def start(step, extra: list[str], log: str) -> subprocess.Popen:
        env, words = step
        with open(tmp_path / log, "w") as out:
            procs.append(subprocess.Popen([*argv(words), *local, *extra], env={**base, **env},
                                          stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        return procs[-1]

    try:
        start(heads[0], [f"--temp-dir={temp_dir}", f"--ray-client-server-port={free_port()}",
                         "--include-dashboard=false"], "head.log")
        worker = None
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:
            for p, log in zip(procs, ("head.log", "worker.log"), strict=False):
                assert p.poll() is None, f"{log} exited:\n{(tmp_path / log).read_text()[-3000:]}"
            driver = subprocess.run([sys.executable, "-c", DRIVER, address],
                                    env={**base, **drivers[0][0]}, capture_output=True,
                                    text=True, timeout=60)
            seen = driver.stdout + driver.stderr[-2000:]
            assert "AuthenticationError" not in seen, seen
            if "alive nodes: 2" in driver.stdout:
                break
            if worker is None and "alive nodes: 1" in driver.stdout:
                worker = start(workers[0], [f"--dashboard-agent-listen-port={free_port()}"],
                               "worker.log")
            time.sleep(1)
        else:
            pytest.fail(f"no two-node cluster within 120 s; driver said:\n{seen}\nworker log:\n"
                        + ((tmp_path / "worker.log").read_text()[-3000:] if worker else ""))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
