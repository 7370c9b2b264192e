"""The MCP server the conformance run tests (scripts/mcp-conformance.sh).

It serves what the server scenarios of the MCP conformance suite
(`@modelcontextprotocol/conformance`) call: the `test_*` tools, resources
and prompts each scenario's "Server Implementation Requirements" name,
written on the MCP Python SDK's `MCPServer`. One process speaks both
generations: the session era (2025-11-25 and before, `initialize`) and the
stateless 2026-07-28 revision, as the SDK does, so the same server can be
measured directly and behind Mandate's gateway for both requirement sets.

usage: fixture_server.py [stdio]
       fixture_server.py http PORT
  stdio (the default): one session over stdin/stdout, as a local server.
  http: streamable HTTP on http://127.0.0.1:PORT/mcp, with the SDK's Host and
  Origin checks for a loopback server and resumable SSE streams.

Not served: the tasks extension (io.modelcontextprotocol/tasks), which the
suite runs for 2026-07-28 without scoring it.
"""
import base64
import io
import itertools
import json
import sys
import warnings
import wave
from typing import Annotated, Any, Literal

import anyio
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import (
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
    Sample,
    UserMessage,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Prompt
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import (
    AudioContent,
    CallToolResult,
    ClientCapabilities,
    Completion,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequiredResult,
    ListRootsRequest,
    ListRootsResult,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

# Logging, sampling and standalone elicitation are deprecated by 2026-07-28;
# the session-era scenarios still call them, so this server still offers them.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

# A 1x1 red PNG and a 1-sample silent 8 kHz mono WAV.
RED_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0g"
    "AAAABJRU5ErkJggg=="
)


def silent_wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00")
    return out.getvalue()


PNG_B64 = base64.b64encode(RED_PIXEL_PNG).decode()
WAV_B64 = base64.b64encode(silent_wav()).decode()

# Every cacheable listing and read carries a freshness hint (2026-07-28).
CACHE_HINTS = {
    method: CacheHint(ttl_ms=60_000, scope="public")
    for method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list",
                   "resources/read")
}

# A JSON Schema 2020-12 input schema with $defs, $anchor, composition and
# conditionals (SEP-1613, SEP-2106), listed as written.
SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"$anchor": "addressDef", "type": "object", "properties": {
        "street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def json_schema_2020_12_tool(name: str | None = None, address: dict | None = None,
                             contactMethod: str | None = None, phone: str | None = None,
                             email: str | None = None) -> str:
    return f"contact {name or 'someone'} by {contactMethod or 'any means'}"


schema_tool = Tool.from_function(json_schema_2020_12_tool,
                                 description="Tool with JSON Schema 2020-12 features")
schema_tool.parameters = SCHEMA_2020_12  # as written, not derived from the signature

mcp = MCPServer("mandate-conformance-fixture", version="1.0.0", tools=[schema_tool],
                cache_hints=CACHE_HINTS)


def text(value: str) -> TextContent:
    return TextContent(type="text", text=value)


def image() -> ImageContent:
    return ImageContent(type="image", data=PNG_B64, mime_type="image/png")


def is_modern(ctx: Context) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def require_modern(ctx: Context) -> None:
    """The multi-round-trip (`input_required`) tools exist only in 2026-07-28."""
    if not is_modern(ctx):
        raise ToolError("this tool asks for input the 2026-07-28 way (input_required); "
                        f"this session speaks {ctx.protocol_version}")


# --- Logging (session era): the level a session asked for, per session -------

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# Keyed by the HTTP session id; over stdio the process is the session.
min_level: dict[str, str] = {}


def session_key(request: Any) -> str:
    headers = getattr(request, "headers", None)
    return (headers.get("mcp-session-id") if headers is not None else None) or "process"


async def set_logging_level(ctx, params: SetLevelRequestParams) -> EmptyResult:
    min_level[session_key(ctx.request)] = params.level
    return EmptyResult()


async def log(ctx: Context, level: str, message: str) -> None:
    """A log notification, unless the session asked for a higher level. On
    2026-07-28 the SDK sends it only if the request's own `_meta` asked."""
    wanted = min_level.get(session_key(ctx.request_context.request), "debug")
    if LEVELS.index(level) >= LEVELS.index(wanted):
        await ctx.log(level, message)


