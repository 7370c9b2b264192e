"""Answers the SDK does not understand are typed errors, never a success."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import mandate
from conftest import Lab


class _OddServer(ThreadingHTTPServer):
    mode = ""
    url = ""


class _Odd(BaseHTTPRequestHandler):
    """An "authority" that answers oddly: a configuration without an issuer,
    and a start answered 403 with a problem that has no code."""

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @property
    def odd(self) -> _OddServer:
        assert isinstance(self.server, _OddServer)
        return self.server

    def do_GET(self) -> None:
        if self.path == "/.well-known/mandate-configuration":
            if self.odd.mode == "no-issuer":
                self._send(200, "application/json", b'{"hello": "world"}')
                return
            url = self.odd.url
            doc = {"issuer": url, "mission_start_endpoint": url + "/v1/missions/start"}
            self._send(200, "application/json", json.dumps(doc).encode())
            return
        self._send(200, "text/html", b"<html>hi</html>")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.odd.mode == "html-success":
            self._send(200, "text/html", b"<html>welcome</html>")
        elif self.odd.mode == "codeless":
            self._send(403, "application/problem+json", b'{"title": "Forbidden"}')
        else:
            self._send(500, "text/plain", b"oops")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def odd() -> Iterator[_OddServer]:
    server = _OddServer(("127.0.0.1", 0), _Odd)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.mark.parametrize(
    ("mode", "detail"),
    [
        ("no-issuer", "no usable `issuer`"),
        ("html-success", "not JSON"),
        ("codeless", "without a `code`"),
        ("server-error", "without a problem document"),
    ],
)
def test_an_answer_it_does_not_understand_is_an_error(
    odd: _OddServer, mode: str, detail: str
) -> None:
    odd.mode = mode
    with pytest.raises(mandate.UnexpectedResponse) as e:
        mandate.Mission.start(odd.url, "mst_whatever")
    assert e.value.code == "unexpected_response"
    assert detail in str(e.value)


def test_a_server_that_is_not_there_is_a_transport_error() -> None:
    with pytest.raises(mandate.TransportError):
        mandate.Mission.start("http://127.0.0.1:9", "mst_x")


def test_a_spent_start_token_is_refused_with_its_code(lab: Lab) -> None:
    token = lab.mission()
    mandate.Mission.start(lab.url, token).close()
    with pytest.raises(mandate.MandateError) as e:
        mandate.Mission.start(lab.url, token)
    assert e.value.code == "start_token_used"
    assert e.value.status == 409


class _FakeEscalation(BaseHTTPRequestHandler):
    """A hostile upstream (reached through `also_to`) that answers every call
    with Mandate's `approval_required`, naming an approval id that ends in
    a newline and an approval URL of its own."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "type": "urn:mandate:problem:approval_required",
                "code": "approval_required",
                "detail": "needs approval",
                "approval_id": "apr_x\n",
                "approval_url": "http://evil.example/approve",
            }
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_forged_approval_id_is_an_unexpected_answer_never_a_wait(lab: Lab) -> None:
    hostile = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEscalation)
    url = f"http://127.0.0.1:{hostile.server_address[1]}"
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    try:
        with (
            mandate.Mission.start(lab.url, lab.mission()) as m,
            m.client(wait=5, also_to=[url]) as http,
        ):
            with pytest.raises(mandate.UnexpectedResponse) as e:
                http.get(f"{url}/anything")
            assert "approval_id" in str(e.value)
            with pytest.raises(mandate.MandateError) as bad:
                m.wait_for_approval("apr_x\n", max_wait=1)
            assert bad.value.code == "invalid_request"
    finally:
        hostile.shutdown()
