"""The HTTP ceiling: a raw ASGI app that reads the request body and returns a constant V2 response.

No framework, no JSON parsing, no model. Served by uvicorn (uvloop + httptools, no access log).
"""

from __future__ import annotations

from typing import Any

RESPONSE = (
    b'{"model_name":"m","model_version":"1","outputs":[{"name":"predict","datatype":"INT64","shape":[1],"data":[1]}]}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(RESPONSE)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": RESPONSE})
