"""A small MCP server for the gateway's tests, on the official MCP Python
SDK: a trivial tool, a slow one that reports progress, one that asks the
client (elicitation), one that crashes its process, one that shows the HTTP
headers it received, resources (and a template), a prompt with completions,
and a log level.

usage: server.py                  (stdio)
       server.py --http PORT      (streamable HTTP on 127.0.0.1:PORT/mcp)
       server.py --modern PORT    (the same, speaking only 2026-07-28: a
                                   session-era request is refused)"""
import os
import sys

import anyio
from pydantic import BaseModel
from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("mandate-test-server")


@mcp.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


@mcp.tool()
async def slow(steps: int = 3, delay: float = 0.2, ctx: Context = None) -> str:
    """Sleep `steps` times, reporting progress each step."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        await anyio.sleep(delay)
    return f"done after {steps} steps"


class Answer(BaseModel):
    name: str


@mcp.tool()
async def ask(ctx: Context) -> str:
    """Ask the client for a name (elicitation)."""
    r = await ctx.elicit("What is your name?", Answer)
    return f"hello {getattr(r, 'data', None) and r.data.name}"


@mcp.tool()
async def roots(ctx: Context) -> str:
    """The client's roots, if it will say."""
    try:
        r = await ctx.session.list_roots()
        return "roots: " + ", ".join(str(x.uri) for x in r.roots)
    except Exception as e:  # noqa: BLE001 - the answer is the test's evidence
        return f"no roots: {e}"


@mcp.tool()
def crash() -> str:
    """Ends this server's process at once."""
    sys.stdout.flush()
    os._exit(3)


@mcp.tool()
def refund(invoice: str, amount: int) -> str:
    """Refund `amount` on an invoice."""
    return f"refunded {amount} on {invoice}"


@mcp.tool()
def sleeper() -> str:
    """Starts a long `sleep` (which never reads stdin); its process id."""
    import subprocess
    p = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return str(p.pid)


@mcp.tool()
def pid() -> str:
    """This server's process id."""
    return str(os.getpid())


@mcp.tool()
def headers(ctx: Context) -> str:
    """The HTTP headers of this request (streamable HTTP only)."""
    import json
    return json.dumps({k.lower(): v for k, v in (ctx.headers or {}).items()})


from typing import Annotated  # noqa: E402

from pydantic import Field  # noqa: E402


@mcp.tool()
def region(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
           ctx: Context) -> str:
    """Names a region, which also travels as the Mcp-Param-Region header."""
    return f"region={region}; header={(ctx.headers or {}).get('mcp-param-region')}"


@mcp.resource("notes://public")
def public_notes() -> str:
    """Notes anyone may read."""
    return "public notes"


@mcp.resource("notes://secret")
def secret_notes() -> str:
    """Notes nobody may read."""
    return "secret notes"


@mcp.prompt()
def summary(topic: str) -> str:
    """Summarise a topic."""
    return f"Summarise {topic}."


from mcp.types import (  # noqa: E402
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
    TextContent,
)


@mcp.tool()
async def greet(ctx: Context) -> CallToolResult | InputRequiredResult:
    """Asks the person's name the 2026-07-28 way (input_required), then greets."""
    answer = (ctx.input_responses or {}).get("name")
    if isinstance(answer, ElicitResult) and answer.action == "accept" and answer.content:
        return CallToolResult(content=[TextContent(type="text", text=f"hello {answer.content['name']}")])
    return InputRequiredResult(input_requests={"name": ElicitRequest(params=ElicitRequestFormParams(
        message="What is your name?",
        requested_schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}))})


@mcp.resource("notes://topics/{topic}")
def topic_notes(topic: str) -> str:
    """Notes on one topic (a resource template)."""
    return f"notes on {topic}"


@mcp.completion()
async def complete(ref, argument, context):
    """Completes a prompt's `topic`."""
    from mcp.types import Completion
    return Completion(values=[t for t in ("git", "gateway") if t.startswith(argument.value)])


async def set_level(ctx, params):
    """The log level (declares the logging capability)."""
    from mcp.types import EmptyResult
    return EmptyResult()


def _logging():
    from mcp.types import SetLevelRequestParams
    mcp._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)


_logging()


def modern_only(app):
    """The app, refusing what is not 2026-07-28: a session id or an
    `initialize` is answered 400 with UnsupportedProtocolVersion."""
    import json

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        chunks, more = [], True
        while more:
            m = await receive()
            chunks.append(m.get("body", b""))
            more = m.get("more_body", False)
        body = b"".join(chunks)
        try:
            method = json.loads(body).get("method") if body else None
        except ValueError:
            method = None
        if "mcp-session-id" in headers or method == "initialize" or scope["method"] != "POST":
            error = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                "code": -32022, "message": "only 2026-07-28 is spoken here",
                "data": {"supported": ["2026-07-28"]}}}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json")]})
            return await send({"type": "http.response.body", "body": error})
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await app(scope, replay, send)
    return wrapped


if __name__ == "__main__":
    if "--modern" in sys.argv:
        import uvicorn
        port = int(sys.argv[sys.argv.index("--modern") + 1])
        uvicorn.run(modern_only(mcp.streamable_http_app()), host="127.0.0.1", port=port,
                    log_level="warning")
    elif "--http" in sys.argv:
        port = int(sys.argv[sys.argv.index("--http") + 1])
        mcp.run(transport="streamable-http", host="127.0.0.1", port=port)
    else:
        mcp.run()
