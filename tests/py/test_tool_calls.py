"""Tool calling through `kestrel serve` with the official OpenAI client on the default model (its chat
template has no tool syntax, so the tools go into a Hermes-style system prompt): forced calls (required,
named) parse and validate against the tools' parameters, streamed calls equal non-streamed ones, a
conversation carrying calls and results renders, and bad tool fields are 400s naming them."""

import json

import pytest

from conftest import assert_openai_error, post_raw, require_module

GREEDY = {"temperature": 0}

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 30},
            "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {
            "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
            "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
            "required": ["a", "b"]}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def ask(client, model_id, content, **kw):
    return client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": content}],
                                          tools=TOOLS, max_tokens=200, **{**GREEDY, **kw})


def check_calls(calls):
    jsonschema = require_module("jsonschema")
    assert calls
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_")
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])


def test_required_and_named_tool_calls_parse_and_validate(client, model_id):
    r = ask(client, model_id, "What is the weather in Paris?", tool_choice="required")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    check_calls(choice.message.tool_calls)
    r = ask(client, model_id, "What is 2 plus 40?", tool_choice={"type": "function", "function": {"name": "add"}},
            parallel_tool_calls=False)
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "add"
    check_calls(calls)


def test_streamed_tool_calls_equal_non_streamed(client, model_id):
    kw = dict(tool_choice="required")
    whole = ask(client, model_id, "Weather in Tokyo, in celsius?", **kw).choices[0].message.tool_calls
    calls, finish = {}, None
    for chunk in ask(client, model_id, "Weather in Tokyo, in celsius?", stream=True, **kw):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            c = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            c["name"] += tc.function.name or ""
            c["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [calls[i] for i in sorted(calls)] == [{"name": c.function.name, "arguments": c.function.arguments}
                                                 for c in whole]


def test_auto_answers_with_text_or_calls(client, model_id):
    r = ask(client, model_id, "Say hello.", tool_choice="auto")
    m = r.choices[0].message
    if m.tool_calls:
        check_calls(m.tool_calls)
        assert r.choices[0].finish_reason == "tool_calls"
    else:
        assert m.content and r.choices[0].finish_reason in ("stop", "length")


def test_a_conversation_with_calls_and_results_renders(client, model_id):
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21, \"sky\": \"clear\"}"},
    ]
    r = client.chat.completions.create(model=model_id, messages=messages, tools=TOOLS, max_tokens=30, **GREEDY)
    assert r.choices[0].message.content or r.choices[0].message.tool_calls
    # tool_choice none: tools are described but nothing is parsed out.
    r = client.chat.completions.create(model=model_id, messages=messages, tools=TOOLS, tool_choice="none",
                                       max_tokens=30, **GREEDY)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("extra,param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [{"type": "function"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
    ({"tools": TOOLS + TOOLS[:1]}, "tools[2].function.name"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}],
      "tool_choice": "required"}, "tools"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
])
def test_bad_tool_fields_are_400_naming_them(server, model_id, extra, param):
    body = {"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    err = assert_openai_error(post_raw(server, "/v1/chat/completions", json.dumps(body).encode()), 400)
    assert err["param"] == param, err
