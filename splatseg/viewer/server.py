"""Starting viser's server so that only its user can drive it, and so that a failed start is one line.

Who may connect (`OriginPolicy`): every HTTP request and websocket handshake must carry a `Host`
header naming this server as a loopback name (`127.0.0.1`, `localhost`, `[::1]` with the port
actually bound) or the host of an `--allow-origin` origin; a request that carries an `Origin`
header (browsers always send one on websocket handshakes and cross-site requests) must come from
one of `http://127.0.0.1:PORT`, `http://localhost:PORT`, `http://[::1]:PORT` or an
`--allow-origin`. Anything else gets HTTP 403 before the request reaches viser, so no scene data
is sent and no click is acted on. This stops other web pages the user has open from reading the
scene or driving the viewer (cross-site websocket hijacking, DNS rebinding). It does not stop a
program on the network when the server binds a non-loopback address: that is what the printed
warning says.

How the check is installed: viser 1.1.1 builds its server in a background thread with
`websockets.asyncio.server.serve(..., process_request=viser_http_server)` and offers no hook, so
`start_viser` replaces `websockets.asyncio.server.serve` for the duration of `viser.ViserServer()`
(which returns only once the server is listening) with a wrapper that puts the policy check in
front of viser's own `process_request`; the original is restored before returning. A lock keeps
two starts from interleaving. Requests are never served without the check.

Start failures: viser's server thread dies (an invalid port) or gives up (1000 busy ports, an
address this machine does not have) without telling the caller, which then waits forever. Ports
outside 1..65535 and unusable hosts are refused before starting; the server is then built in a
helper thread while this one watches viser's thread, and a thread that ends before the server
listens becomes one `ViewerError` line.
"""

from __future__ import annotations

import http
import ipaddress
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
START_TIMEOUT_S = 120.0
"""Longest wait for viser's server to listen before giving up with an error."""

_PATCH_LOCK = threading.Lock()


class ViewerError(ValueError):
    """The viewer cannot start (bad port, host or origin); one line."""


def normalise_origin(text: str) -> str:
    """`scheme://host[:port]` in lower case from a user's --allow-origin value; ViewerError if it
    is not an http(s) origin (no path, query or user info)."""
    parts = urlsplit(str(text).strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query
            or parts.fragment or parts.username or parts.password or port == -1):
        raise ViewerError(f"--allow-origin {text!r} is not an origin such as http://myhost:8080 (scheme, host, optional port)")
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def is_loopback(host: str) -> bool:
    """Whether binding `host` serves this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class OriginPolicy:
    """Allowed `Origin` and `Host` values (see the module docstring); `extra_origins` are
    normalised --allow-origin values."""

    extra_origins: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_flags(cls, origins: list[str]) -> "OriginPolicy":
        return cls(tuple(dict.fromkeys(normalise_origin(o) for o in origins)))

    def origins(self, port: int) -> set[str]:
        return {f"http://{name}:{port}" for name in LOOPBACK_NAMES} | set(self.extra_origins)

    def hosts(self, port: int) -> set[str]:
        allowed = {f"{name}:{port}" for name in LOOPBACK_NAMES}
        if port == 80:
            allowed |= set(LOOPBACK_NAMES)
        return allowed | {urlsplit(o).netloc for o in self.extra_origins}

    def refusal(self, host: str | None, origin: str | None, port: int) -> str | None:
        """Why a request with these headers to `port` is refused, or None when it is allowed."""
        if host is None or host.strip().lower() not in self.hosts(port):
            return f"Host {host!r} is not this viewer (allowed: loopback names with port {port}, or --allow-origin)"
        if origin is not None and origin.strip().lower().rstrip("/") not in self.origins(port):
            return f"Origin {origin!r} is not allowed (start the viewer with --allow-origin to allow it)"
        return None


def _guarded(policy: OriginPolicy, inner, refused: list):
    """A websockets `process_request` that answers 403 to refused requests and hands the others to
    `inner` (viser's HTTP file server, which returns None for websocket upgrades)."""

    def process_request(connection, request):
        port = int(connection.local_address[1])
        reason = policy.refusal(request.headers.get("Host"), request.headers.get("Origin"), port)
        if reason is not None:
            refused.append(reason)
            return connection.respond(http.HTTPStatus.FORBIDDEN, f"403 Forbidden: {reason}\n")
        return None if inner is None else inner(connection, request)

    return process_request


@contextmanager
def _serve_with(policy: OriginPolicy, started: dict):
    import websockets.asyncio.server as ws_server

    real = ws_server.serve

    def serve(handler, *args, **kwargs):
        started["thread"] = threading.current_thread()
        kwargs["process_request"] = _guarded(policy, kwargs.get("process_request"), started.setdefault("refused", []))
        return real(handler, *args, **kwargs)

    with _PATCH_LOCK:
        ws_server.serve = serve
        try:
            yield
        finally:
            ws_server.serve = real


def check_bindable(host: str, port: int) -> None:
    """ViewerError for a port outside 1..65535 or a host this machine cannot bind."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ViewerError(f"--port must be an integer in 1..65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ViewerError(f"--host {host!r} cannot be resolved ({e})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address[0], 0) + tuple(address[2:]))
        except OSError as e:
            raise ViewerError(f"--host {host!r} cannot be bound on this machine ({e.strerror or e})") from None


def start_viser(host: str, port: int, policy: OriginPolicy, label: str = "splatseg"):
    """(server, refused): a listening `viser.ViserServer` on host:port (or the next free port, as
    viser does) whose every request passes `policy`, and the list the reasons of refused requests
    are appended to. ViewerError (one line) when it cannot start."""
    import viser

    check_bindable(host, port)
    started: dict = {}
    result: dict = {}
    failures: list = []

    def build() -> None:
        try:
            result["server"] = viser.ViserServer(host=host, port=port, label=label, verbose=False)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            result["error"] = e

    previous_hook = threading.excepthook

    def hook(args) -> None:  # viser's thread dying: recorded for the one-line error, not printed
        if args.thread is not None and args.thread is started.get("thread"):
            failures.append(args.exc_value)
        else:
            previous_hook(args)

    with _serve_with(policy, started):
        threading.excepthook = hook
        try:
            builder = threading.Thread(target=build, name="splatseg-viser-start", daemon=True)
            builder.start()
            deadline = time.monotonic() + START_TIMEOUT_S
            while builder.is_alive():
                builder.join(0.05)
                thread = started.get("thread")
                if builder.is_alive() and thread is not None and not thread.is_alive():
                    builder.join(0.5)  # it may have just finished
                    if builder.is_alive():
                        why = f"{type(failures[0]).__name__}: {failures[0]}" if failures else "no port from it upwards could be bound"
                        raise ViewerError(f"the viewer's server could not start on {host}:{port} ({why})")
                if time.monotonic() > deadline:
                    raise ViewerError(f"the viewer's server did not start on {host}:{port} within {START_TIMEOUT_S:.0f} s")
        finally:
            threading.excepthook = previous_hook
    if "error" in result:
        raise result["error"]
    return result["server"], started.setdefault("refused", [])
