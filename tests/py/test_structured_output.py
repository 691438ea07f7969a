"""Structured output through `kestrel serve` with the official OpenAI client on the default model: JSON
Schema outputs validate against their schemas, regex / choice / grammar outputs match, every spelling the
peers accept works, streaming equals non-streaming, and constrained and free requests batched together
give the text each gives alone."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import assert_openai_error, post_raw, require_module

GREEDY = {"temperature": 0}

# Bounded schemas (string lengths, item counts, digits): every output completes well within max_tokens.
SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "pattern": "^[a-z]{2,10}@[a-z]{2,10}\\.(com|org|net)$"},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["city", "zip"],
            },
        },
        "required": ["name", "age", "email", "address"],
    },
    "shopping": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 2,
                "maxItems": 4,
                "items": {
                    "type": "object",
                    "properties": {
                        "product": {"type": "string", "maxLength": 16},
                        "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
                        "price": {"type": "number"},
                    },
                    "required": ["product", "quantity", "price"],
                },
            },
            "paid": {"type": "boolean"},
        },
        "required": ["items", "paid"],
    },
    "review": {
        "type": "object",
        "properties": {
            "sentiment": {"enum": ["positive", "negative", "neutral"]},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
            "summary": {"type": ["string", "null"], "maxLength": 40},
        },
        "required": ["sentiment", "stars", "tags", "summary"],
    },
    "event": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 30},
            "date": {"type": "string", "format": "date"},
            "attendees": {"type": "integer", "minimum": 0, "maximum": 10000},
            "kind": {"const": "meeting"},
            "optional_note": {"type": "string", "maxLength": 10},
        },
        "required": ["title", "date", "attendees", "kind"],
    },
}

PROMPTS = {
    "person": "Describe a person called Alice who lives in Paris as JSON.",
    "shopping": "Write my shopping list as JSON: apples, milk and bread.",
    "review": "Review the movie Inception as JSON.",
    "event": "Describe a team meeting next Monday as JSON.",
}


def chat(client, model_id, content, **kw):
    return client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": content}],
                                          **{**GREEDY, **kw})


def response_format(name):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("sampling", [GREEDY, {"temperature": 1.0, "seed": 11}])
def test_json_schema_outputs_validate(client, model_id, name, sampling):
    jsonschema = require_module("jsonschema")
    r = chat(client, model_id, PROMPTS[name], max_tokens=400, response_format=response_format(name), **sampling)
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    value = json.loads(choice.message.content)
    jsonschema.validate(value, SCHEMAS[name], format_checker=jsonschema.FormatChecker())


def test_json_object_output_is_an_object(client, model_id):
    # Any JSON object: nothing bounds it, so the prompt asks for a short one (the model could loop).
    r = chat(client, model_id, "Bob is 30 years old. Answer with a JSON object with his name and age.",
             max_tokens=300, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_regex_choice_and_grammar(client, model_id):
    phone = r"\(\d{3}\) \d{3}-\d{4}"
    r = chat(client, model_id, "What is the phone number of the office?", max_tokens=40,
             extra_body={"guided_regex": phone})
    assert re.fullmatch(phone, r.choices[0].message.content), r.choices[0].message.content
    email = r"[a-z]{3,8}@[a-z]{3,8}\.(com|org)"
    r = chat(client, model_id, "Make up an email address.", max_tokens=40,
             extra_body={"structured_outputs": {"regex": email}})
    assert re.fullmatch(email, r.choices[0].message.content), r.choices[0].message.content

    choices = ["positive", "negative", "neutral"]
    for body in [{"guided_choice": choices}, {"structured_outputs": {"choice": choices}}]:
        r = chat(client, model_id, "Sentiment of 'I loved this film!'?", max_tokens=10, extra_body=body)
        assert r.choices[0].message.content in choices
        assert r.choices[0].finish_reason == "stop"

    gbnf = 'root ::= "The answer is " [0-9]{1,3} "." (" " word){0,2}\nword ::= [a-z]{1,8}\n'
    for key in ["grammar", "guided_grammar"]:
        r = chat(client, model_id, "What is 6 times 7?", max_tokens=40, extra_body={key: gbnf})
        assert re.fullmatch(r"The answer is [0-9]{1,3}\.( [a-z]{1,8}){0,2}", r.choices[0].message.content)


def test_llamacpp_spellings_and_completions(client, model_id):
    jsonschema = require_module("jsonschema")
    schema = SCHEMAS["review"]
    r = chat(client, model_id, PROMPTS["review"], max_tokens=300, extra_body={"json_schema": schema})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    r = chat(client, model_id, PROMPTS["review"], max_tokens=300,
             response_format={"type": "json_object", "schema": schema})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    r = client.completions.create(model=model_id, prompt="A review of Inception in JSON: ", max_tokens=300,
                                  temperature=0, extra_body={"guided_json": json.dumps(schema)})
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].text), schema)


def test_streamed_constrained_output_equals_non_streamed(client, model_id):
    kw = dict(max_tokens=400, response_format=response_format("shopping"))
    whole = chat(client, model_id, PROMPTS["shopping"], **kw).choices[0].message.content
    parts, finish = [], None
    for chunk in chat(client, model_id, PROMPTS["shopping"], stream=True, **kw):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(parts) == whole and finish == "stop"


def test_mixed_constrained_and_free_requests_batch_like_alone(client, model_id):
    jobs = []
    for name in sorted(SCHEMAS):
        jobs.append((PROMPTS[name], {"response_format": response_format(name)}))
        jobs.append((PROMPTS[name], {}))
    jobs.append(("Pick one.", {"extra_body": {"guided_choice": ["red", "green", "blue"]}}))
    jobs.append(("Say a number.", {"extra_body": {"guided_regex": r"[0-9]{2,4}"}}))

    def run(job):
        prompt, kw = job
        return chat(client, model_id, prompt, max_tokens=120, **kw).choices[0].message.content

    alone = [run(j) for j in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(run, jobs))
    assert together == alone


@pytest.mark.parametrize("extra,param,needle", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object",
                                                                                          "not": {}}}}},
     "response_format", "not"),
    ({"grammar": "root ::= \"a\" @"}, "grammar", "line 1"),
    ({"grammar": "root ::= root \"a\""}, "grammar", "left-recursive"),
    ({"guided_regex": "(a"}, "guided_regex", ""),
    ({"guided_regex": "a(?=b)"}, "guided_regex", ""),
    ({"guided_choice": []}, "guided_choice", ""),
    ({"structured_outputs": {"structural_tag": "x"}}, "structured_outputs.structural_tag", ""),
    ({"guided_json": {"type": "object"}, "guided_regex": "a"}, "guided_regex", "both"),
    ({"response_format": {"type": "yaml"}}, "response_format", "yaml"),
    ({"guided_whitespace_pattern": " "}, "guided_whitespace_pattern", ""),
])
def test_bad_constraints_are_400_naming_the_field(server, model_id, extra, param, needle):
    body = {"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    err = assert_openai_error(post_raw(server, "/v1/chat/completions", json.dumps(body).encode()), 400)
    assert err["param"] == param and needle in err["message"], err


def test_properties_come_in_their_declared_order(client, model_id):
    # The body's key order is the schema's: "zeta" before "alpha" (nlohmann::json would sort them).
    schema = {"type": "object", "properties": {"zeta": {"type": "integer", "minimum": 0, "maximum": 9},
                                               "alpha": {"type": "string", "maxLength": 8}},
              "required": ["zeta", "alpha"]}
    r = chat(client, model_id, "Give me JSON.", max_tokens=60, response_format=response_format_of(schema))
    assert list(json.loads(r.choices[0].message.content, object_pairs_hook=lambda kv: dict(kv))) == ["zeta", "alpha"]
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "call f"}], tools=tools,
                                       tool_choice="required", max_tokens=80, **GREEDY)
    assert list(json.loads(r.choices[0].message.tool_calls[0].function.arguments)) == ["zeta", "alpha"]


def response_format_of(schema):
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
