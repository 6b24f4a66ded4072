"""Answering digest challenges for one request (RFC 3261 §22.2, §22.3), sans-IO.

The INVITE client and the registration both resend their request with credentials after a
401/407 and both must stop when the credentials are refused rather than loop; this is that
shared rule. The digest arithmetic itself lives in digest.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.sip.digest import (
    AuthHeader,
    DigestClient,
    DigestError,
    UnsupportedChallenge,
    select_challenge,
)
from callbridge.sip.message import SipResponse

MAX_CHALLENGES = 3  # per request: proxy + registrar/UAS + one stale nonce; more is a loop


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """Do not answer this challenge; `detail` says why, for people."""

    detail: str


class ChallengeAnswerer:
    """Answers the challenges to one request (one INVITE, one registration attempt)."""

    def __init__(self, client: DigestClient) -> None:
        self.client = client
        self._answered: set[str] = set()  # nonces we answered
        self._count = 0

    def reset(self) -> None:
        """A new attempt: the nonces answered before say nothing about it."""
        self._answered.clear()
        self._count = 0

    def answer(self, response: SipResponse, method: str, uri: str) -> AuthHeader | AuthRefused:
        try:
            challenge = select_challenge(response)
        except UnsupportedChallenge as exc:
            return AuthRefused(f"unsupported challenge: {exc}")
        except DigestError as exc:
            return AuthRefused(f"unreadable challenge: {exc}")
        # §22.2/§22.3: credentials for this very nonce were refused, and the nonce is not merely
        # stale: the password (or username) is wrong. Retrying would only loop.
        if (
            challenge.nonce in self._answered and not challenge.stale
        ) or self._count >= MAX_CHALLENGES:
            return AuthRefused(f"authentication rejected ({response.status} {response.reason})")
        self._answered.add(challenge.nonce)
        self._count += 1
        return self.client.authorize(challenge, method, uri)


__all__ = ["MAX_CHALLENGES", "AuthRefused", "ChallengeAnswerer"]