# --- Subscriptions (session era): kept per session. The watched resource
# never changes, so no update is ever sent. ----------------------------------

subscriptions: dict[str, set[str]] = {}


async def subscribe(ctx, params: SubscribeRequestParams) -> EmptyResult:
    subscriptions.setdefault(session_key(ctx.request), set()).add(str(params.uri))
    return EmptyResult()


async def unsubscribe(ctx, params: UnsubscribeRequestParams) -> EmptyResult:
    subscriptions.get(session_key(ctx.request), set()).discard(str(params.uri))
    return EmptyResult()


# MCPServer has decorators for neither `logging/setLevel` nor the resource
# subscriptions; its low-level server registers them (and so declares the
# `logging` capability and `resources.subscribe`).
mcp._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams,
                                         set_logging_level)
mcp._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
mcp._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams,
                                         unsubscribe)


# --- Tools: content --------------------------------------------------------


@mcp.tool(description="Returns a fixed text")
def test_simple_text() -> CallToolResult:
    return CallToolResult(content=[text("This is a simple text response for testing.")])


@mcp.tool(description="Returns a 1x1 red PNG")
def test_image_content() -> CallToolResult:
    return CallToolResult(content=[image()])


@mcp.tool(description="Returns a short WAV")
def test_audio_content() -> CallToolResult:
    return CallToolResult(content=[
        AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")])


@mcp.tool(description="Returns an embedded text resource")
def test_embedded_resource() -> CallToolResult:
    return CallToolResult(content=[EmbeddedResource(type="resource", resource=TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain",
        text="This is an embedded resource content."))])


@mcp.tool(description="Returns text, an image and an embedded resource")
def test_multiple_content_types() -> CallToolResult:
    return CallToolResult(content=[
        text("Multiple content types test:"),
        image(),
        EmbeddedResource(type="resource", resource=TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}))),
    ])


@mcp.tool(description="Always fails, as a tool error")
def test_error_handling() -> CallToolResult:
    return CallToolResult(is_error=True,
                          content=[text("This tool intentionally returns an error for testing")])


# --- Tools: notifications during a call ------------------------------------


async def three_logs(ctx: Context) -> str:
    await log(ctx, "info", "Tool execution started")
    await anyio.sleep(0.05)
    await log(ctx, "info", "Tool processing data")
    await anyio.sleep(0.05)
    await log(ctx, "info", "Tool execution completed")
    return "Logging tool finished"


@mcp.tool(description="Sends three info log notifications, 50 ms apart")
async def test_tool_with_logging(ctx: Context) -> str:
    return await three_logs(ctx)


@mcp.tool(description="Logs like test_tool_with_logging (2026-07-28: only if the request asked)")
async def test_logging_tool(ctx: Context) -> str:
    return await three_logs(ctx)


@mcp.tool(description="Reports progress 0, 50 and 100 of 100, 50 ms apart")
async def test_tool_with_progress(ctx: Context) -> str:
    for step, progress in enumerate((0, 50, 100)):
        if step:
            await anyio.sleep(0.05)
        await ctx.report_progress(progress, 100)
    return "Progress tool finished"


@mcp.tool(description="Closes its SSE stream mid-call; the answer comes on the resumed stream")
async def test_reconnection(ctx: Context) -> str:
    await anyio.sleep(0.1)
    await ctx.close_sse_stream()
    await anyio.sleep(0.2)
    return "Reconnection test completed"


# --- Tools: asking the client (resolvers: mid-call in the session era,
# input_required in 2026-07-28; either way only with the capability) --------


def ask_llm(prompt: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=text(prompt))], max_tokens=100)


@mcp.tool(description="Asks the client's LLM the prompt (sampling)")
def test_sampling(prompt: str,
                  answer: Annotated[CreateMessageResult, Resolve(ask_llm)]) -> str:
    reply = answer.content
    return f"LLM response: {reply.text if isinstance(reply, TextContent) else reply.type}"


def ask_capital() -> Sample:
    return Sample([SamplingMessage(role="user", content=text("What is the capital of France?"))],
                  max_tokens=10)


@mcp.tool(description="Needs sampling: refused with -32021 to a client that did not declare it")
def test_missing_capability(answer: Annotated[CreateMessageResult, Resolve(ask_capital)]) -> str:
    return "sampling answered"


