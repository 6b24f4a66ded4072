"""What each worker of `callbridge serve --workers N` gets: how many workers, which SIP port
and RTP port slice, which settings differ from the operator's. Pure functions of the settings,
so the supervisor and each worker (which computes its own from its index) agree.

Layout for `sip.port = 5060`, `rtp.port_min/max = 10000/20000`, N = 2:

    dispatcher  :5060 (public)     worker 0  :5061  RTP 10000-14999  HTTP :8080 (the public API)
                                   worker 1  :5062  RTP 15000-20000  HTTP 127.0.0.1:8082

Worker i > 0 serves its own API on loopback (`http.port + 1 + i`, the run's secret as its
bearer token) for worker 0 to forward actions on its live calls to (api/forward.py).
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field, replace

from callbridge.api.forward import CLUSTER_APIS_ENV, CLUSTER_TOKEN_ENV, encode_apis
from callbridge.config.schema import Settings, http_wanted, is_loopback
from callbridge.core.errors import ConfigError
from callbridge.transports.sip.config import is_wildcard, local_address_towards

__all__ = [
    "ClusterPlan",
    "advertised_host",
    "cpu_count",
    "internal_apis",
    "plan",
    "resolve_count",
    "split_ports",
    "worker_apis",
    "worker_env",
    "worker_gateway_id",
    "worker_settings",
]

Addr = tuple[str, int]


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask: a container's or taskset's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_count(flag: str | None, setting: str, cpus: int) -> int:
    """The number of gateway processes: the flag wins over the setting; "auto" or 0 is one
    per core; unset is 1. Not one per core by default: the quick start (SQLite, local speech
    models that every worker loads again: +67 % memory for two) stays one process, and so
    does each unit of a deployment that already runs one gateway per core behind Kamailio
    (deploy/: their PostgreSQL URL must not turn every unit into N workers)."""
    raw = (flag if flag is not None else setting).strip().lower()
    if raw == "":
        return 1
    if raw == "auto":
        return cpus
    if not (raw.isascii() and raw.isdigit()):
        raise ConfigError("workers", f'must be "auto" or a number, got {raw!r}')
    return cpus if int(raw) == 0 else int(raw)


def split_ports(low: int, high: int, count: int) -> list[tuple[int, int]]:
    """The RTP range cut into `count` disjoint slices, each starting on an even port (RTP
    even, RTCP the odd port above it: RFC 3550 §11), the last one ending at `high`."""
    if count < 1:
        raise ValueError("count must be at least 1")
    start = low + (low % 2)
    pairs = (high - start + 1) // 2
    if pairs < count:
        raise ConfigError(
            "rtp.port_min",
            f"the RTP range {low}-{high} has {max(pairs, 0)} port pairs, fewer than the "
            f"{count} workers",
        )
    per = pairs // count
    out: list[tuple[int, int]] = []
    for i in range(count):
        lo = start + 2 * per * i
        hi = high if i == count - 1 else lo + 2 * per - 1
        out.append((lo, hi))
    return out


def advertised_host(settings: Settings) -> str:
    """Where callers reach this machine: written into the dispatcher's Via and Record-Route
    and every worker's Contact and SDP (the workers see only the dispatcher's loopback
    address, so they cannot learn it per call as a lone gateway does)."""
    s = settings.sip
    if s.public_host:
        return s.public_host
    if not is_wildcard(s.host):
        return s.host
    return local_address_towards("192.0.2.1")  # the default route's address


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    count: int
    public: Addr  # the dispatcher's socket (the configured sip.host and sip.port)
    advertised: str  # our address as callers see it
    workers: tuple[Addr, ...]  # where the dispatcher reaches each worker
    token: str = field(default="", repr=False)  # the run's secret for the internal APIs
    # each worker's internal API (None: worker 0, whose API is the public one, or none at all)
    apis: tuple[Addr | None, ...] = ()


def plan(
    settings: Settings, count: int, advertised: str | None = None, token: str | None = None
) -> ClusterPlan:
    """`token`: the run's secret (the supervisor makes one); None = the one the supervisor
    passed to this worker in its environment ("" outside a cluster: no internal APIs)."""
    s = settings.sip
    if s.port == 0 or s.port + count > 65535:
        raise ConfigError("sip.port", f"{s.port} leaves no room for {count} worker ports above it")
    host = "127.0.0.1" if is_wildcard(s.host) else s.host
    secret = os.environ.get(CLUSTER_TOKEN_ENV, "") if token is None else token
    return ClusterPlan(
        count=count,
        public=(s.host, s.port),
        advertised=advertised if advertised is not None else advertised_host(settings),
        workers=tuple((host, s.port + 1 + i) for i in range(count)),
        token=secret,
        apis=internal_apis(settings, count, secret),
    )


def internal_apis(settings: Settings, count: int, token: str) -> tuple[Addr | None, ...]:
    """Worker i > 0's API on 127.0.0.1:`http.port + 1 + i`, when worker 0 serves the public
    one on a fixed port and there is a secret to guard them with; otherwise none (worker 0
    could not reach an ephemeral port, and an API without a token is not served)."""
    h = settings.http
    if not token or h.port == 0 or not http_wanted(settings):
        return (None,) * count
    if h.port + count > 65535:
        raise ConfigError(
            "http.port", f"{h.port} leaves no room for {count - 1} worker API ports above it"
        )
    return (None, *(("127.0.0.1", h.port + 1 + i) for i in range(1, count)))


def worker_gateway_id(settings: Settings, index: int) -> str:
    """Worker `index`'s name in the shared database (each call row carries it)."""
    base_id = settings.store.gateway_id or f"{socket.gethostname()}:{settings.sip.port}"
    return f"{base_id}/w{index}"


