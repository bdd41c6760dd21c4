"""`charterm data fetch` against a real HTTP server on 127.0.0.1 (no mocks): success, re-run,
checksum mismatch, dropped connection, HTTP 404, unknown dataset, --dest pointing at a folder."""

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
from conftest import ANNA, ANNA_SHA256, needs_anna, run_cli

from charterm.engine.data import DATASETS, fetch
from charterm.errors import CharTermError

# Keep any proxy settings of the machine away from requests to 127.0.0.1.
NO_PROXY = {"no_proxy": "*", "NO_PROXY": "*"}
WRONG = b"Happy families are all alike; this is not the book.\n" * 1000


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("charterm: error:"), stderr
    assert "Traceback" not in stderr
    return lines[0]


class Server:
    """A ThreadingHTTPServer on an ephemeral port; counts requests per path."""

    def __init__(self):
        self.requests: list[str] = []
        self.anna = ANNA.read_bytes() if ANNA.exists() else None
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output quiet
                pass

            def do_GET(self):
                srv.requests.append(self.path)
                if self.path == "/anna.txt" and srv.anna is not None:
                    self._send(srv.anna)
                elif self.path == "/wrong.txt":
                    self._send(WRONG)
                elif self.path == "/drop.txt" and srv.anna is not None:
                    # Promise the whole book, send a third of it, then hang up.
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(srv.anna)))
                    self.end_headers()
                    self.wfile.write(srv.anna[: len(srv.anna) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.send_error(404, "Not Found")

            def _send(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Server()
    try:
        yield s
    finally:
        s.close()


def fetch_cli(dest, url):
    return run_cli("data", "fetch", "anna", "--dest", dest, "--url", url, env=NO_PROXY, timeout=60)


def test_dataset_table_matches_the_shared_checksum():
    assert DATASETS["anna"].sha256 == ANNA_SHA256
    assert DATASETS["anna"].filename == "anna.txt"


@needs_anna
def test_fetch_downloads_verifies_then_skips(server, tmp_path):
    dest = tmp_path / "sub" / "anna.txt"  # the parent does not exist yet
    r = fetch_cli(dest, server.url("/anna.txt"))
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == server.anna
    assert sha256_bytes(dest.read_bytes()) == ANNA_SHA256
    assert "downloaded and verified" in r.stdout
    assert ANNA_SHA256[:12] in r.stdout
    assert r.stderr == ""
    assert server.requests == ["/anna.txt"]
    assert hidden_files(dest.parent) == []

    r2 = fetch_cli(dest, server.url("/anna.txt"))
    assert r2.returncode == 0, r2.stderr
    assert "already present and verified" in r2.stdout
    assert "downloaded" not in r2.stdout
    assert server.requests == ["/anna.txt"], "a verified file must not be fetched again"
    assert sha256_bytes(dest.read_bytes()) == ANNA_SHA256


@needs_anna
def test_fetch_replaces_a_stale_file(server, tmp_path):
    dest = tmp_path / "anna.txt"
    dest.write_bytes(b"an old, truncated copy")
    r = fetch_cli(dest, server.url("/anna.txt"))
    assert r.returncode == 0, r.stderr
    assert "downloaded and verified" in r.stdout
    assert sha256_bytes(dest.read_bytes()) == ANNA_SHA256
    assert server.requests == ["/anna.txt"]
    assert hidden_files(tmp_path) == []


def test_checksum_mismatch_writes_nothing(server, tmp_path):
    dest = tmp_path / "anna.txt"
    r = fetch_cli(dest, server.url("/wrong.txt"))
    assert r.returncode == 1, (r.stdout, r.stderr)
    line = one_error_line(r.stderr)
    assert "checksum" in line
    assert sha256_bytes(WRONG)[:16] in line and ANNA_SHA256[:16] in line
    assert r.stdout == ""
    assert not dest.exists()
    assert hidden_files(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    assert server.requests == ["/wrong.txt"]


def test_checksum_mismatch_leaves_existing_file_untouched(server, tmp_path):
    dest = tmp_path / "anna.txt"
    old = b"my own notes, not the book\n\x00\xff binary tail"
    dest.write_bytes(old)
    before = dest.stat()
    r = fetch_cli(dest, server.url("/wrong.txt"))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "checksum" in one_error_line(r.stderr)
    assert dest.read_bytes() == old
    assert dest.stat().st_ino == before.st_ino, "the file must not have been replaced"
    assert hidden_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anna.txt"]


@needs_anna
def test_dropped_connection_is_reported_and_cleaned_up(server, tmp_path):
    dest = tmp_path / "anna.txt"
    r = fetch_cli(dest, server.url("/drop.txt"))
    assert r.returncode == 1, (r.stdout, r.stderr)
    line = one_error_line(r.stderr)
    assert "interrupted" in line
    assert "run the command again" in line
    assert not dest.exists()
    assert hidden_files(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    assert server.requests == ["/drop.txt"]


@needs_anna
def test_fetch_function_dropped_connection(server, tmp_path):
    """The library call (no subprocess): raises CharTermError, reports progress, leaves nothing."""
    dest = tmp_path / "anna.txt"
    seen = []
    with pytest.raises(CharTermError, match="interrupted"):
        fetch(server.url("/drop.txt"), dest, ANNA_SHA256, on_progress=lambda d, t: seen.append((d, t)), timeout=10)
    assert seen, "progress was never reported"
    assert all(t == len(server.anna) for _, t in seen)
    assert 0 < seen[-1][0] < len(server.anna)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


@needs_anna
def test_fetch_function_returns_true_then_false(server, tmp_path):
    dest = tmp_path / "anna.txt"
    seen = []
    assert fetch(server.url("/anna.txt"), dest, ANNA_SHA256, on_progress=lambda d, t: seen.append((d, t))) is True
    assert seen[-1] == (len(server.anna), len(server.anna))
    assert fetch(server.url("/anna.txt"), dest, ANNA_SHA256) is False
    assert server.requests == ["/anna.txt"]
    assert sha256_bytes(dest.read_bytes()) == ANNA_SHA256


def test_http_404(server, tmp_path):
    dest = tmp_path / "anna.txt"
    r = fetch_cli(dest, server.url("/missing.txt"))
    assert r.returncode == 1, (r.stdout, r.stderr)
    line = one_error_line(r.stderr)
    assert "404" in line
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []
    assert server.requests == ["/missing.txt"]


def test_connection_refused_is_one_line(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "anna.txt"
    r = fetch_cli(dest, f"http://127.0.0.1:{port}/anna.txt")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "download failed" in one_error_line(r.stderr)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_is_a_usage_error(server, tmp_path):
    dest = tmp_path / "x.txt"
    r = run_cli("data", "fetch", "war-and-peace", "--dest", dest, "--url", server.url("/anna.txt"), env=NO_PROXY)
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = one_error_line(r.stderr)
    assert "war-and-peace" in line
    assert "anna" in line.split("choose from:", 1)[1]
    assert r.stdout == ""
    assert server.requests == []
    assert not dest.exists()


def test_dest_is_a_directory(server, tmp_path):
    r = fetch_cli(tmp_path, server.url("/anna.txt"))
    assert r.returncode != 0
    line = one_error_line(r.stderr)
    assert "directory" in line
    assert str(tmp_path) in line
    assert server.requests == [], "nothing should be downloaded for an impossible destination"
    assert list(tmp_path.iterdir()) == []


def test_malformed_url_is_one_line(tmp_path):
    dest = tmp_path / "anna.txt"
    r = fetch_cli(dest, "127.0.0.1/anna.txt")  # no scheme
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "unknown url type" in one_error_line(r.stderr)
    assert not dest.exists()