class UserInfo(BaseModel):
    username: str = Field(description="User's response")
    email: str = Field(description="User's email address")


def ask_user_info(message: str) -> Elicit[UserInfo]:
    return Elicit(message, UserInfo)


@mcp.tool(description="Asks the user for a username and email (elicitation)")
def test_elicitation(message: str,
                     reply: Annotated[ElicitationResult[UserInfo], Resolve(ask_user_info)]) -> str:
    content = reply.data.model_dump() if reply.action == "accept" else None
    return f"User response: action={reply.action}, content={json.dumps(content)}"


class Favourite(BaseModel):
    colour: str


def ask_colour() -> Elicit[Favourite]:
    return Elicit("What is your favourite colour?", Favourite)


@mcp.tool(description="Asks the user one question, as the revision asks (elicitation)")
def test_streaming_elicitation(
        reply: Annotated[ElicitationResult[Favourite], Resolve(ask_colour)]) -> str:
    return f"action={reply.action}"


class Defaults(BaseModel):
    name: str = "John Doe"
    age: int = 30
    score: float = 95.5
    status: Literal["active", "inactive", "pending"] = "active"
    verified: bool = True


@mcp.tool(description="Elicitation whose every primitive field has a default (SEP-1034)")
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    reply = await ctx.elicit("Confirm or change the defaults", Defaults)
    content = reply.data.model_dump() if reply.action == "accept" else None
    return f"Elicitation completed: action={reply.action}, content={json.dumps(content)}"


ENUM_SCHEMA = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "oneOf": [
            {"const": "value1", "title": "First Option"},
            {"const": "value2", "title": "Second Option"},
            {"const": "value3", "title": "Third Option"},
        ]},
        "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                       "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array",
                          "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "items": {"anyOf": [
            {"const": "value1", "title": "First Choice"},
            {"const": "value2", "title": "Second Choice"},
            {"const": "value3", "title": "Third Choice"},
        ]}},
    },
}


@mcp.tool(description="Elicitation with the five enum shapes (SEP-1330)")
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    reply = await ctx.session.elicit_form("Pick some options", ENUM_SCHEMA,
                                          related_request_id=ctx.request_id)
    return f"Elicitation completed: action={reply.action}, content={json.dumps(reply.content)}"


# --- Tools: schemas ---------------------------------------------------------


@mcp.tool(description="Echoes a region that also travels as the Mcp-Param-Region header")
def test_header_param(
        region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
    return f"region={region}"


# --- Tools: the list changes (2026-07-28 subscriptions/listen) --------------


def test_dynamic_tool() -> str:
    """Present between two calls of test_trigger_tool_change."""
    return "dynamic"


def test_dynamic_prompt() -> str:
    """Present between two calls of test_trigger_prompt_change."""
    return "A prompt that comes and goes."


@mcp.tool(description="Adds or removes test_dynamic_tool, and says the tool list changed")
async def test_trigger_tool_change(ctx: Context) -> str:
    if any(t.name == "test_dynamic_tool" for t in await mcp.list_tools()):
        mcp.remove_tool("test_dynamic_tool")
    else:
        mcp.add_tool(test_dynamic_tool)
    await ctx.notify_tools_changed()
    return "tool list changed"


@mcp.tool(description="Adds or removes test_dynamic_prompt, and says the prompt list changed")
async def test_trigger_prompt_change(ctx: Context) -> str:
    if any(p.name == "test_dynamic_prompt" for p in await mcp.list_prompts()):
        mcp.remove_prompt("test_dynamic_prompt")
    else:
        mcp.add_prompt(Prompt.from_function(test_dynamic_prompt))
    await ctx.notify_prompts_changed()
    return "prompt list changed"


# --- Tools and a prompt: input_required (2026-07-28, SEP-2322) --------------


def elicit(message: str, field: str, kind: str = "string") -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema={
        "type": "object", "properties": {field: {"type": kind}}, "required": [field]}))


