"""An Octopus URL that does not lead to Octopus: a real HTTP server on loopback answers in
its own way, and octoboot says in one line what answered and that the URL is probably
wrong (exit 2), before any host is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from octoboot.errors import ConfigError
from octoboot.octopus import OctopusClient, OctopusUnavailable
from octoboot.settings import API_KEY_VARIABLE

REPO = Path(__file__).resolve().parents[2]
PAGE = (
    "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome</title>\n</head>\n<body>\n"
    "<h1>It works</h1>\n<p>This is not Octopus.</p>\n</body>\n</html>\n"
)
ANSWERS = {
    # name: (status, content type, body, extra headers)
    "html page": (200, "text/html; charset=utf-8", PAGE, {}),
    "html not found": (404, "text/html", PAGE, {}),
    "html login": (401, "text/html", PAGE, {}),
    "redirect": (301, "text/html", PAGE, {"Location": "https://elsewhere.example/api"}),
    "json of something else": (200, "application/json", json.dumps({"status": "up"}), {}),
    "json list": (200, "application/json", "[1, 2]", {}),
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, dict]]:
    """A web server on loopback that answers every request with answer["now"] (each test
    sets it): one for the module, as stopping one waits out its poll."""
    answer: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body, headers = answer["now"]
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", answer
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.mark.parametrize("kind", list(ANSWERS))
def test_a_url_that_is_not_octopus_is_one_line_exit_2(server, kind):
    url, answer = server
    answer["now"] = ANSWERS[kind]
    status, content_type = ANSWERS[kind][:2]
    client = OctopusClient(url, "API-KEY", key_hint=API_KEY_VARIABLE, retry_seconds=1)
    with client, pytest.raises(ConfigError) as caught:
        client.connect(["QA"])
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "\n" not in message and "<" not in message, message
    assert url in message and "probably wrong" in message
    assert str(status) in message and content_type.split(";")[0] in message
    if kind == "redirect":
        assert "https://elsewhere.example/api" in message


def test_a_proxy_whose_octopus_is_down_is_still_unavailable_in_one_line(server):
    url, answer = server
    answer["now"] = (503, "text/html", PAGE, {})
    client = OctopusClient(url, "API-KEY", key_hint=API_KEY_VARIABLE, retry_seconds=0)
    with client, pytest.raises(OctopusUnavailable) as caught:
        client.connect(["QA"])
    assert caught.value.exit_code == 3
    assert "\n" not in str(caught.value) and "503" in str(caught.value)


def test_the_command_line_says_it_in_one_line(server, tmp_path):
    url, answer = server
    answer["now"] = ANSWERS["html page"]
    (tmp_path / "machines").mkdir()
    (tmp_path / "machines" / "qa.toml").write_text(
        'environment = "QA"\nroles = ["web"]\n\n[[machines]]\nname = "web01"\n'
        'address = "192.0.2.1"\n'
    )
    env = {
        **os.environ,
        "OCTOPUS_URL": url,
        "OCTOPUS_API_KEY": "API-NOTAREALKEY000000000000",
        "OCTOBOOT_PFX_PASSWORD": "not-used-here",
        "OCTOBOOT_STATE_DIR": str(tmp_path / "state"),
        "OCTOBOOT_MACHINES_DIR": str(tmp_path / "machines"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "register", "--env", "qa"],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("octoboot: "), proc.stderr
    assert "200" in lines[0] and "text/html" in lines[0] and "probably wrong" in lines[0]
