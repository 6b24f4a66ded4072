"""cluster/plan.py: how many workers, the RTP range split, each worker's settings."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.api.forward import CLUSTER_APIS_ENV, CLUSTER_TOKEN_ENV, Forwarding
from callbridge.cluster.plan import (
    internal_apis,
    plan,
    resolve_count,
    split_ports,
    worker_env,
    worker_settings,
)
from callbridge.config.accounts import AccountSettings
from callbridge.config.schema import Settings
from callbridge.config.settings import load_settings
from callbridge.core.errors import ConfigError


def test_split_ports_default_range_in_two() -> None:
    assert split_ports(10000, 20000, 2) == [(10000, 14999), (15000, 20000)]


def test_split_ports_odd_start_is_rounded_up_to_even() -> None:
    assert split_ports(10001, 10012, 2) == [(10002, 10005), (10006, 10012)]


@given(st.integers(1024, 60000), st.integers(0, 5000), st.integers(1, 16))
def test_split_ports_slices_are_disjoint_even_and_inside(low: int, size: int, n: int) -> None:
    high = low + size
    pairs = (high - (low + low % 2) + 1) // 2
    if pairs < n:
        with pytest.raises(ConfigError):
            split_ports(low, high, n)
        return
    slices = split_ports(low, high, n)
    assert len(slices) == n
    used: set[int] = set()
    for lo, hi in slices:
        assert lo % 2 == 0 and low <= lo <= hi <= high
        # what PortAllocator(lo, hi) hands out: even RTP ports below hi, RTCP one above
        ports = {p for rtp in range(lo, hi, 2) for p in (rtp, rtp + 1)}
        assert ports, (lo, hi)
        assert all(p <= high for p in ports)
        assert not ports & used
        used |= ports
    assert slices[-1][1] == high


def test_resolve_count() -> None:
    assert resolve_count(None, "", 8) == 1  # unset: one process, whatever the database
    assert resolve_count(None, "auto", 8) == 8
    assert resolve_count(None, "0", 8) == 8
    assert resolve_count(None, "3", 8) == 3
    assert resolve_count("2", "auto", 8) == 2  # the flag wins
    assert resolve_count("auto", "1", 4) == 4
    with pytest.raises(ConfigError):
        resolve_count("many", "", 4)


def test_the_workers_setting_is_checked() -> None:
    assert load_settings(environ={"CALLBRIDGE_WORKERS": "auto"}).workers == "auto"
    assert load_settings(environ={"CALLBRIDGE_WORKERS": "4"}).workers == "4"
    with pytest.raises(ConfigError, match="workers"):
        load_settings(environ={"CALLBRIDGE_WORKERS": "lots"})


def _settings() -> Settings:
    s = Settings()
    return replace(
        s,
        sip=replace(s.sip, host="0.0.0.0", port=5060, allow_from="198.51.100.0/24"),
        limits=replace(s.limits, max_calls=301, calls_per_second=100.0, trusted="10.0.0.0/8"),
        store=replace(s.store, gateway_id="box"),
        accounts={
            "trunk": AccountSettings(
                name="trunk", registrar="sip:r.example.com", username="u", allow_from="192.0.2.0/24"
            ),
            "other": AccountSettings(name="other", registrar="sip:r.example.com", username="o"),
        },
    )


def test_plan_ports_and_addresses() -> None:
    p = plan(_settings(), 3, advertised="203.0.113.5")
    assert p.public == ("0.0.0.0", 5060)
    assert p.workers == (("127.0.0.1", 5061), ("127.0.0.1", 5062), ("127.0.0.1", 5063))
    assert p.advertised == "203.0.113.5"
    specific = replace(_settings(), sip=replace(_settings().sip, host="10.1.2.3"))
    assert plan(specific, 2).workers == (("10.1.2.3", 5061), ("10.1.2.3", 5062))
    assert plan(specific, 2).advertised == "10.1.2.3"
    with pytest.raises(ConfigError):
        plan(replace(_settings(), sip=replace(_settings().sip, port=0)), 2)


def test_worker_settings() -> None:
    s = _settings()
    p = plan(s, 2, advertised="203.0.113.5")
    w0, w1 = (worker_settings(s, i, p, cpus=4) for i in range(2))
    assert (w0.sip.port, w1.sip.port) == (5061, 5062)
    assert w0.sip.host == w1.sip.host == "0.0.0.0"
    assert w0.sip.public_host == "203.0.113.5"  # Contact and SDP: what callers reach
    assert (w0.rtp.port_min, w0.rtp.port_max, w1.rtp.port_min, w1.rtp.port_max) == (
        10000, 14999, 15000, 20000,
    )  # fmt: skip
    assert w0.http == s.http and w1.http.enabled == "false"  # one public HTTP endpoint
    assert (w0.limits.max_calls, w0.limits.calls_per_second) == (151, 50.0)
    assert w0.limits.trusted == "10.0.0.0/8, 127.0.0.0/8"
    # the dispatcher checks the real sources; a worker sees only the dispatcher
    assert w0.sip.allow_from == "198.51.100.0/24, 127.0.0.0/8"
    assert w0.accounts["trunk"].allow_from == "192.0.2.0/24, 127.0.0.0/8"
    assert w0.accounts["other"].allow_from == ""
    # one registration per account, by worker 0
    assert [w.accounts["trunk"].register for w in (w0, w1)] == [True, False]
    assert (w0.store.gateway_id, w1.store.gateway_id) == ("box/w0", "box/w1")
    assert w0.stt.workers == 2  # the machine's cores shared, not one pool per worker each
    assert w0.workers == "1"
    with pytest.raises(ConfigError):
        worker_settings(s, 2, p, cpus=4)


def test_unlimited_stays_unlimited_and_no_acl_stays_open() -> None:
    s = Settings()
    w = worker_settings(s, 1, plan(s, 2, advertised="192.0.2.1"), cpus=2)
    assert w.limits.max_calls == 0 and w.sip.allow_from == ""
    assert w.store.gateway_id.endswith(":5060/w1")


def test_with_the_runs_secret_every_worker_serves_its_api_on_loopback() -> None:
    s = replace(
        _settings(), api_token="public", http=replace(_settings().http, tls_cert="c", tls_key="k")
    )
    p = plan(s, 3, advertised="203.0.113.5", token="secret")
    assert p.apis == (None, ("127.0.0.1", 8082), ("127.0.0.1", 8083))
    assert "secret" not in repr(p)
    w0, w1, w2 = (worker_settings(s, i, p, cpus=4) for i in range(3))
    assert w0.http == s.http and w0.api_token == "public"  # the public endpoint, as before
    assert w0.webrtc.enabled
    for w, port in ((w1, 8082), (w2, 8083)):
        assert (w.http.host, w.http.port, w.http.enabled) == ("127.0.0.1", port, "true")
        assert (w.http.tls_cert, w.http.tls_key) == ("", "")  # loopback: plain HTTP
        assert w.api_token == "secret"  # the internal API takes the run's secret only
        assert not w.webrtc.enabled  # the softphone's calls are worker 0's
    assert "secret" not in repr(w1)


def test_worker_0_is_told_where_the_others_are_by_their_names_in_the_database() -> None:
    s = _settings()
    p = plan(s, 3, advertised="203.0.113.5", token="secret")
    env0, env1 = worker_env(s, 0, p), worker_env(s, 1, p)
    assert env1 == {CLUSTER_TOKEN_ENV: "secret"}
    assert env0[CLUSTER_TOKEN_ENV] == "secret"
    fw = Forwarding.from_environ(env0)
    assert fw is not None and fw.token == "secret"
    # each worker's gateway id (what its call rows carry) -> where its API listens
    expect = {}
    for i in (1, 2):
        w = worker_settings(s, i, p, cpus=4)
        expect[w.store.gateway_id] = f"http://{w.http.host}:{w.http.port}"
    assert (
        dict(fw.apis)
        == expect
        == {
            "box/w1": "http://127.0.0.1:8082",
            "box/w2": "http://127.0.0.1:8083",
        }
    )
    assert Forwarding.from_environ(env1) is None  # only worker 0 forwards


def test_a_worker_takes_the_secret_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings()
    monkeypatch.setenv(CLUSTER_TOKEN_ENV, "from-supervisor")
    p = plan(s, 2, advertised="203.0.113.5")
    assert p.token == "from-supervisor" and p.apis[1] == ("127.0.0.1", 8082)
    assert worker_settings(s, 1, p, cpus=2).api_token == "from-supervisor"
    monkeypatch.delenv(CLUSTER_TOKEN_ENV)
    # started by hand, without a supervisor's secret: no internal API, as before
    p = plan(s, 2, advertised="203.0.113.5")
    assert p.apis == (None, None) and worker_env(s, 0, p) == {}
    assert worker_settings(s, 1, p, cpus=2).http.enabled == "false"


def test_no_internal_apis_when_worker_0_serves_no_fixed_http_port() -> None:
    s = _settings()
    off = replace(s, http=replace(s.http, enabled="false"))
    ephemeral = replace(s, http=replace(s.http, port=0))
    quiet = replace(s, http=replace(s.http, host="0.0.0.0", enabled="auto"))  # nothing needs it
    for settings in (off, ephemeral, quiet):
        p = plan(settings, 2, advertised="203.0.113.5", token="secret")
        assert p.apis == (None, None)
        w1 = worker_settings(settings, 1, p, cpus=2)
        assert w1.http.enabled == "false"
        assert CLUSTER_APIS_ENV not in worker_env(settings, 0, p)
    assert internal_apis(replace(s, http=replace(s.http, port=65533)), 2, "x")[1] == (
        "127.0.0.1",
        65535,
    )
    with pytest.raises(ConfigError, match=r"http\.port"):
        internal_apis(replace(s, http=replace(s.http, port=65534)), 2, "x")
