"""The SIP port's admission settings, from [limits], [sip] and the accounts: what the gateway's
SIP transport and the built-in dispatcher (cluster/) both enforce. Kept apart from the
composition root so the dispatcher's process does not import the whole gateway."""

from __future__ import annotations

from callbridge.config.settings import Settings
from callbridge.sip.access import InboundPolicy, parse_networks
from callbridge.sip.overload import GuardConfig

__all__ = ["guard_config", "inbound_policy"]


def guard_config(settings: Settings) -> GuardConfig:
    """[limits] -> the SIP port's admission control. Provider accounts' own networks
    (`allow_from`) are trusted like `limits.trusted`: a trunk's call rate is its business."""
    lim = settings.limits
    trusted = parse_networks(lim.trusted) + tuple(
        net for a in settings.accounts.values() for net in parse_networks(a.allow_from)
    )
    return GuardConfig(
        max_calls=lim.max_calls,
        max_unconfirmed=lim.max_unconfirmed,
        calls_per_second=lim.calls_per_second,
        calls_per_second_per_source=lim.calls_per_second_per_source,
        pike_rate=lim.requests_per_second_per_source,
        ban_time=lim.ban_seconds,
        auth_failures=lim.auth_failures,
        auth_user_failures=lim.auth_user_failures,
        auth_window=lim.auth_window,
        retry_after=lim.retry_after,
        max_loop_lag=lim.max_loop_lag_ms / 1000,
        trusted=trusted,
    )


def inbound_policy(settings: Settings) -> InboundPolicy:
    """sip.allow_from, each account's allow_from (for INVITEs to its username), auth_routes."""
    return InboundPolicy(
        allow_from=parse_networks(settings.sip.allow_from),
        trunk_allow={
            a.username: parse_networks(a.allow_from)
            for a in settings.accounts.values()
            if a.allow_from
        },
        auth_routes=frozenset(r.strip() for r in settings.sip.auth_routes.split(",") if r.strip()),
        proxies=parse_networks(settings.sip.trusted_proxies),
    )
