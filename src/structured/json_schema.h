// JSON Schema to GBNF (grammar.h), for response_format json_schema, llama.cpp's `json_schema` and vLLM's
// `guided_json` / `structured_outputs.json`; and the grammar of any JSON value (response_format
// json_object). The grammar produces JSON texts valid under the schema; where the set of valid texts is
// larger than what a generator needs (key order, number spellings, escapes), it produces a subset, never
// a text the schema rejects:
//   - whitespace between tokens is bounded (none, one space, or a newline and up to 20 spaces or tabs)
//     so a model cannot spin in whitespace; whitespace may precede the root value;
//   - numbers have at most 16 integer digits, 16 fraction digits and 3 exponent digits; `-0` only where
//     unbounded; a bounded `number` has no exponent;
//   - object members come in the order of `properties` (the declared order with nlohmann::ordered_json,
//     the key order of nlohmann::json otherwise), then any additional members;
//   - a string's `\u` escapes never encode surrogates (one escape is one character; a model writes
//     astral characters as UTF-8).
//
// Keywords:
//   type (one or a list; absent: inferred from the keywords present, else any JSON value), nullable,
//   enum, const (the values' compact JSON; with type, only the values of that type), boolean/true
//   schemas ({} and true are any JSON value, false is refused);
//   string: minLength, maxLength (in characters), pattern (regex.h, with JSON Schema's search semantics:
//   a branch not anchored with ^ / $ may have any characters before / after it), format date, time,
//   date-time (RFC 3339; leap years exact; seconds 00-59, `T` and `Z` upper case), uuid, email (a
//   dot-atom local part and dot-separated host labels), ipv4; any other format is an annotation and the
//   string is unconstrained. pattern or a known format together with minLength/maxLength is refused;
//   integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers, or draft-4 booleans) exact;
//   multipleOf only when it is 1;
//   number: the same bounds when they are whole numbers (a fractional bound is refused);
//   object: properties, required (a required name without a property schema takes additionalProperties'
//   schema), additionalProperties (absent with properties: only the declared properties; absent without
//   properties, true or a schema: extra members after the declared ones, whose keys differ from every
//   declared name and use no \u escape while they could still spell one), minProperties/maxProperties
//   only when every output satisfies them;
//   array: items, prefixItems (and draft-7 items-array with additionalItems), minItems, maxItems,
//   uniqueItems false;
//   anyOf, oneOf (both as alternatives: oneOf's "exactly one" is not enforced, which matters only when
//   the branches overlap), allOf (of object schemas: properties and required merged; one-element allOf
//   is its element), $ref to "#", "#/$defs/...", "#/definitions/..." or any other local JSON pointer
//   (recursion allowed: each referenced schema is one rule; constraints next to $ref are merged as allOf).
// A pattern with a known format is refused. A schema that reaches itself through $ref/anyOf before any
// character is left-recursive as a grammar and compile_gbnf refuses it (a bare self-reference among
// anyOf branches only adds nothing).
// Refused with a kestrel::Error naming the keyword (never silently dropped): not, if/then/else,
// patternProperties, propertyNames, dependentRequired, dependentSchemas, dependencies, contains,
// minContains, maxContains, unevaluatedProperties, unevaluatedItems, uniqueItems true, multipleOf (but
// 1 for integers), $dynamicRef, $recursiveRef, remote $ref, anyOf/oneOf next to other constraints.
// Other keywords (title, description, examples, default, $schema, $id, $comment, deprecated, readOnly,
// writeOnly, vendor extensions) are annotations and ignored.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace kestrel::structured {

// A whole grammar: `root` matches the JSON texts valid under the schema (leading whitespace allowed).
// Throws kestrel::Error naming the unsupported keyword or the bad part of the schema.
std::string json_schema_grammar(const nlohmann::json& schema);
// The same, with object members in the schema's declared `properties` order.
std::string json_schema_grammar(const nlohmann::ordered_json& schema);

// A whole grammar for any JSON value whose top level is an object (response_format json_object).
std::string json_object_grammar();

}  // namespace kestrel::structured
