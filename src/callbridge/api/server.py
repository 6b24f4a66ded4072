"""The HTTP server: uvicorn inside the gateway's event loop (one process, one loop, one clock).

The listening socket is bound here, so a busy port fails `start()` with OSError like the SIP
port does (uvicorn itself would sys.exit). uvicorn's signal handling is switched off: the
gateway owns SIGINT/SIGTERM and stops the server as part of its graceful shutdown.

`ws_max_size` is uvicorn's limit on one incoming WebSocket message (its default is 16 MiB): set
to the Twilio stream's message limit, the server refuses a bigger frame from its header (close
1009) before buffering it; the leg checks again (mediastream.inbound.InboundGuard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from callbridge.core.log import event
from callbridge.twilio_streams.inbound import MAX_MESSAGE_BYTES

__all__ = ["HttpServer"]

log = logging.getLogger("callbridge.api")

_STARTUP_TIMEOUT = 10.0


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the gateway handles signals


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class HttpServer:
    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        shutdown_timeout: int = 3,
        ws_max_size: int = MAX_MESSAGE_BYTES,
        *,
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self.ws_max_size = ws_max_size
        self.tls = tls  # (certificate, key) PEM paths: https:// and wss://
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        """Listen; returns once requests are served. Raises OSError if the port is taken."""
        self._sock = _bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=self.shutdown_timeout,
            ws_max_size=self.ws_max_size,
            ssl_certfile=self.tls[0] if self.tls else None,
            ssl_keyfile=self.tls[1] if self.tls else None,
        )
        server = self._server = _EmbeddedServer(config)
        self._task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[self._sock]), name="http"
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STARTUP_TIMEOUT
        # uvicorn has no startup event to await: look each loop turn, bounded.
        while not server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError(f"HTTP server on {self.host}:{self.port} did not start")
            if loop.time() > deadline:
                raise OSError(f"HTTP server on {self.host}:{self.port} did not start in time")
            await asyncio.sleep(0.005)
        event(log, "http.listening", host=self.host, port=self.port, tls=self.tls is not None)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            async with asyncio.timeout(self.shutdown_timeout + 2):
                await self._task
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            if self._sock is not None:
                self._sock.close()
        self._server = None