def sample(question: str, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(params=CreateMessageRequestParams(
        messages=[SamplingMessage(role="user", content=text(question))], max_tokens=max_tokens))


def accepted(ctx: Context, key: str, field: str) -> Any | None:
    """The value of `field` the user gave for the input request `key`, if any."""
    answer = (ctx.input_responses or {}).get(key)
    if isinstance(answer, ElicitResult) and answer.action == "accept" and answer.content:
        return answer.content.get(field)
    return None


def sampled(ctx: Context, key: str) -> str | None:
    answer = (ctx.input_responses or {}).get(key)
    if isinstance(answer, CreateMessageResult) and isinstance(answer.content, TextContent):
        return answer.content.text
    return None


def roots(ctx: Context, key: str) -> list[str] | None:
    answer = (ctx.input_responses or {}).get(key)
    return [str(r.uri) for r in answer.roots] if isinstance(answer, ListRootsResult) else None


# What a tool answers in the multi-round-trip flow: the result, or questions.
Answer = CallToolResult | InputRequiredResult


def ask(requests: dict, state: str | None = None) -> InputRequiredResult:
    # `requestState` leaves sealed and comes back checked: MCPServer encrypts
    # and authenticates it (AES-GCM under a key of this process).
    return InputRequiredResult(input_requests=requests, request_state=state)


@mcp.tool(description="Asks the user's name (input_required), then greets them")
async def test_input_required_result_elicitation(ctx: Context) -> Answer:
    require_modern(ctx)
    name = accepted(ctx, "user_name", "name")
    if name is None:
        return ask({"user_name": elicit("What is your name?", "name")})
    return CallToolResult(content=[text(f"Hello, {name}!")])


@mcp.tool(description="Asks the client's LLM a question (input_required)")
async def test_input_required_result_sampling(ctx: Context) -> Answer:
    require_modern(ctx)
    reply = sampled(ctx, "capital_question")
    if reply is None:
        return ask({"capital_question": sample("What is the capital of France?", 100)})
    return CallToolResult(content=[text(f"The LLM said: {reply}")])


@mcp.tool(description="Asks the client's roots (input_required)")
async def test_input_required_result_list_roots(ctx: Context) -> Answer:
    require_modern(ctx)
    found = roots(ctx, "client_roots")
    if found is None:
        return ask({"client_roots": ListRootsRequest()})
    return CallToolResult(content=[text(f"Roots: {', '.join(found) or '(none)'}")])


@mcp.tool(description="Asks for confirmation with requestState, and checks the state it gets back")
async def test_input_required_result_request_state(ctx: Context) -> Answer:
    require_modern(ctx)
    ok = accepted(ctx, "confirm", "ok")
    if ctx.request_state != "awaiting-confirmation" or ok is None:
        return ask({"confirm": elicit("Please confirm", "ok", "boolean")}, "awaiting-confirmation")
    return CallToolResult(content=[text(f"state-ok: confirmed={ok}")])


@mcp.tool(description="Asks for a name, an LLM greeting and the roots at once (input_required)")
async def test_input_required_result_multiple_inputs(ctx: Context) -> Answer:
    require_modern(ctx)
    name, greeting = accepted(ctx, "user_name", "name"), sampled(ctx, "greeting")
    found = roots(ctx, "client_roots")
    if ctx.request_state != "three-questions" or name is None or greeting is None or found is None:
        return ask({
            "user_name": elicit("What is your name?", "name"),
            "greeting": sample("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        }, "three-questions")
    return CallToolResult(content=[text(f"{greeting} {name} ({len(found)} roots)")])


@mcp.tool(description="Asks two questions, one round each (input_required)")
async def test_input_required_result_multi_round(ctx: Context) -> Answer:
    require_modern(ctx)
    state = ctx.request_state or ""
    if state.startswith("step2:"):
        colour = accepted(ctx, "step2", "color")
        if colour is not None:
            return CallToolResult(content=[text(f"{state[6:]} likes {colour}")])
    elif state == "step1" and (name := accepted(ctx, "step1", "name")) is not None:
        return ask({"step2": elicit("Step 2: What is your favorite color?", "color")},
                   f"step2:{name}")
    return ask({"step1": elicit("Step 1: What is your name?", "name")}, "step1")


@mcp.tool(description="Hands out requestState; a changed one is refused (input_required)")
async def test_input_required_result_tampered_state(ctx: Context) -> Answer:
    require_modern(ctx)
    if ctx.request_state == "issued" and accepted(ctx, "confirm", "ok") is not None:
        return CallToolResult(content=[text("state intact")])
    return ask({"confirm": elicit("Please confirm", "ok", "boolean")}, "issued")


@mcp.tool(description="Asks only what the client declared it can answer (input_required)")
async def test_input_required_result_capabilities(ctx: Context) -> Answer:
    require_modern(ctx)
    caps = ctx.client_capabilities or ClientCapabilities()
    wanted = {}
    if caps.elicitation is not None and accepted(ctx, "user_name", "name") is None:
        wanted["user_name"] = elicit("What is your name?", "name")
    if caps.sampling is not None and sampled(ctx, "greeting") is None:
        wanted["greeting"] = sample("Generate a greeting", 50)
    if caps.roots is not None and roots(ctx, "client_roots") is None:
        wanted["client_roots"] = ListRootsRequest()
    if wanted:
        return ask(wanted)
    return CallToolResult(content=[text("nothing left to ask")])


@mcp.prompt(description="Asks the user for context (input_required), then renders a prompt")
def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
    if not is_modern(ctx):
        raise ValueError("this prompt asks for input the 2026-07-28 way (input_required)")
    context = accepted(ctx, "user_context", "context")
    if context is None:
        return ask({"user_context": elicit("What context should the prompt use?", "context")})
    return [UserMessage(f"Use this context: {context}")]


# --- Resources -------------------------------------------------------------


@mcp.resource("test://static-text", name="static-text", description="A fixed text",
              mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary", name="static-binary", description="A 1x1 red PNG",
              mime_type="image/png")
def static_binary() -> bytes:
    return RED_PIXEL_PNG


@mcp.resource("test://watched-resource", name="watched-resource",
              description="A resource to subscribe to (it does not change)",
              mime_type="text/plain")
def watched_resource() -> str:
    return "Watched resource content."


@mcp.resource("test://template/{id}/data", name="template-data",
              description="Data for an id", mime_type="application/json")
def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


# --- Prompts and completion --------------------------------------------------


@mcp.prompt(description="A prompt without arguments")
def test_simple_prompt() -> str:
    return "This is a simple prompt for testing."


@mcp.prompt(description="A prompt with two arguments")
def test_prompt_with_arguments(
        arg1: Annotated[str, Field(description="First test argument")],
        arg2: Annotated[str, Field(description="Second test argument")]) -> str:
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@mcp.prompt(description="A prompt embedding a resource")
def test_prompt_with_embedded_resource(
        resourceUri: Annotated[str, Field(description="URI of the resource to embed")],
) -> list[UserMessage]:
    return [
        UserMessage(EmbeddedResource(type="resource", resource=TextResourceContents(
            uri=resourceUri, mime_type="text/plain",
            text="Embedded resource content for testing."))),
        UserMessage("Please process the embedded resource above."),
    ]


@mcp.prompt(description="A prompt with an image")
def test_prompt_with_image() -> list[UserMessage]:
    return [
        UserMessage(image()),
        UserMessage("Please analyze the image above."),
    ]


WORDS = ("paris", "park", "party", "test", "testing", "tested")


@mcp.completion()
async def complete(ref, argument, context) -> Completion:
    values = [w for w in WORDS if w.startswith(argument.value.lower())]
    return Completion(values=values, total=len(values), has_more=False)


# --- Resumable SSE (streamable HTTP) ----------------------------------------


class MemoryEventStore(EventStore):
    """Every event of this process, kept so a client may resume a stream
    (`Last-Event-ID`) after the server closed it."""

    def __init__(self):
        self.events: list[tuple[str, str, Any]] = []  # (event id, stream id, message)
        self.ids = itertools.count(1)

    async def store_event(self, stream_id, message):
        event_id = str(next(self.ids))
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback: EventCallback):
        stream = next((s for e, s, _ in self.events if e == last_event_id), None)
        if stream is None:
            return None
        after = False
        for event_id, stream_id, message in self.events:
            if after and stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream


def main() -> None:
    args = sys.argv[1:]
    if args in ([], ["stdio"]):
        mcp.run("stdio")
    elif len(args) == 2 and args[0] == "http" and args[1].isdigit():
        mcp.run("streamable-http", host="127.0.0.1", port=int(args[1]),
                event_store=MemoryEventStore(), retry_interval=100)
    else:
        sys.exit("usage: fixture_server.py [stdio] | fixture_server.py http PORT")


if __name__ == "__main__":
    main()