def worker_apis(settings: Settings, the_plan: ClusterPlan) -> dict[str, str]:
    """What worker 0 forwards to: gateway id -> the base URL of that worker's internal API."""
    return {
        worker_gateway_id(settings, i): f"http://{a[0]}:{a[1]}"
        for i, a in enumerate(the_plan.apis)
        if a is not None
    }


def worker_env(settings: Settings, index: int, the_plan: ClusterPlan) -> dict[str, str]:
    """What the supervisor adds to worker `index`'s environment: the run's secret, and for
    worker 0 the other workers' internal APIs (api/forward.py)."""
    env = {CLUSTER_TOKEN_ENV: the_plan.token} if the_plan.token else {}
    apis = worker_apis(settings, the_plan)
    if index == 0 and apis:
        env[CLUSTER_APIS_ENV] = encode_apis(apis)
    return env


def worker_settings(settings: Settings, index: int, the_plan: ClusterPlan, cpus: int) -> Settings:
    """The settings of worker `index`: its own SIP port and RTP slice, the advertised host,
    1/N of the global admission limits, the dispatcher trusted and allowed (every call
    arrives from it; the dispatcher applies sip.allow_from and the per-source limits with the
    real source),
    the public HTTP on worker 0 only (the others: their internal API, or none), its own name
    in the shared database."""
    n = the_plan.count
    if not 0 <= index < n:
        raise ConfigError("worker index", f"{index} is not in 0..{n - 1}")
    lo, hi = split_ports(settings.rtp.port_min, settings.rtp.port_max, n)[index]
    host, port = the_plan.workers[index]
    dispatcher_nets = "127.0.0.0/8" if is_loopback(host) else f"127.0.0.0/8, {host}/32"
    lim = settings.limits
    trusted = f"{lim.trusted}, {dispatcher_nets}" if lim.trusted.strip() else dispatcher_nets
    limits = replace(
        lim,
        max_calls=math.ceil(lim.max_calls / n),
        max_unconfirmed=math.ceil(lim.max_unconfirmed / n),
        calls_per_second=lim.calls_per_second / n,
        trusted=trusted,
    )
    sip = replace(
        settings.sip,
        port=port,
        public_host=the_plan.advertised,
        allow_from=_plus(settings.sip.allow_from, dispatcher_nets),
        # the dispatcher is our proxy: call records name the caller behind it
        trusted_proxies=", ".join(
            x for x in (settings.sip.trusted_proxies, dispatcher_nets) if x.strip()
        ),
    )
    # Only worker 0 registers with providers: N registrations of one address-of-record with
    # N Contacts would make a provider fork each call to every worker (or keep the last).
    # Its Contact is its own port, so a registering provider's calls reach worker 0
    # directly, from the provider's own addresses (still allowed).
    accounts = {
        name: replace(
            a,
            allow_from=_plus(a.allow_from, dispatcher_nets),
            register=a.register and index == 0,
        )
        for name, a in settings.accounts.items()
    }
    api = the_plan.apis[index] if the_plan.apis else None
    http, token, webrtc = settings.http, settings.api_token, settings.webrtc
    if index > 0 and api is None:
        http = replace(http, enabled="false")
    elif api is not None:
        # The API only, for worker 0: on loopback, plain HTTP, the run's secret; the
        # softphone's calls (WebRTC) all land on worker 0, whose page they come from.
        http = replace(http, host=api[0], port=api[1], enabled="true", tls_cert="", tls_key="")
        token = the_plan.token
        webrtc = replace(webrtc, enabled=False)
    stt = settings.stt
    if stt.workers == 0:  # "one per core" was meant for the machine, not for each worker
        stt = replace(stt, workers=max(1, min(8, cpus) // n))
    return replace(
        settings,
        workers="1",
        api_token=token,
        sip=sip,
        rtp=replace(settings.rtp, port_min=lo, port_max=hi),
        limits=limits,
        http=http,
        webrtc=webrtc,
        stt=stt,
        accounts=accounts,
        store=replace(settings.store, gateway_id=worker_gateway_id(settings, index)),
    )


def _plus(networks: str, dispatcher: str) -> str:
    """An allow_from list with the dispatcher's address added; "" (anyone) stays ""."""
    return f"{networks}, {dispatcher}" if networks.strip() else ""
