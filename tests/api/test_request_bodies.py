"""Request bodies on every POST route: JSON only (else 415), nesting bounded (else 422,
never a 500), ``metadata`` bounded when it is decoded (a 422 that names the bound), and
never a 500 after a commit.

The routes are read from the app (``api.routes.post_routes``), so a new POST route is
held to the same rules without anyone listing it here.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from api.conftest import ClientFactory
from api.routes import PROCESSOR, concrete, json_headers, post_routes, signed_headers
from api.support import Api, assert_problem, resolve_refs
from paycore.api.bodies import MAX_BODY_DEPTH
from paycore.errors import ErrorCode

GOOD = {"id": "t1", "debit_account_id": "a1", "credit_account_id": "a2", "amount": 1,
        "currency": "USD"}  # fmt: skip


def nested(depth: int, leaf: str = "1", *, key: str = "a") -> str:
    """JSON text of objects nested ``depth`` levels (0: the leaf alone)."""
    return f'{{"{key}":' * depth + leaf + "}" * depth


def nested_arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


async def _post_raw(
    client: AsyncTestClient[Any], path: str, body: str | bytes, **headers: str
) -> httpx.Response:
    raw = body.encode() if isinstance(body, str) else body
    return await client.post(path, content=raw, headers={"content-type": "application/json",
                                                         **headers})  # fmt: skip


async def _setup(api: Api) -> None:
    await api.account("a1")
    await api.account("a2")
    await api.ok_transfer("fund", "a2", "a1", 1000)


# -- 1. no 500 after a commit ------------------------------------------------------------


async def test_deep_metadata_is_never_a_500_after_its_transfer_was_committed(api: Api) -> None:
    """An unkeyed transfer whose metadata nests almost as deep as the decoder's stack
    allows used to be decoded and committed, and then its answer overflowed the stack
    while it was rendered: 500, yet the money had moved (and every retry was a 500 too).
    Every depth around that edge is now refused before anything is written."""
    await _setup(api)
    committed_500s: list[int] = []
    answers: dict[int, int] = {}
    moved = 0
    for depth in range(1000, 700, -1):
        body = {**GOOD, "id": f"t{depth}"}
        raw = msgspec.json.encode(body)[:-1] + b',"metadata":' + nested(depth).encode() + b"}"
        response = await _post_raw(api.client, "/v1/transfers", raw)
        answers[depth] = response.status_code
        now = (await api.balance("a2"))["credits_posted"]
        if now != moved and response.status_code >= 500:
            committed_500s.append(depth)
        moved = now
    assert committed_500s == [], f"500 answered after a commit at depths {committed_500s}"
    assert set(answers.values()) == {422}, answers
    assert moved == 0  # nothing was written at any depth


async def test_deep_metadata_is_never_a_500_after_its_account_was_committed(api: Api) -> None:
    """The same for an account: refused (422) before anything is written, at every depth;
    a later account with that id and no metadata is a new one (201), not a clash."""
    answers: dict[int, int] = {}
    for depth in range(1000, 700, -3):
        raw = f'{{"id":"acc{depth}","currency":"USD","metadata":{nested(depth)}}}'
        answers[depth] = (await _post_raw(api.client, "/v1/accounts", raw)).status_code
        again = await api.client.post("/v1/accounts", json={"id": f"acc{depth}", "currency": "USD"})
        assert again.status_code == 201, (depth, answers[depth], again.text)
    assert set(answers.values()) == {422}, answers


async def test_a_retried_deep_request_gets_the_same_422(api: Api) -> None:
    """A refused body is refused the same way each time, keyed or not."""
    await _setup(api)
    raw = f'{{"id":"t9","debit_account_id":"a1","credit_account_id":"a2","amount":1,' \
          f'"currency":"USD","metadata":{nested(975)}}}'  # fmt: skip
    for headers in ({}, {"idempotency-key": "k1"}, {"idempotency-key": "k1"}):
        response = await _post_raw(api.client, "/v1/transfers", raw, **headers)
        assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert (await api.balance("a2"))["credits_posted"] == 0


# -- 2. deep bodies on every POST route ---------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_BODY_DEPTH + 1, 1000, 100_000])
@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
async def test_every_post_route_refuses_a_body_nested_too_deep_with_a_422(
    open_client: ClientFactory, depth: int, keyed: bool
) -> None:
    """A body that nests deeper than MAX_BODY_DEPTH is 422 invalid_request saying so, on
    every POST route, whether the depth is in the body itself or in one of its fields."""
    async with open_client(processors=(PROCESSOR,)) as client:
        await _setup(Api(client))
        routes = post_routes(client.app)
        assert len(routes) >= 12  # accounts, transfers, payments, refunds, payouts, events
        for template in routes:
            path = concrete(template)
            bodies = [nested_arrays(depth), f'{{"metadata":{nested(depth - 1)}}}',
                      f'{{"id":"x","type":"y","extra":{nested_arrays(depth - 1)}}}']  # fmt: skip
            for text in bodies:
                raw = text.encode()
                headers = json_headers(template, raw)
                if keyed:
                    headers["idempotency-key"] = f"deep-{template}"
                response = await client.post(path, content=raw, headers=headers)
                problem = assert_problem(response, ErrorCode.INVALID_REQUEST)
                assert f"deeper than {MAX_BODY_DEPTH} levels" in problem["detail"], (path, problem)
        assert (await Api(client).balance("a2"))["credits_posted"] == 0


async def test_a_body_at_the_depth_bound_is_not_refused_for_its_depth(api: Api) -> None:
    """MAX_BODY_DEPTH itself is allowed (it may be refused for something else)."""
    raw = f'{{"id":"x","currency":"USD","extra":{nested_arrays(MAX_BODY_DEPTH - 1)}}}'
    problem = assert_problem(
        await _post_raw(api.client, "/v1/accounts", raw), ErrorCode.INVALID_REQUEST
    )
    assert "unknown field" in problem["detail"].lower()


# -- 4. JSON only ------------------------------------------------------------------------

NOT_JSON = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "text/json",
    "application/jsonx",
    "application/+json",
    "*/*",
    None,  # a body without a Content-Type
]


async def test_every_post_route_refuses_a_body_that_is_not_json_with_a_415(
    open_client: ClientFactory,
) -> None:
    """A body sent as text, a form, XML or with no type is 415 unsupported_media_type on
    every POST route (after the signature on a processor's route), and changes nothing."""
    async with open_client(processors=(PROCESSOR,)) as client:
        api = Api(client)
        await _setup(api)
        for template in post_routes(client.app):
            path = concrete(template)
            raw = msgspec.json.encode({**GOOD, "id": "t-415"})
            for content_type in NOT_JSON:
                headers = signed_headers(template, raw)
                if content_type is not None:
                    headers["content-type"] = content_type
                response = await client.post(path, content=raw, headers=headers)
                problem = assert_problem(response, ErrorCode.UNSUPPORTED_MEDIA_TYPE)
                assert "application/json" in problem["detail"], problem
        assert (await api.balance("a2"))["credits_posted"] == 0
        missing = await client.get("/v1/transfers/t-415")
        assert_problem(missing, ErrorCode.TRANSFER_NOT_FOUND)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
     "application/json;charset=UTF-8", "application/merge-patch+json",
     "application/vnd.paycore+json; version=1"],
)  # fmt: skip
async def test_json_media_types_are_accepted(api: Api, content_type: str) -> None:
    await _setup(api)
    response = await api.client.post(
        "/v1/transfers", content=msgspec.json.encode(GOOD), headers={"content-type": content_type}
    )
    assert response.status_code == 201, response.text


