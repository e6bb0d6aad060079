"""The hot routes' direct lane answers exactly as FastAPI's routing does, and a route prefix
(``root_path``) does not move a route out of auth's reach."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from noa.build import gateway
from noa.config import parse_config
from noa.http.app import create_app
from noa.http.fast_lane import lanes

KEY = "sk-test-master"
LIMIT = 2048


def app(fast_lane: bool) -> FastAPI:
    config = parse_config({"providers": {"openai": {"kind": "openai"}}})
    service = gateway.inprocess_service(config, {"OPENAI_API_KEY": "sk-x"})
    return create_app(service, master_key=KEY, max_body_bytes=LIMIT, fast_lane=fast_lane)


async def send(
    target: FastAPI,
    body: bytes,
    content_type: str | None = "application/json",
    path: str = "/v1/chat/completions",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"authorization": f"Bearer {KEY}"}
    if content_type is not None:
        headers["content-type"] = content_type
    transport = httpx.ASGITransport(app=target)
    async with httpx.AsyncClient(transport=transport, base_url="http://noa") as client:
        response = await client.post(path, content=body, headers=headers)
    return response.status_code, response.json(), dict(response.headers)


BAD_BODIES = [
    (b"", "application/json"),
    (b"", None),
    (b"{not json", "application/json"),
    (b"[]", "application/json"),
    (b'"text"', "application/json; charset=utf-8"),
    (b'{"model": "m"}', "application/json"),
    (b'{"model": "m", "messages": "hi"}', None),
    (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', "application/json"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": "many"}', None),
    (b'{"model": "m", "messages": []}', "text/plain"),
    (b'{"model": "m", "messages": []}', "application/vnd.api+json"),
    (b"x" * (LIMIT + 1), "application/json"),
    (
        b'{"model": "m", "messages": [{"role": "user"}], "x": ' + b"[" * 300 + b"]" * 300 + b"}",
        "application/json",
    ),
]


@pytest.mark.parametrize(("body", "content_type"), BAD_BODIES)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
async def test_the_lane_refuses_bad_bodies_as_fastapi_does(
    body: bytes, content_type: str | None, path: str
) -> None:
    lane_status, lane_body, lane_headers = await send(app(True), body, content_type, path)
    api_status, api_body, _ = await send(app(False), body, content_type, path)
    assert lane_status == api_status and lane_status in (400, 413)
    lane_error, api_error = lane_body["error"], api_body["error"]
    for field in ("type", "code", "param", "category"):
        assert lane_error[field] == api_error[field], field
    if lane_error["code"] != "invalid_json":  # decoders word their complaints differently
        assert lane_error["message"] == api_error["message"]
    assert lane_error["correlation_id"] == lane_headers["x-correlation-id"]


async def test_the_lane_serves_the_models_list_and_health_like_fastapi() -> None:
    for path in ("/v1/models", "/api/v1/models", "/health"):
        answers = []
        for fast in (True, False):
            transport = httpx.ASGITransport(app=app(fast))
            async with httpx.AsyncClient(transport=transport, base_url="http://noa") as client:
                response = await client.get(path, headers={"authorization": f"Bearer {KEY}"})
            answers.append((response.status_code, response.json()))
        assert answers[0] == answers[1] and answers[0][0] == 200


async def test_a_route_prefix_keeps_every_v1_route_behind_auth() -> None:
    transport = httpx.ASGITransport(app=app(True), root_path="/gw")
    async with httpx.AsyncClient(transport=transport, base_url="http://noa") as client:
        for path in ("/gw/v1/models", "/gw/v1/chat/completions", "/gw/v1/models/openai/x"):
            refused = await client.request("GET" if "models" in path else "POST", path)
            assert refused.status_code == 401, path
        allowed = await client.get("/gw/v1/models", headers={"authorization": f"Bearer {KEY}"})
        assert allowed.status_code == 200
        assert (await client.get("/gw/health")).status_code == 200


def test_only_plain_routes_can_take_the_lane() -> None:
    async def with_query(request: Request, limit: int) -> Response:
        return Response()

    route = APIRoute("/v1/x", with_query, methods=["GET"])
    with pytest.raises(ValueError, match="only a Request and one body model"):
        lanes([route], ["/v1/x"])
    with pytest.raises(ValueError, match="no route for"):
        lanes([route], ["/v1/y"])
