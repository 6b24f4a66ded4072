"""`serve --workers N`: worker 0's public API hands a live-call action on another worker's
call to that worker's internal API (loopback, the cluster's bearer token) and returns its
answer as it is.

Only the worker that holds a call has its live object (leg, agent). The supervisor gives every
worker a secret for the run (`CLUSTER_TOKEN_ENV`) and worker 0 the internal API of each other
worker, by the name its calls carry in the shared database (`CLUSTER_APIS_ENV`, JSON
`{gateway_id: base_url}`). A forwarded request carries `FORWARDED_HEADER`; a request that
carries it is never forwarded again, so a worker that no longer holds the call answers as
without workers (409/404) rather than bouncing it. Without these variables (a lone gateway)
there is no `Forwarding` and nothing changes.

This module is imported by the supervisor for its names: httpx and Starlette load on first use.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx
    from starlette.requests import Request
    from starlette.responses import Response

    from callbridge.store.db import CallDb

__all__ = [
    "CLUSTER_APIS_ENV",
    "CLUSTER_TOKEN_ENV",
    "DEADLINE_S",
    "FORWARDED_HEADER",
    "TRANSFER_DEADLINE_S",
    "Forwarding",
    "encode_apis",
    "live_gateway",
]

CLUSTER_TOKEN_ENV = "CALLBRIDGE_CLUSTER_TOKEN"  # a secret: never logged
CLUSTER_APIS_ENV = "CALLBRIDGE_CLUSTER_APIS"
FORWARDED_HEADER = "x-callbridge-forwarded"
DEADLINE_S = 5.0
# A blind transfer answers once the REFER's outcome is known (the target answered or
# refused: RFC 3515 §2.4.5 NOTIFYs), which takes as long as the target rings.
TRANSFER_DEADLINE_S = 60.0


def encode_apis(apis: Mapping[str, str]) -> str:
    """The value of `CLUSTER_APIS_ENV`: gateway id -> its internal API's base URL."""
    return json.dumps(dict(apis), sort_keys=True)


async def live_gateway(db: CallDb, call_id: str) -> str | None:
    """The gateway id that wrote `call_id` while the call is live in the database; None when
    it is unknown or ended."""
    return await db.live_gateway(call_id)


@dataclass(frozen=True, slots=True)
class Forwarding:
    apis: Mapping[str, str]  # gateway id -> base URL ("http://127.0.0.1:8082")
    token: str = field(repr=False)
    deadline: float = DEADLINE_S
    transfer_deadline: float = TRANSFER_DEADLINE_S
    transport: httpx.AsyncBaseTransport | None = None  # tests: httpx.MockTransport

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Forwarding | None:
        """What the supervisor gave worker 0; None for any other process (no forwarding)."""
        env = os.environ if environ is None else environ
        token = env.get(CLUSTER_TOKEN_ENV, "")
        raw = env.get(CLUSTER_APIS_ENV, "")
        if not token or not raw:
            return None
        try:
            apis = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(apis, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in apis.items()
        ):
            return None
        return cls(apis, token) if apis else None

    def target(self, request: Request, gateway_id: str | None) -> str | None:
        """The base URL to forward `request` to; None: answer it here."""
        if gateway_id is None or FORWARDED_HEADER in request.headers:
            return None
        return self.apis.get(gateway_id)

    async def forward(self, request: Request, gateway_id: str, base: str) -> Response:
        """The worker's answer to the same request (method, path, query, body), status and
        body unchanged; 503 when it does not answer in time, 502 when it refuses our token."""
        import httpx
        from starlette.responses import JSONResponse, Response

        worker = gateway_id.rsplit("/", 1)[-1]
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else request.url.path
        query = request.scope.get("query_string", b"").decode("latin-1")
        url = f"{base}{path}?{query}" if query else f"{base}{path}"
        headers = {"authorization": f"Bearer {self.token}", FORWARDED_HEADER: "1"}
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        body = await request.body()  # bounded by the app's BodyLimit
        deadline = self.transfer_deadline if path.endswith("/transfer") else self.deadline
        try:
            async with (
                asyncio.timeout(deadline),
                # trust_env off: a proxy from HTTP_PROXY must not stand between two workers
                httpx.AsyncClient(
                    transport=self.transport, timeout=deadline, trust_env=False
                ) as client,
            ):
                answer = await client.request(request.method, url, headers=headers, content=body)
        except (TimeoutError, httpx.TimeoutException):
            return _unavailable(worker, gateway_id, f"did not answer within {deadline:g} s")
        except httpx.HTTPError as exc:
            return _unavailable(worker, gateway_id, f"did not answer ({type(exc).__name__})")
        if answer.status_code == 401:
            return JSONResponse(
                {"error": f"worker {worker} ({gateway_id}) refused the cluster's token",
                 "worker": worker},
                status_code=502,
            )  # fmt: skip
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )


def _unavailable(worker: str, gateway_id: str, what: str) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(
        {"error": f"the call is on worker {worker} ({gateway_id}), which {what}", "worker": worker},
        status_code=503,
    )