async def test_an_empty_body_needs_no_content_type(api: Api) -> None:
    """Routes whose body may be absent take an empty one with any (or no) Content-Type."""
    await _setup(api)
    await api.ok_transfer("h1", "a1", "a2", 5, pending=True)
    response = await api.client.post(
        "/v1/transfers/h1/void", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 201, response.text
    await api.account("empty")
    response = await api.client.post("/v1/accounts/empty/close")
    assert response.status_code == 200, response.text


async def test_the_processor_route_checks_the_signature_before_the_media_type(
    open_client: ClientFactory,
) -> None:
    """A forged notification is 401 whatever its type; a signed one sent as text is 415."""
    async with open_client(processors=(PROCESSOR,)) as client:
        raw = b'{"id":"evt_1","type":"a.b"}'
        path = f"/v1/processor_events/{PROCESSOR.name}"
        forged = await client.post(path, content=raw, headers={"content-type": "text/plain"})
        assert_problem(forged, ErrorCode.INVALID_SIGNATURE)
        headers = {**signed_headers("{processor}", raw), "content-type": "text/plain"}
        assert_problem(await client.post(path, content=raw, headers=headers),
                       ErrorCode.UNSUPPORTED_MEDIA_TYPE)  # fmt: skip
        headers["content-type"] = "application/json"
        assert (await client.post(path, content=raw, headers=headers)).status_code == 200


# -- metadata bounds -----------------------------------------------------------------------

KEY40 = "k" * 40


def _deep_meta(levels: int) -> dict[str, Any]:
    """Metadata of ``levels`` levels (the metadata object itself is the first)."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


AT_THE_BOUNDS: dict[str, dict[str, Any]] = {
    "50 keys of 40 characters": {f"{i:02d}{KEY40[2:]}": i for i in range(50)},
    "a string of 500 characters": {"note": "é" * 500},
    "5 levels": _deep_meta(5),
    "an array of 50 items": {"tags": list(range(50))},
    "64-bit integers": {"min": -(2**63), "max": 2**63 - 1, "f": 1.5, "b": True, "z": None},
    "8192 bytes": {"a": "x" * 490, **{f"k{i}": "y" * 490 for i in range(15)}, "pad": "z" * 210},
}

OVER_THE_BOUNDS: dict[str, tuple[dict[str, Any], str]] = {
    "51 keys": ({f"k{i}": i for i in range(51)}, "metadata: 51 keys; at most 50"),
    "51 keys nested": ({"o": {f"k{i}": i for i in range(51)}}, "metadata.o: 51 keys; at most 50"),
    "51 items": ({"tags": list(range(51))}, "metadata.tags: 51 items; at most 50"),
    "a key of 41": ({KEY40 + "x": 1}, "metadata: a key of 41 characters"),
    "a nested key of 41": ({"o": [{KEY40 + "x": 1}]}, "metadata.o[0]: a key of 41 characters"),
    "a string of 501": ({"o": ["x" * 501]}, "metadata.o[0]: a string of 501 characters"),
    "an integer of 2^63": ({"n": 2**63}, "metadata.n: an integer outside -2^63..2^63-1"),
    "an integer below -2^63": ({"n": -(2**63) - 1}, "metadata.n: an integer outside"),
    "6 levels": (_deep_meta(6), "metadata.n.n.n.n.n: nests deeper than 5 levels"),
    "6 levels of arrays": ({"a": [[[[[]]]]]}, "metadata.a[0][0][0][0]: nests deeper than 5 levels"),
    "over 8192 bytes": ({f"k{i}": "y" * 490 for i in range(17)}, "bytes as JSON; at most 8192"),
    "a strange key": ({"o": {"a b": {"c": {"d": {"e": {}}}}}},
                      'metadata.o["a b"].c.d.e: nests deeper than 5 levels'),
}  # fmt: skip


def _targets(meta: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(path, body, where msgspec says the error is) for each way metadata is sent."""
    return [
        ("/v1/accounts", {"id": "m1", "currency": "USD", "metadata": meta}, "$"),
        ("/v1/transfers", {**GOOD, "id": "m2", "metadata": meta}, "$"),
        (
            "/v1/transfers/batch",
            {"transfers": [{**GOOD, "id": "m3"}, {**GOOD, "id": "m4", "metadata": meta}]},
            "$.transfers[1]",
        ),
        ("/v1/transfers/h1/post", {"metadata": meta}, "$"),
        ("/v1/transfers/h2/void", {"metadata": meta}, "$"),
    ]


@pytest.mark.parametrize("name", sorted(OVER_THE_BOUNDS))
async def test_metadata_over_a_bound_is_a_422_that_names_it(api: Api, name: str) -> None:
    """Each bound, broken anywhere metadata is taken, is a 422 naming the place and the
    bound; nothing is written."""
    await _setup(api)
    await api.ok_transfer("h1", "a1", "a2", 5, pending=True)
    await api.ok_transfer("h2", "a1", "a2", 5, pending=True)
    meta, detail = OVER_THE_BOUNDS[name]
    before = await api.balances("a1", "a2")
    for path, body, where in _targets(meta):
        problem = assert_problem(await api.client.post(path, json=body), ErrorCode.INVALID_REQUEST)
        assert detail in problem["detail"], (path, problem["detail"])
        if where != "$":  # msgspec names where a nested value broke a rule
            assert problem["detail"].endswith(f"- at `{where}`"), problem["detail"]
    assert await api.balances("a1", "a2") == before
    assert_problem(await api.client.get("/v1/accounts/m1"), ErrorCode.ACCOUNT_NOT_FOUND)


@pytest.mark.parametrize("name", sorted(AT_THE_BOUNDS))
async def test_metadata_at_the_bounds_is_kept_and_returned_as_sent(api: Api, name: str) -> None:
    meta = AT_THE_BOUNDS[name]
    assert len(msgspec.json.encode(meta)) <= 8192
    await _setup(api)
    await api.ok_transfer("h1", "a1", "a2", 5, pending=True)
    await api.ok_transfer("h2", "a1", "a2", 5, pending=True)
    for path, body, _ in _targets(meta):
        response = await api.client.post(path, json=body)
        assert response.status_code in (200, 201), (path, response.text)
    assert (await api.client.get("/v1/accounts/m1")).json()["metadata"] == meta
    for transfer_id in ("m2", "m4"):
        assert (await api.client.get(f"/v1/transfers/{transfer_id}")).json()["metadata"] == meta


async def test_the_8192_byte_bound_is_exact(api: Api) -> None:
    meta = AT_THE_BOUNDS["8192 bytes"]
    assert len(msgspec.json.encode(meta)) == 8192
    await api.account("fits", metadata=meta)
    over = {**meta, "pad": meta["pad"] + "z"}
    problem = assert_problem(
        await api.client.post("/v1/accounts", json={"id": "over", "currency": "USD",
                                                    "metadata": over}),
        ErrorCode.INVALID_REQUEST,
    )  # fmt: skip
    assert "metadata: 8193 bytes as JSON; at most 8192" in problem["detail"]


async def test_the_metadata_bounds_are_in_the_openapi_schema(api: Api) -> None:
    """Every request body that takes metadata documents its bounds."""
    schema = (await api.client.get("/docs/openapi.json")).json()
    seen = 0
    for path, item in schema["paths"].items():
        operation = item.get("post")
        if operation is None or "requestBody" not in operation:
            continue
        text = msgspec.json.encode(resolve_refs(operation["requestBody"], schema)).decode()
        if '"metadata"' not in text:
            continue
        seen += 1
        for words in (
            "at most 50 keys",
            "at most 40 characters",
            "at most 500 characters",
            "nested at most 5 levels",
            "at most 8192 bytes",
            '"maxProperties":50',
        ):
            assert words in text, (path, words)  # fmt: skip
    assert seen == 5  # accounts, transfers, batch, post, void
