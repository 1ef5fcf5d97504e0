"""lore's MCP server through the official MCP Python SDK (`mcp`), over both
transports: `lore mcp` on stdio and POST /mcp on `lore serve`.

Usage: mcp_client.py LORE_BIN INDEX URL HR_KEY PLAIN_KEY

INDEX holds the tiny corpus plus `secret.md`, readable only by the `hr`
group; URL is the /mcp endpoint of a `lore serve` of a copy of that index
with keys required; HR_KEY is a read key in the group `hr`, PLAIN_KEY one in
no group.
"""

import asyncio
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

TOOLS = ["ask", "get_document", "get_passage", "list_collections", "search"]
SECRET = "wolframite"


def fail(message):
    print(f"mcp: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


async def search(client, query, **more):
    result = await client.call_tool("search", {"query": query, **more})
    expect(not result.is_error, f"search failed: {result.content}")
    return result.structured_content["hits"]


async def check(client, label, reads_secret):
    """Every tool called once, the access list, and bad arguments."""
    tools = (await client.list_tools()).tools
    expect(sorted(t.name for t in tools) == TOOLS, f"{label}: tools {[t.name for t in tools]}")
    for tool in tools:
        expect(len(tool.description or "") > 60, f"{label}: {tool.name} is not described")
        expect(tool.input_schema.get("type") == "object", f"{label}: {tool.name} schema")

    collections = await client.call_tool("list_collections", {})
    names = [c["name"] for c in collections.structured_content["collections"]]
    expect("default" in names, f"{label}: collections {names}")

    hits = await search(client, "At what temperature do light roasts reach first crack?", k=3)
    expect(hits and "roasting.md" in hits[0]["path"], f"{label}: search found {hits[:1]}")
    expect(len(hits) <= 3, f"{label}: k=3 gave {len(hits)} hits")
    best = hits[0]

    passage = await client.call_tool("get_passage", {"id": best["chunk_id"]})
    expect(not passage.is_error, f"{label}: get_passage {passage.content}")
    expect("196" in passage.structured_content["text"], f"{label}: passage text")

    document = await client.call_tool("get_document", {"id": best["doc_id"]})
    expect(not document.is_error, f"{label}: get_document {document.content}")
    doc = document.structured_content
    expect("Probat" in doc["text"] and "humidity" in doc["text"], f"{label}: document text")
    expect(doc["next_offset"] is None, f"{label}: a short document has one page")

    answer = await client.call_tool(
        "ask", {"question": "At what temperature do light roasts reach first crack?"}
    )
    expect(not answer.is_error, f"{label}: ask failed: {answer.content}")
    body = answer.structured_content
    expect("abstained" in body and "support" in body, f"{label}: ask fields {sorted(body)}")
    if not body["abstained"]:
        expect(body["citations"], f"{label}: an answer without citations: {body['answer']}")
        for citation in body["citations"]:
            expect(citation["path"] and citation["chunk_id"], f"{label}: citation {citation}")

    # The access list: the secret document exists for `hr` only, through
    # every door (search, resources, get_document, get_passage).
    secret_hits = [h for h in await search(client, f"{SECRET} salary band", k=10) if SECRET in h["text"]]
    expect(bool(secret_hits) == reads_secret, f"{label}: secret in search = {bool(secret_hits)}")
    resources = (await client.list_resources()).resources
    expect(resources, f"{label}: no resources")
    secret_uris = [str(r.uri) for r in resources if "secret" in r.name]
    expect(bool(secret_uris) == reads_secret, f"{label}: secret resource listed = {secret_uris}")
    roasting = next(r for r in resources if "roasting" in r.name)
    contents = (await client.read_resource(str(roasting.uri))).contents
    expect("Probat" in contents[0].text, f"{label}: resource text")
    # Bad arguments are tool errors with a reason, and the server goes on.
    for args in [{"query": "x", "k": "many"}, {"query": "x", "k": 0}, {"qeury": "x"}, {"query": "x", "collections": ["nope"]}]:
        result = await client.call_tool("search", args)
        expect(result.is_error, f"{label}: search {args} was not an error")
        expect(result.content and result.content[0].text, f"{label}: error without a reason")
    result = await client.call_tool("get_document", {"id": "no-such-document"})
    expect(result.is_error and "not_found" in result.content[0].text, f"{label}: missing doc {result}")
    result = await client.call_tool("get_document", {"id": best["doc_id"], "offset": 10**9})
    expect(result.is_error, f"{label}: an offset past the end was accepted")
    expect(await search(client, "roasting"), f"{label}: the server did not go on")
    if reads_secret:
        secret = secret_hits[0]
        text = (await client.read_resource(secret_uris[0])).contents[0].text
        expect(SECRET in text, f"{label}: the secret resource reads")
        return secret["doc_id"], secret["chunk_id"]
    return None


async def main():
    lore, index, url, hr_key, plain_key = sys.argv[1:6]

    stdio = StdioServerParameters(command=lore, args=["--index", index, "mcp"])
    async with Client(stdio) as client:
        await check(client, "stdio", reads_secret=True)
    print("mcp: stdio passed")

    def http(key):
        headers = {"Authorization": f"Bearer {key}"}
        return streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=300))

    async with Client(http(hr_key)) as client:
        secret_doc, secret_chunk = await check(client, "http hr", reads_secret=True)
    async with Client(http(plain_key)) as client:
        await check(client, "http plain", reads_secret=False)
        # Ids learnt elsewhere do not open the document either.
        for tool, args in [("get_document", {"id": secret_doc}), ("get_passage", {"id": secret_chunk})]:
            result = await client.call_tool(tool, args)
            expect(result.is_error and "not_found" in result.content[0].text, f"{tool} of the secret: {result}")
        result = await client.call_tool("ask", {"question": "What is the salary band?", "document": secret_doc})
        expect(result.is_error and "not_found" in result.content[0].text, f"ask over the secret: {result}")
        uri = f"lore://default/{secret_doc}"
        try:
            await client.read_resource(uri)
            fail("the secret resource was read without the group")
        except Exception as err:  # the SDK raises the server's JSON-RPC error
            expect(SECRET not in str(err), f"the refusal leaks: {err}")
    print("mcp: http passed")

    # No key, a wrong key: refused before any tool runs.
    for headers in [{}, {"Authorization": "Bearer wrong"}]:
        async with httpx2.AsyncClient(headers=headers) as raw:
            response = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            expect(response.status_code == 401, f"no key: {response.status_code}")
    print("mcp: unauthenticated requests refused")


asyncio.run(main())
