"""download_amazon against a local HTTP server on 127.0.0.1 (no outside traffic): full, resumed, refused-range and
broken downloads."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deepinterestgr.data.download import DownloadError, download_amazon
from deepinterestgr.data.readers.amazon2014 import Amazon2014Reader

FIXTURE = Path(__file__).parent / "fixtures" / "data" / "amazon2014"
# the 2014 fixture category served as the dump serves it: gzip files named after the category
FILES = {
    "/reviews_Beauty_5.json.gz": gzip.compress((FIXTURE / "reviews_Mini_5.json").read_bytes(), mtime=0),
    "/meta_Beauty.json.gz": gzip.compress((FIXTURE / "meta_Mini.json").read_bytes(), mtime=0),
}
HALF = len(FILES["/reviews_Beauty_5.json.gz"]) // 2


class Server:
    """Serves FILES with HTTP Range support; `honour_range` and `cut_after` simulate unhelpful servers."""

    def __init__(self):
        self.requests: list[tuple[str, str | None]] = []
        self.honour_range = True
        self.cut_after: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                body = FILES.get(self.path)
                server.requests.append((self.path, self.headers.get("Range")))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.cut_after is not None:
                    payload = payload[: server.cut_after]
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with Server() as s:
        yield s


def test_full_download(server, tmp_path):
    paths = download_amazon("2014", "Beauty", str(tmp_path), base_url=server.url)
    assert [p.name for p in paths] == ["reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"]
    assert all(p.read_bytes() == FILES["/" + p.name] for p in paths)
    assert not list(tmp_path.glob("*.part"))
    assert len(Amazon2014Reader(strict=True).read(tmp_path).interactions) == 12  # the reader takes it from here
    server.requests.clear()
    download_amazon("2014", "Beauty", str(tmp_path), base_url=server.url)
    assert server.requests == []  # finished files are not fetched again


def test_resumes_a_partial_download_with_a_range_request(server, tmp_path):
    body = FILES["/reviews_Beauty_5.json.gz"]
    (tmp_path / "reviews_Beauty_5.json.gz.part").write_bytes(body[:HALF])
    download_amazon("2014", "Beauty", str(tmp_path), base_url=server.url)
    assert ("/reviews_Beauty_5.json.gz", f"bytes={HALF}-") in server.requests
    assert (tmp_path / "reviews_Beauty_5.json.gz").read_bytes() == body


def test_restarts_when_the_server_ignores_range(server, tmp_path):
    server.honour_range = False
    body = FILES["/meta_Beauty.json.gz"]
    (tmp_path / "meta_Beauty.json.gz.part").write_bytes(b"stale")
    download_amazon("2014", "Beauty", str(tmp_path), base_url=server.url)
    assert (tmp_path / "meta_Beauty.json.gz").read_bytes() == body


def test_a_broken_transfer_keeps_the_part_and_the_next_call_finishes(server, tmp_path):
    server.cut_after = HALF
    with pytest.raises(DownloadError, match="rerun to resume"):
        download_amazon("2014", "Beauty", str(tmp_path), base_url=server.url)
    part = tmp_path / "reviews_Beauty_5.json.gz.part"
    assert part.stat().st_size == HALF and not (tmp_path / "reviews_Beauty_5.json.gz").exists()
    server.cut_after = None
    download_amazon("2014", "Beauty", str(tmp_path), base_url=server.url)
    assert (tmp_path / "reviews_Beauty_5.json.gz").read_bytes() == FILES["/reviews_Beauty_5.json.gz"]
    assert ("/reviews_Beauty_5.json.gz", f"bytes={HALF}-") in server.requests


def test_complete_part_file_is_finished_on_416(server, tmp_path):
    body = FILES["/meta_Beauty.json.gz"]
    (tmp_path / "reviews_Beauty_5.json.gz").write_bytes(FILES["/reviews_Beauty_5.json.gz"])
    (tmp_path / "meta_Beauty.json.gz.part").write_bytes(body)
    download_amazon("2014", "Beauty", str(tmp_path), base_url=server.url)
    assert (tmp_path / "meta_Beauty.json.gz").read_bytes() == body


def test_missing_file_and_bad_version(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_amazon("2018", "Beauty", str(tmp_path), base_url=server.url)
    with pytest.raises(ValueError, match="version"):
        download_amazon("2015", "Beauty", str(tmp_path))
