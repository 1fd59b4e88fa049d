"""TLS on the router's port (--tls-cert/--tls-key, router.tls_cert/tls_key),
against a real router with a certificate made for the test."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import trustme

from tests.support.opskit import TIMEOUT, tiny_catalogue
from tests.support.routerproc import ROOT, RouterProcess, child_command, write_config

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 with its key, and a key of another certificate."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server, other = ca.issue_cert("127.0.0.1", "localhost"), ca.issue_cert("127.0.0.1")
    files = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key", "other_key": d / "other.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files["key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    return files


def catalogue(tmp_path: Path, llama_server: Path, tiny_dir: Path, **router: object) -> Path:
    return write_config(tmp_path / "config.yaml", tiny_catalogue(tiny_dir, "tiny-a"),
                        spawn={"command": child_command(llama_server)}, router={"watch_config": False, **router})


def wait_https(r: RouterProcess, url: str, ca: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.proc.poll() is not None:
            raise RuntimeError(f"router exited with {r.proc.returncode}:\n{r.log(8000)}")
        try:
            if requests.get(url + "/health", verify=str(ca), timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise TimeoutError(f"router not ready over https in {timeout} s:\n{r.log(8000)}")


def run_router(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_https_with_the_certificate_given_on_the_command_line(tmp_path, llama_server, tiny_dir, pki):
    cfg = catalogue(tmp_path, llama_server, tiny_dir, api_keys=["tls-key-0123456789"])
    r = RouterProcess(cfg, tmp_path / "router.log", "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]))
    https = f"https://127.0.0.1:{r.port}"
    try:
        wait_https(r, https, pki["ca"])
        chat = requests.post(https + "/v1/chat/completions", verify=str(pki["ca"]), timeout=TIMEOUT,
                             headers={"Authorization": "Bearer tls-key-0123456789"},
                             json={"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}],
                                   "max_tokens": 4})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"]
        with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the CA
            requests.get(https + "/health", timeout=TIMEOUT)
        with pytest.raises(requests.ConnectionError):  # plain HTTP on the TLS port gets no answer
            requests.get(f"http://127.0.0.1:{r.port}/health", timeout=TIMEOUT)
        assert f"listening on https://127.0.0.1:{r.port}" in r.log()
    finally:
        assert r.stop() == 0


def test_https_with_the_certificate_named_in_the_catalogue(tmp_path, llama_server, tiny_dir, pki):
    (tmp_path / "tls").mkdir()
    for name in ("cert", "key"):
        (tmp_path / "tls" / pki[name].name).write_bytes(pki[name].read_bytes())
    cfg = catalogue(tmp_path, llama_server, tiny_dir, tls_cert="tls/server.pem", tls_key="tls/server.key")
    r = RouterProcess(cfg, tmp_path / "router.log")
    try:
        wait_https(r, f"https://localhost:{r.port}", pki["ca"])
    finally:
        assert r.stop() == 0


@pytest.mark.parametrize(("flags", "expected"), [
    (lambda p: ["--tls-cert", str(p["cert"]), "--tls-key", str(p["other_key"])], "does not belong to the certificate"),
    (lambda p: ["--tls-cert", str(p["cert"])], "--tls-key: expected a file: --tls-cert is set"),
    (lambda p: ["--tls-cert", str(p["cert"]), "--tls-key", "/no/such.key"], "--tls-key: expected a PEM file"),
    (lambda p: ["--tls-cert", str(p["key"]), "--tls-key", str(p["key"])], "cannot load the certificate"),
], ids=["mismatched pair", "cert without key", "missing key file", "a key as certificate"])
def test_a_wrong_pair_is_refused_at_start(tmp_path, llama_server, tiny_dir, pki, flags, expected):
    cfg = catalogue(tmp_path, llama_server, tiny_dir)
    done = run_router("--config", str(cfg), *flags(pki))
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr and expected in done.stderr, done.stderr


def test_half_a_pair_in_the_catalogue_is_refused(tmp_path, llama_server, tiny_dir, pki):
    cfg = catalogue(tmp_path, llama_server, tiny_dir, tls_key=str(pki["key"]))
    done = run_router("--config", str(cfg))
    assert done.returncode == 2
    assert "router.tls_cert: expected a file: router.tls_key is set" in done.stderr, done.stderr
