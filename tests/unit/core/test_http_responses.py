"""core.http_responses: a read httpx response goes by reference counting once let go."""

from __future__ import annotations

import gc
import weakref

import httpx

from callbridge.core.http_responses import let_go


def handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"ok": True})


async def response_left_alive(release: bool) -> bool:
    """Whether a read response outlives its last reference (held by a reference cycle)."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        gc.collect()
        gc.disable()
        try:
            response = await client.post("http://example.invalid/hook", json={"a": 1})
            assert response.json() == {"ok": True}
            if release:
                let_go(response)
                assert response.json() == {"ok": True}  # still readable after
            ref = weakref.ref(response)
            del response
            return ref() is not None
        finally:
            gc.enable()


async def test_a_read_response_is_held_by_its_own_stream_until_let_go() -> None:
    assert await response_left_alive(release=False)  # httpx's cycle (encode/httpx#3733)
    assert not await response_left_alive(release=True)


async def test_a_closed_stream_let_go_after_its_block() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        gc.collect()
        gc.disable()
        try:
            async with client.stream("GET", "http://example.invalid/") as response:
                body = await response.aread()
            let_go(response)
            ref = weakref.ref(response)
            del response
            assert ref() is None
        finally:
            gc.enable()
    assert body == b'{"ok":true}'


def test_none_is_nothing_to_let_go() -> None:
    let_go(None)
