"""The Docker image as the README builds and runs it: built from the repository, started, healthy, and its
prebuilt nano lifecycle answering a question through gradio_client.

These machines reach neither Docker Hub nor the internet beyond the package registries, so the test builds its
base image from Debian's archive (debootstrap + docker import), downloads every wheel on the host (where pip
has the registry and its certificates) and builds offline from them: no certificate enters the image, and the
README's lines run as written with only the base and the offline switch added. It skips, saying why, where no
Docker daemon runs or can be started."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
BASE = "lab-test-base:bookworm"
IMAGE = "llm-lab"


def run(*cmd: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def readme_lines() -> dict[str, str]:
    """The README's `docker build` and `docker run` lines, as a user copies them."""
    text = (ROOT / "README.md").read_text()
    return {verb: re.search(rf"^(docker {verb} .+)$", text, re.M).group(1) for verb in ("build", "run")}


@pytest.fixture(scope="module")
def docker():
    """A Docker daemon: the running one, or one started here as root (there is no systemd), stopped after."""
    if not shutil.which("docker"):
        pytest.skip("no docker command (apt-get install docker.io)")
    started = None
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        if os.geteuid() != 0 or not shutil.which("dockerd"):
            pytest.skip("no Docker daemon runs, and this user cannot start one (dockerd needs root)")
        started = subprocess.Popen(["dockerd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            if started.poll() is not None or time.time() > deadline:
                pytest.skip("dockerd could not be started here (see `dockerd` run by hand)")
            time.sleep(1)
    yield
    if started is not None:
        started.terminate()
        started.wait(timeout=60)
        remove_network_rules()


def remove_network_rules() -> None:
    """What a dockerd started here leaves behind as it stops: its iptables rules and chains, and its bridge."""
    if not shutil.which("iptables"):
        return
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout.splitlines()
        for rule in rules:
            if rule.startswith("-A ") and "docker" in rule.lower():
                subprocess.run(["iptables", "-t", table, "-D", *shlex.split(rule)[1:]], capture_output=True)
        for rule in rules:
            if rule.startswith("-N ") and "DOCKER" in rule:
                subprocess.run(["iptables", "-t", table, "-F", rule.split()[1]], capture_output=True)
                subprocess.run(["iptables", "-t", table, "-X", rule.split()[1]], capture_output=True)
    subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True)


@pytest.fixture(scope="module")
def base_image(docker, tmp_path_factory):
    """A Debian bookworm base with Python, from Debian's archive."""
    if subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode == 0:
        yield BASE
        return
    if not shutil.which("debootstrap"):
        pytest.skip("Docker Hub is out of reach and there is no debootstrap to build a base (apt-get install debootstrap)")
    rootfs = tmp_path_factory.mktemp("rootfs")
    run("debootstrap", "--variant=minbase", "--include=python3,python3-venv,passwd", "bookworm", str(rootfs), "http://deb.debian.org/debian")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", BASE], stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    yield BASE
    subprocess.run(["docker", "rmi", "-f", BASE], capture_output=True)


@pytest.fixture(scope="module")
def image(base_image, tmp_path_factory):
    """The README's `docker build`, offline from wheels the host downloads."""
    context = tmp_path_factory.mktemp("context")
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "app.py"):
        shutil.copy(ROOT / name, context / name)
    for name in ("lab", "pages"):
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    # torch pinned to the CPU build pip finds on this machine (a bare requirement would take the multi-GB CUDA one)
    run(sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(context / "wheels"), "torch==2.13.0", str(ROOT))
    t0 = time.time()
    build = shlex.split(readme_lines()["build"])
    assert build[:2] == ["docker", "build"] and build[-1] == "."
    run(*build[:-1], "--build-arg", f"BASE={base_image}", "--build-arg", "PIP_NO_INDEX=1", str(context), env={**os.environ, "DOCKER_BUILDKIT": "0"})
    print(f"image built in {time.time() - t0:.0f} s", file=sys.stderr)
    yield IMAGE
    subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True)
    subprocess.run(["docker", "image", "prune", "-af", "--filter", "label=llm-lab"], capture_output=True)  # the build stage too


def test_the_image_serves_its_lifecycle(image):
    from gradio_client import Client

    port = free_port()
    line = shlex.split(readme_lines()["run"])
    assert line[:2] == ["docker", "run"] and line[-1] == image
    volume = f"lab-test-{port}"
    args = [a.replace("lab-checkpoints:", f"{volume}:") for a in line[2:-1]]
    args = [f"127.0.0.1:{port}:7860" if a == "7860:7860" else a for a in args]
    container = run("docker", "run", "-d", *args, image).stdout.strip()
    try:
        def health():
            state = json.loads(run("docker", "inspect", container).stdout)[0]["State"]
            assert state["Running"], run("docker", "logs", container).stderr[-3000:]
            return state["Health"]["Status"] == "healthy"

        wait_for(health, 180, "the container's health check")
        user = run("docker", "exec", container, "id", "-u").stdout.strip()
        assert user != "0"  # not root
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        aligned = next(r["id"] for r in client.predict(api_name="/list_runs") if r["stage"] == "dpo" and r["status"] == "completed")
        models = client.predict(aligned, api_name="/lifecycle")
        assert len(models) == 3
        panes = client.predict(models, "What is the capital of Zoker?", 0.0, 1.0, 24, 0, api_name="/compare")
        assert [p["done"] for p in panes] == [True] * 3 and any(p["answer"] for p in panes)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
