#include "structured/json_schema.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/utf8.h"
#include "structured/grammar.h"
#include "structured/regex.h"

namespace kestrel::structured {
namespace {

// The largest magnitude of an integer part: 16 digits, as the unbounded `integer` rule allows.
constexpr int64_t kMaxInt = 9'999'999'999'999'999;

// Shared rules, emitted only when used; `deps` are emitted with them.
struct Primitive {
  const char* name;
  const char* body;
  std::vector<const char*> deps;
};

// Classes write `-`, `'` and `^` as \x escapes so their meaning does not depend on where they stand.
const std::vector<Primitive>& primitives() {
  static const std::vector<Primitive> p = {
      {"ws", R"(( " " | "\n" [ \t]{0,20} )?)", {}},
      {"value",
       "object | array | string | number | boolean | null",
       {"object", "array", "string", "number", "boolean", "null"}},
      {"object", R"("{" ws ( member ( "," ws member )* )? "}")", {"ws", "member"}},
      {"member", R"(string ws ":" ws value ws)", {"string", "ws", "value"}},
      {"array", R"("[" ws ( value ws ( "," ws value ws )* )? "]")", {"ws", "value"}},
      {"string", R"("\"" char* "\"")", {"char"}},
      // Any character but `"`, `\` and controls, or an escape; \u never spells a surrogate, so one char is
      // one code point (what minLength/maxLength count).
      {"char",
       R"([^\"\\\x00-\x1F] | "\\" ( [\"\\/bfnrt] | "u" ( [0-9a-cA-CeEfF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) ))",
       {}},
      {"integer", R"("-"? ( "0" | [1-9] [0-9]{0,15} ))", {}},
      {"number", R"(integer ( "." [0-9]{1,16} )? ( [eE] ( "+" | "-" )? [0-9]{1,3} )?)", {"integer"}},
      {"boolean", R"("true" | "false")", {}},
      {"null", R"("null")", {}},
      // RFC 3339 full-date with the days of each month; February 29 only in leap years.
      {"date",
       R"([0-9]{4} "-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ) | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) ) | date-leap-year "-02-29")",
       {"date-leap-year"}},
      // Divisible by 4 but not by 100 (last two digits), or by 400 (first two digits, then 00).
      {"date-leap-year",
       R"([0-9]{2} ( "0" [48] | [2468] [048] | [13579] [26] ) | ( [02468] [048] | [13579] [26] ) "00")",
       {}},
      // RFC 3339 full-time; second 60 (a leap second) is left out since it is valid only at some instants.
      {"time",
       R"(( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,9} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ))",
       {}},
      {"date-time", R"(date "T" time)", {"date", "time"}},
      {"uuid", R"([0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12})", {}},
      {"email",
       R"(email-atom ( "." email-atom )* "@" email-label ( "." email-label )+)",
       {"email-atom", "email-label"}},
      {"email-atom", R"([a-zA-Z0-9!#$%&\x27*+/=?\x5E_`{|}~\x2D]+)", {}},
      {"email-label", R"([a-zA-Z0-9] ( [a-zA-Z0-9\x2D]* [a-zA-Z0-9] )?)", {}},
      {"ipv4", R"(ipv4-octet "." ipv4-octet "." ipv4-octet "." ipv4-octet)", {"ipv4-octet"}},
      {"ipv4-octet", R"("25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9])", {}},
  };
  return p;
}

const std::set<std::string_view> kStringFormats = {"date", "time", "date-time", "uuid", "email", "ipv4"};

// Keywords that constrain values and that this translation does not enforce.
const std::set<std::string_view> kRefused = {"not",
                                             "if",
                                             "then",
                                             "else",
                                             "patternProperties",
                                             "propertyNames",
                                             "dependentRequired",
                                             "dependentSchemas",
                                             "dependencies",
                                             "contains",
                                             "minContains",
                                             "maxContains",
                                             "unevaluatedProperties",
                                             "unevaluatedItems",
                                             "$dynamicRef",
                                             "$recursiveRef"};

// Keywords that never constrain anything (and containers of definitions, reached only through $ref).
const std::set<std::string_view> kAnnotations = {"title",
                                                 "description",
                                                 "examples",
                                                 "example",
                                                 "default",
                                                 "$schema",
                                                 "$id",
                                                 "id",
                                                 "$comment",
                                                 "deprecated",
                                                 "readOnly",
                                                 "writeOnly",
                                                 "$defs",
                                                 "definitions",
                                                 "$anchor",
                                                 "$vocabulary",
                                                 "discriminator",
                                                 "contentMediaType",
                                                 "contentEncoding",
                                                 "contentSchema",
                                                 "$dynamicAnchor",
                                                 "$recursiveAnchor",
                                                 "strict",
                                                 "x-order"};

const std::set<std::string_view> kObjectKeywords = {"properties", "required", "additionalProperties", "minProperties",
                                                    "maxProperties"};
const std::set<std::string_view> kArrayKeywords = {"items",    "prefixItems", "additionalItems",
                                                   "minItems", "maxItems",    "uniqueItems"};
const std::set<std::string_view> kStringKeywords = {"minLength", "maxLength", "pattern", "format"};
const std::set<std::string_view> kNumberKeywords = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                                                    "multipleOf"};

// Keywords that constrain values (besides nullable), for telling a schema's constraints from its annotations.
const std::set<std::string_view> kConstraining = {"type",
                                                  "enum",
                                                  "const",
                                                  "anyOf",
                                                  "oneOf",
                                                  "allOf",
                                                  "$ref",
                                                  "properties",
                                                  "required",
                                                  "additionalProperties",
                                                  "minProperties",
                                                  "maxProperties",
                                                  "items",
                                                  "prefixItems",
                                                  "additionalItems",
                                                  "minItems",
                                                  "maxItems",
                                                  "uniqueItems",
                                                  "minLength",
                                                  "maxLength",
                                                  "pattern",
                                                  "format",
                                                  "minimum",
                                                  "maximum",
                                                  "exclusiveMinimum",
                                                  "exclusiveMaximum",
                                                  "multipleOf"};

const std::vector<std::string_view> kTypes = {"object", "array", "string", "integer", "number", "boolean", "null"};

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

// Rule names are [a-zA-Z0-9-]: anything else becomes `-`, runs collapse.
std::string sanitize(std::string_view s) {
  std::string out;
  for (char c : s) {
    char d = is_name_char(c) ? c : '-';
    if (d == '-' && (out.empty() || out.back() == '-')) continue;
    out += d;
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? "x" : out;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (const auto& p : parts) {
    if (p.empty()) continue;
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

// `e` followed by a repetition of m to n (n < 0: unbounded) times; "" when it must repeat zero times.
std::string repeat(const std::string& e, int64_t m, int64_t n) {
  if (n == 0) return "";
  if (n < 0) return m == 0 ? e + "*" : m == 1 ? e + "+" : fmt::format("{}{{{},}}", e, m);
  if (m == n) return m == 1 ? e : fmt::format("{}{{{}}}", e, m);
  if (m == 0 && n == 1) return e + "?";
  return fmt::format("{}{{{},{}}}", e, m, n);
}

std::string alternatives(const std::vector<std::string>& alts) {
  if (alts.size() == 1) return alts[0];
  return "( " + join(alts, " | ") + " )";
}

// ---- Integer ranges as digit strings (no leading zeros) ----

std::string digit_class(char a, char b) {
  return a == b ? fmt::format("\"{}\"", a) : fmt::format("[{}-{}]", a, b);
}

std::string any_digits(size_t n) {
  return n == 0 ? "" : n == 1 ? "[0-9]" : fmt::format("[0-9]{{{}}}", n);
}

bool all_of_char(std::string_view s, char c) {
  return std::all_of(s.begin(), s.end(), [c](char x) { return x == c; });
}

// Digit strings of x's length from x to y (x <= y, same length).
std::string same_length_range(std::string_view x, std::string_view y) {
  if (x.empty()) return "";
  if (x == y) return gbnf_literal(x);
  const size_t rest = x.size() - 1;
  const std::string_view xr = x.substr(1), yr = y.substr(1);
  if (x[0] == y[0]) return join({gbnf_literal(x.substr(0, 1)), same_length_range(xr, yr)}, " ");
  std::vector<std::string> alts;
  char low = x[0], high = y[0];
  if (!all_of_char(xr, '0')) {
    alts.push_back(join({gbnf_literal(x.substr(0, 1)), same_length_range(xr, std::string(rest, '9'))}, " "));
    ++low;
  }
  std::string last;
  if (!all_of_char(yr, '9')) {
    last = join({gbnf_literal(y.substr(0, 1)), same_length_range(std::string(rest, '0'), yr)}, " ");
    --high;
  }
  if (low <= high) alts.push_back(join({digit_class(low, high), any_digits(rest)}, " "));
  if (!last.empty()) alts.push_back(last);
  return alternatives(alts);
}

int64_t pow10(int n) {
  int64_t p = 1;
  while (n-- > 0) p *= 10;
  return p;
}

// The decimal spellings of the integers in [a, b], 0 <= a <= b.
std::string uint_range(int64_t a, int64_t b) {
  std::vector<std::string> alts;
  const int da = static_cast<int>(std::to_string(a).size()), db = static_cast<int>(std::to_string(b).size());
  for (int d = da; d <= db; ++d) {
    int64_t lo = std::max(a, d == 1 ? int64_t{0} : pow10(d - 1));
    int64_t hi = std::min(b, pow10(d) - 1);
    alts.push_back(same_length_range(std::to_string(lo), std::to_string(hi)));
  }
  return alternatives(alts);
}

// ---- Bounds ----

struct Bound {
  double value = 0;
  bool exclusive = false;
  std::string keyword;
};

// Reads a numeric keyword as a value that fits the integer rules (clamped past 17 digits; a value that far
// out cannot be reached by a 16-digit number anyway).
template <class Json>
double bound_value(const Json& v, const std::string& keyword) {
  KS_CHECK(v.is_number(), "JSON Schema: '{}' must be a number, got {}", keyword, v.dump());
  double d = v.template get<double>();
  KS_CHECK(std::isfinite(d), "JSON Schema: '{}' must be finite", keyword);
  return std::clamp(d, -1e17, 1e17);
}

// The lower (or upper) bound of a schema: minimum and exclusiveMinimum (a number, or draft 4's boolean
// that makes minimum exclusive), the stronger of the two.
template <class Json>
std::optional<Bound> read_bound(const Json& s, bool lower) {
  const std::string inc = lower ? "minimum" : "maximum";
  const std::string exc = lower ? "exclusiveMinimum" : "exclusiveMaximum";
  std::optional<Bound> b;
  bool draft4_exclusive = false;
  if (s.contains(exc) && s[exc].is_boolean()) draft4_exclusive = s[exc].template get<bool>();
  if (s.contains(inc)) b = Bound{bound_value(s[inc], inc), draft4_exclusive, inc};
  if (s.contains(exc) && !s[exc].is_boolean()) {
    Bound e{bound_value(s[exc], exc), true, exc};
    // An exclusive bound at the same value is the stronger one.
    if (!b || (lower ? e.value >= b->value : e.value <= b->value)) b = e;
  }
  return b;
}

// A magnitude's integer part and fraction with x > L (or >=) and x < U (or <=), L and U whole, 0 <= L.
std::string magnitude(int64_t L, bool l_excl, std::optional<int64_t> U, bool u_excl) {
  static const std::string frac_any = R"(( "." [0-9]{1,16} )?)";
  static const std::string frac_zero = R"(( "." "0"{1,16} )?)";
  static const std::string frac_nonzero = R"("." "0"{0,15} [1-9] [0-9]{0,15})";
  std::vector<std::string> alts;
  // Integer parts strictly inside the bounds take any fraction.
  const int64_t lo = l_excl ? L + 1 : L;
  const int64_t hi = U ? *U - 1 : kMaxInt;
  if (lo <= hi) alts.push_back(uint_range(lo, hi) + " " + frac_any);
  // x > L: L itself with a fraction that is not zero.
  if (l_excl && (!U || L < *U)) alts.push_back(gbnf_literal(std::to_string(L)) + " " + frac_nonzero);
  // x <= U: U itself with a zero fraction.
  if (U && !u_excl && (*U > L || (*U == L && !l_excl)))
    alts.push_back(gbnf_literal(std::to_string(*U)) + " " + frac_zero);
  if (alts.empty()) return "";
  return alternatives(alts);
}

// ---- Patterns ----

// The top-level branches of a regex (split at `|` outside groups and classes).
std::vector<std::string> regex_branches(std::string_view re) {
  std::vector<std::string> out(1);
  int depth = 0;
  bool in_class = false;
  for (size_t i = 0; i < re.size(); ++i) {
    char c = re[i];
    if (c == '\\' && i + 1 < re.size()) {
      out.back() += re.substr(i, 2);
      ++i;
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
    } else if (c == '[') {
      in_class = true;
      // A `]` right after `[` or `[^` is a member, not the end.
      if (i + 1 < re.size() && re[i + 1] == '^') out.back() += re[++i];
      if (i + 1 < re.size() && re[i + 1] == ']') {
        out.back() += c;
        c = re[++i];
      }
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      --depth;
    } else if (c == '|' && depth == 0) {
      out.emplace_back();
      continue;
    }
    out.back() += c;
  }
  return out;
}

// Whether `s` ends with a `$` that is not escaped.
bool ends_with_anchor(std::string_view s) {
  if (s.empty() || s.back() != '$') return false;
  size_t backslashes = 0;
  for (size_t i = s.size() - 1; i > 0 && s[i - 1] == '\\'; --i) ++backslashes;
  return backslashes % 2 == 0;
}

// Rule names defined in GBNF text (lines of the form `name ::= ...`).
std::vector<std::string> defined_rules(std::string_view text) {
  std::vector<std::string> names;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    size_t def = line.find("::=");
    if (def != std::string_view::npos) {
      std::string_view name = line.substr(0, def);
      while (!name.empty() && (name.front() == ' ' || name.front() == '\t')) name.remove_prefix(1);
      while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
      if (!name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return is_name_char(c) || c == '_'; }))
        names.emplace_back(name);
    }
    pos = eol + 1;
  }
  return names;
}

// Code points of valid UTF-8 (nlohmann::json strings are).
std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const std::optional<uint32_t> cp = next_utf8(s, i);
    KS_CHECK(cp, "the schema holds a string that is not valid UTF-8");
    out.push_back(*cp);
  }
  return out;
}

std::string utf8(uint32_t cp) {
  std::string out;
  append_utf8(out, cp);
  return out;
}

// A code point inside a GBNF class, escaped so that no character is special there.
std::string class_char(uint32_t cp) {
  if (cp < 0x80) return fmt::format("\\x{:02X}", cp);
  if (cp < 0x10000) return fmt::format("\\u{:04X}", cp);
  return fmt::format("\\U{:08X}", cp);
}

template <class Json>
class Converter {
 public:
  explicit Converter(const Json& root) : root_(root) {
    for (const auto& p : primitives()) used_.insert(p.name);
    used_.insert("root");
  }

  std::string run() {
    const std::string top = fresh("top");
    refs_["#"] = top;
    std::string e = visit(root_, top, "#");
    if (e != top) add_rule(top, e);
    std::string out = "root ::= " + prim("ws") + " " + top + "\n";
    return out + rules_;
  }

  std::string object_grammar() { return "root ::= " + prim("ws") + " " + prim("object") + "\n" + rules_; }

 private:
  const Json& root_;
  std::string rules_;
  std::set<std::string> used_;
  std::set<std::string> emitted_prims_;
  std::map<std::string, std::string> refs_;  // local $ref -> its rule

  std::string fresh(std::string_view hint) {
    std::string base = sanitize(hint);
    std::string name = base;
    for (int i = 2; used_.count(name); ++i) name = fmt::format("{}-{}", base, i);
    used_.insert(name);
    return name;
  }

  void add_rule(const std::string& name, const std::string& body) { rules_ += name + " ::= " + body + "\n"; }

  std::string prim(std::string_view name) {
    if (emitted_prims_.insert(std::string(name)).second) {
      for (const auto& p : primitives()) {
        if (name != p.name) continue;
        add_rule(p.name, p.body);
        for (const char* d : p.deps) prim(d);
      }
    }
    return std::string(name);
  }

  static bool has(const Json& s, std::string_view key) { return s.contains(std::string(key)); }

  // A non-negative integer keyword (minItems, maxLength, ...); 2.0 counts as 2.
  static int64_t count(const Json& s, const char* key, const std::string& path) {
    const Json& v = s[key];
    const bool ok = v.is_number_integer() ? v.template get<int64_t>() >= 0
                                          : v.is_number_float() && v.template get<double>() >= 0 &&
                                                std::floor(v.template get<double>()) == v.template get<double>();
    KS_CHECK(ok, "JSON Schema: '{}' at {} must be a non-negative integer, got {}", key, path, v.dump());
    KS_CHECK(v.template get<double>() < 1e9, "JSON Schema: '{}' {} at {} is too large", key, v.dump(), path);
    return v.template get<int64_t>();
  }

  // The first keyword of `s` that constrains values and is not in `allowed`, or "".
  static std::string other_constraint(const Json& s, const std::set<std::string_view>& allowed) {
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (!kConstraining.count(it.key()) || allowed.count(it.key())) continue;
      // An unknown format is an annotation.
      if (it.key() == "format" &&
          !(it.value().is_string() && kStringFormats.count(it.value().template get<std::string>())))
        continue;
      return it.key();
    }
    return "";
  }

  const Json& resolve(const std::string& ref, const std::string& path) {
    KS_CHECK(!ref.empty() && ref[0] == '#', "JSON Schema: $ref '{}' at {} is not local (only '#...' references)", ref,
             path);
    // URI fragments may percent-encode; JSON pointers then escape ~ and /.
    std::string pointer;
    for (size_t i = 1; i < ref.size(); ++i) {
      if (ref[i] == '%' && i + 2 < ref.size() && std::isxdigit(static_cast<unsigned char>(ref[i + 1])) &&
          std::isxdigit(static_cast<unsigned char>(ref[i + 2]))) {
        pointer += static_cast<char>(std::stoi(ref.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        pointer += ref[i];
      }
    }
    try {
      return root_.at(typename Json::json_pointer(pointer));
    } catch (const nlohmann::json::exception& e) {
      KS_FAIL("JSON Schema: $ref '{}' at {} does not resolve ({})", ref, path, e.what());
    }
  }

  std::string visit_ref(const std::string& ref, const std::string& path) {
    auto it = refs_.find(ref);
    if (it != refs_.end()) return it->second;
    const Json& target = resolve(ref, path);
    std::string last = ref.substr(ref.rfind('/') == std::string::npos ? 0 : ref.rfind('/') + 1);
    const std::string name = fresh(last.empty() || last == "#" ? "ref" : last);
    // Registered before the target is translated, so a recursive reference finds the rule.
    refs_[ref] = name;
    std::string e = visit(target, name, ref);
    if (e != name) add_rule(name, e);
    return name;
  }

  // An expression (a rule name or a parenthesized group) that matches the JSON texts valid under `s`. It may
  // define the rule `name` (reserved for it by the caller) and rules named after it.
  std::string visit(const Json& s, const std::string& name, const std::string& path) {
    if (s.is_boolean()) {
      KS_CHECK(s.template get<bool>(), "JSON Schema: the schema at {} is false (no value is valid)", path);
      return prim("value");
    }
    KS_CHECK(s.is_object(), "JSON Schema: the schema at {} must be an object or a boolean, got {}", path, s.dump());
    for (auto it = s.begin(); it != s.end(); ++it) {
      KS_CHECK(!kRefused.count(it.key()), "JSON Schema keyword '{}' (at {}) is not supported", it.key(), path);
    }
    const bool nullable = has(s, "nullable") && s["nullable"].is_boolean() && s["nullable"].template get<bool>();

    if (has(s, "$ref")) {
      KS_CHECK(s["$ref"].is_string(), "JSON Schema: $ref at {} must be a string", path);
      std::string other = other_constraint(s, {"$ref"});
      if (!other.empty()) return visit_all_of(s, name, path);
      std::string e = visit_ref(s["$ref"].template get<std::string>(), path);
      return nullable ? define(name, e + " | " + prim("null")) : e;
    }
    if (has(s, "allOf")) return visit_all_of(s, name, path);
    for (const char* key : {"anyOf", "oneOf"}) {
      if (!has(s, key)) continue;
      const Json& list = s[key];
      KS_CHECK(list.is_array() && !list.empty(), "JSON Schema: '{}' at {} must be a non-empty array", key, path);
      std::string other = other_constraint(s, {key});
      KS_CHECK(other.empty(), "JSON Schema: '{}' next to '{}' (at {}) is not supported; move '{}' into each branch",
               key, other, path, other);
      std::vector<std::string> alts;
      for (size_t i = 0; i < list.size(); ++i) {
        std::string sub = fresh(fmt::format("{}-{}", name, i + 1));
        std::string e = visit(list[i], sub, fmt::format("{}/{}/{}", path, key, i));
        alts.push_back(e);
      }
      if (nullable) alts.push_back(prim("null"));
      return define(name, join(alts, " | "));
    }
    if (has(s, "const") || has(s, "enum")) return visit_enum(s, name, path, nullable);

    std::vector<std::string> types = schema_types(s, path);
    if (types.empty()) return prim("value");  // any value, null included
    if (nullable && std::find(types.begin(), types.end(), "null") == types.end()) types.push_back("null");
    if (types.size() == 1) return visit_type(s, types[0], name, path);
    std::vector<std::string> alts;
    for (const auto& t : types) alts.push_back(visit_type(s, t, fresh(name + "-" + t), path));
    return define(name, join(alts, " | "));
  }

  std::string define(const std::string& name, const std::string& body) {
    add_rule(name, body);
    return name;
  }

  // The `type` keyword as a list; absent, the types whose keywords appear (none: any value).
  static std::vector<std::string> schema_types(const Json& s, const std::string& path) {
    std::vector<std::string> types;
    if (has(s, "type")) {
      const Json& t = s["type"];
      std::vector<std::string> listed;
      if (t.is_string()) {
        listed.push_back(t.template get<std::string>());
      } else {
        KS_CHECK(t.is_array() && !t.empty(), "JSON Schema: 'type' at {} must be a string or a non-empty array", path);
        for (const auto& x : t) {
          KS_CHECK(x.is_string(), "JSON Schema: 'type' at {} must list strings, got {}", path, x.dump());
          listed.push_back(x.template get<std::string>());
        }
      }
      for (const auto& x : listed) {
        KS_CHECK(std::find(kTypes.begin(), kTypes.end(), x) != kTypes.end(), "JSON Schema: unknown type '{}' at {}", x,
                 path);
        if (std::find(types.begin(), types.end(), x) == types.end()) types.push_back(x);
      }
      // number covers integer.
      if (std::find(types.begin(), types.end(), "number") != types.end()) std::erase(types, std::string("integer"));
      return types;
    }
    auto any_of = [&](const std::set<std::string_view>& keys) {
      return std::any_of(keys.begin(), keys.end(), [&](std::string_view k) { return has(s, k); });
    };
    if (any_of(kObjectKeywords)) types.push_back("object");
    if (any_of(kArrayKeywords)) types.push_back("array");
    if (any_of(kStringKeywords)) types.push_back("string");
    if (any_of(kNumberKeywords)) types.push_back("number");
    return types;
  }

  std::string visit_type(const Json& s, const std::string& type, const std::string& name, const std::string& path) {
    if (type == "object") return visit_object(s, name, path);
    if (type == "array") return visit_array(s, name, path);
    if (type == "string") return visit_string(s, name, path);
    if (type == "integer") return visit_integer(s, name, path);
    if (type == "number") return visit_number(s, name, path);
    return prim(type);  // boolean, null
  }

  static bool of_type(const Json& v, std::string_view type) {
    if (type == "object") return v.is_object();
    if (type == "array") return v.is_array();
    if (type == "string") return v.is_string();
    if (type == "number") return v.is_number();
    if (type == "integer")
      return v.is_number_integer() ||
             (v.is_number_float() && std::floor(v.template get<double>()) == v.template get<double>());
    if (type == "boolean") return v.is_boolean();
    return v.is_null();
  }

  std::string visit_enum(const Json& s, const std::string& name, const std::string& path, bool nullable) {
    std::string other = other_constraint(s, {"enum", "const", "type"});
    KS_CHECK(other.empty(), "JSON Schema: '{}' next to enum/const (at {}) is not supported", other, path);
    std::vector<const Json*> values;
    if (has(s, "const")) values.push_back(&s["const"]);
    if (has(s, "enum")) {
      KS_CHECK(s["enum"].is_array(), "JSON Schema: 'enum' at {} must be an array", path);
      for (const auto& v : s["enum"]) {
        // const and enum together: the values in both.
        if (!has(s, "const") || v == s["const"]) values.push_back(&v);
      }
      if (has(s, "const")) values.erase(values.begin());
    }
    std::vector<std::string> types;
    if (has(s, "type")) types = schema_types(s, path);
    if (nullable && !types.empty()) types.push_back("null");
    std::vector<std::string> alts;
    std::set<std::string> seen;
    for (const Json* v : values) {
      if (!types.empty() &&
          std::none_of(types.begin(), types.end(), [&](const std::string& t) { return of_type(*v, t); }))
        continue;
      std::string text = v->dump();
      if (seen.insert(text).second) alts.push_back(gbnf_literal(text));
    }
    if (nullable && seen.insert("null").second) alts.push_back(prim("null"));
    KS_CHECK(!alts.empty(), "JSON Schema: no value satisfies enum/const (at {})", path);
    return define(name, join(alts, " | "));
  }

  // ---- allOf (object schemas merged) ----

  // Appends the parts of an allOf (nested allOfs and $refs followed) to `parts`.
  void flatten_all_of(const Json& s, const std::string& path, std::vector<std::pair<const Json*, std::string>>& parts,
                      std::vector<Json>& owned, int depth) {
    KS_CHECK(depth < 64, "JSON Schema: allOf/$ref nesting at {} is too deep (a reference cycle?)", path);
    if (s.is_boolean()) {
      KS_CHECK(s.template get<bool>(), "JSON Schema: the schema at {} is false (no value is valid)", path);
      return;
    }
    KS_CHECK(s.is_object(), "JSON Schema: the schema at {} must be an object or a boolean", path);
    Json rest = Json::object();
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it.key() == "allOf") {
        KS_CHECK(it.value().is_array(), "JSON Schema: 'allOf' at {} must be an array", path);
        for (size_t i = 0; i < it.value().size(); ++i)
          flatten_all_of(it.value()[i], fmt::format("{}/allOf/{}", path, i), parts, owned, depth + 1);
      } else if (it.key() == "$ref") {
        KS_CHECK(it.value().is_string(), "JSON Schema: $ref at {} must be a string", path);
        std::string ref = it.value().template get<std::string>();
        flatten_all_of(resolve(ref, path), ref, parts, owned, depth + 1);
      } else {
        rest[it.key()] = it.value();
      }
    }
    owned.push_back(std::move(rest));
    parts.emplace_back(nullptr, path);  // filled in below, once `owned` stops moving
  }

  std::string visit_all_of(const Json& s, const std::string& name, const std::string& path) {
    std::vector<std::pair<const Json*, std::string>> parts;
    std::vector<Json> owned;
    flatten_all_of(s, path, parts, owned, 0);
    for (size_t i = 0; i < parts.size(); ++i) parts[i].first = &owned[i];

    // Parts with nothing but annotations are neutral; one constraining part is just that schema.
    std::vector<std::pair<const Json*, std::string>> real;
    for (const auto& p : parts) {
      if (!other_constraint(*p.first, {}).empty() || has(*p.first, "nullable")) real.push_back(p);
    }
    if (real.empty()) return prim("value");
    if (real.size() == 1) return visit(*real[0].first, name, real[0].second);

    Json merged = Json::object();
    merged["type"] = "object";
    Json props = Json::object();
    std::set<std::string> required;
    std::vector<const Json*> closed;  // parts with additionalProperties false
    for (const auto& [part, part_path] : real) {
      const Json& p = *part;
      std::string other = other_constraint(p, {"type", "properties", "required", "additionalProperties"});
      KS_CHECK(other.empty(), "JSON Schema: allOf is supported only for object schemas ('{}' at {})", other, part_path);
      KS_CHECK(!has(p, "nullable"), "JSON Schema: 'nullable' inside allOf (at {}) is not supported", part_path);
      if (has(p, "type")) {
        KS_CHECK(p["type"] == "object", "JSON Schema: allOf is supported only for object schemas (type {} at {})",
                 p["type"].dump(), part_path);
      }
      if (has(p, "additionalProperties")) {
        const Json& ap = p["additionalProperties"];
        KS_CHECK(ap.is_boolean(),
                 "JSON Schema: additionalProperties with a schema inside allOf (at {}) is not supported", part_path);
        if (!ap.template get<bool>()) closed.push_back(&p);
      }
      if (has(p, "properties")) {
        KS_CHECK(p["properties"].is_object(), "JSON Schema: 'properties' at {} must be an object", part_path);
        for (auto it = p["properties"].begin(); it != p["properties"].end(); ++it) {
          if (props.contains(it.key())) {
            KS_CHECK(props[it.key()] == it.value(),
                     "JSON Schema: property '{}' is declared differently in two allOf branches (at {})", it.key(),
                     part_path);
          } else {
            props[it.key()] = it.value();
          }
        }
      }
      if (has(p, "required")) {
        KS_CHECK(p["required"].is_array(), "JSON Schema: 'required' at {} must be an array", part_path);
        for (const auto& r : p["required"]) {
          KS_CHECK(r.is_string(), "JSON Schema: 'required' at {} must list strings", part_path);
          required.insert(r.template get<std::string>());
        }
      }
    }
    // A part that forbids additional properties forbids the others' properties too.
    for (const Json* c : closed) {
      Json kept = Json::object();
      for (auto it = props.begin(); it != props.end(); ++it) {
        if ((*c).contains("properties") && (*c)["properties"].contains(it.key())) {
          kept[it.key()] = it.value();
        } else {
          KS_CHECK(!required.count(it.key()),
                   "JSON Schema: allOf requires '{}' but a branch with additionalProperties false forbids it (at {})",
                   it.key(), path);
        }
      }
      props = std::move(kept);
    }
    for (const auto& r : required) {
      KS_CHECK(props.contains(r) || closed.empty(),
               "JSON Schema: allOf requires '{}' but a branch with additionalProperties false forbids it (at {})", r,
               path);
    }
    merged["properties"] = props;
    Json req = Json::array();
    for (const auto& r : required) req.push_back(r);
    merged["required"] = req;
    if (!closed.empty()) merged["additionalProperties"] = false;
    return visit_object(merged, name, path);
  }

  // ---- Objects ----

  // Object keys (closing quote included, opening quote not) that differ from every name in `names`: a trie
  // walk along the declared names; leaving it (another character, or an escape that cannot spell the
  // trie's next character) frees the rest. A \u escape is not taken on the way since it could spell one.
  std::string key_except(const std::vector<std::string>& names, const std::string& name) {
    struct Node {
      std::map<uint32_t, int> children;
      bool terminal = false;
    };
    std::vector<Node> nodes(1);
    for (const auto& n : names) {
      int at = 0;
      for (uint32_t cp : code_points(n)) {
        auto it = nodes[at].children.find(cp);
        if (it == nodes[at].children.end()) {
          nodes.emplace_back();
          it = nodes[at].children.emplace(cp, static_cast<int>(nodes.size()) - 1).first;
        }
        at = it->second;
      }
      nodes[at].terminal = true;
    }
    const std::string rest = prim("char") + "* \"\\\"\"";
    static const std::vector<std::pair<char, uint32_t>> escapes = {{'"', '"'},  {'\\', '\\'}, {'/', '/'},  {'b', 0x08},
                                                                   {'f', 0x0C}, {'n', 0x0A},  {'r', 0x0D}, {'t', 0x09}};
    std::vector<std::string> rule_names(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i) rule_names[i] = fresh(fmt::format("{}-key-{}", name, i));
    for (size_t i = 0; i < nodes.size(); ++i) {
      const Node& node = nodes[i];
      std::vector<std::string> alts;
      if (!node.terminal) alts.push_back("\"\\\"\"");
      std::string excluded = R"(\"\\\x00-\x1F)";
      for (const auto& [cp, child] : node.children) {
        // The character as a JSON string spells it (an escape for quote, backslash and controls).
        std::string spelled = nlohmann::json(utf8(cp)).dump();
        spelled = spelled.substr(1, spelled.size() - 2);
        alts.push_back(gbnf_literal(spelled) + " " + rule_names[child]);
        excluded += class_char(cp);
      }
      alts.push_back("[^" + excluded + "] " + rest);
      std::string letters;
      for (const auto& [letter, decoded] : escapes) {
        if (!node.children.count(decoded)) letters += class_char(static_cast<unsigned char>(letter));
      }
      if (!letters.empty()) alts.push_back("\"\\\\\" [" + letters + "] " + rest);
      add_rule(rule_names[i], join(alts, " | "));
    }
    return "\"\\\"\" " + rule_names[0];
  }

  std::string visit_object(const Json& s, const std::string& name, const std::string& path) {
    std::vector<std::pair<std::string, const Json*>> props;
    if (has(s, "properties")) {
      KS_CHECK(s["properties"].is_object(), "JSON Schema: 'properties' at {} must be an object", path);
      for (auto it = s["properties"].begin(); it != s["properties"].end(); ++it)
        props.emplace_back(it.key(), &it.value());
    }
    std::set<std::string> required;
    if (has(s, "required")) {
      KS_CHECK(s["required"].is_array(), "JSON Schema: 'required' at {} must be an array", path);
      for (const auto& r : s["required"]) {
        KS_CHECK(r.is_string(), "JSON Schema: 'required' at {} must list strings", path);
        required.insert(r.template get<std::string>());
      }
    }
    // Extra members: none, any value, or values of a schema.
    enum class Extra { None, Any, Schema } extra = props.empty() ? Extra::Any : Extra::None;
    const Json* extra_schema = nullptr;
    bool explicitly_closed = false;
    if (has(s, "additionalProperties")) {
      const Json& ap = s["additionalProperties"];
      if (ap.is_boolean()) {
        extra = ap.template get<bool>() ? Extra::Any : Extra::None;
        explicitly_closed = !ap.template get<bool>();
      } else {
        KS_CHECK(ap.is_object(), "JSON Schema: 'additionalProperties' at {} must be a boolean or a schema", path);
        extra = ap.empty() ? Extra::Any : Extra::Schema;
        extra_schema = &ap;
      }
    }
    // A required name without a property schema: a member whose value is what additionalProperties allows.
    static const Json any_schema = Json::object();
    for (const auto& r : required) {
      if (std::any_of(props.begin(), props.end(), [&](const auto& p) { return p.first == r; })) continue;
      KS_CHECK(!explicitly_closed,
               "JSON Schema: '{}' is required but not a property, and additionalProperties is false (at {})", r, path);
      props.emplace_back(r, extra == Extra::Schema ? extra_schema : &any_schema);
    }

    size_t n_required = 0;
    for (const auto& p : props) n_required += required.count(p.first);
    for (const char* key : {"minProperties", "maxProperties"}) {
      if (!has(s, key)) continue;
      const int64_t v = count(s, key, path);
      const bool trivially = std::string_view(key) == "minProperties"
                                 ? v <= static_cast<int64_t>(n_required)
                                 : (extra == Extra::None && v >= static_cast<int64_t>(props.size()));
      KS_CHECK(trivially, "JSON Schema keyword '{}' (at {}) is not supported (only when every object satisfies it)",
               key, path);
    }
    if (props.empty() && extra == Extra::Any) return prim("object");

    const std::string ws = prim("ws");
    std::vector<std::string> members;
    std::vector<bool> is_required;
    for (const auto& [key, sub] : props) {
      std::string e = visit(*sub, fresh(name + "-" + key), path + "/properties/" + key);
      members.push_back(gbnf_literal(nlohmann::json(key).dump()) + " " + ws + " \":\" " + ws + " " + e + " " + ws);
      is_required.push_back(required.count(key) > 0);
    }
    std::string extra_member;
    if (extra != Extra::None) {
      std::string value = extra == Extra::Any
                              ? prim("value")
                              : visit(*extra_schema, fresh(name + "-additional"), path + "/additionalProperties");
      std::vector<std::string> names;
      for (const auto& p : props) names.push_back(p.first);
      std::string key = props.empty() ? prim("string") : key_except(names, name);
      extra_member =
          define(fresh(name + "-additional-member"), key + " " + ws + " \":\" " + ws + " " + value + " " + ws);
    }
    const std::string comma = "\",\" " + ws + " ";
    // after[i]: the members from i on when one has come before (each needs a comma).
    const size_t n = members.size();
    std::vector<std::string> after(n + 1);
    after[n] = extra_member.empty() ? "" : "( " + comma + extra_member + " )*";
    // How many alternatives the first member has: every leading optional one, the first required one.
    size_t firsts = 0;
    while (firsts < n && !is_required[firsts]) ++firsts;
    const bool all_optional = firsts == n;
    if (firsts < n) ++firsts;
    for (size_t i = n; i-- > 0;) {
      std::string item = comma + members[i];
      std::string e = join({is_required[i] ? item : "( " + item + " )?", after[i + 1]}, " ");
      // Named when several alternatives share it, so the grammar stays linear in the number of properties.
      after[i] = (firsts > 1 && i > 0) ? define(fresh(fmt::format("{}-after-{}", name, i)), e) : e;
    }
    std::vector<std::string> alts;
    for (size_t k = 0; k < firsts; ++k) alts.push_back(join({members[k], after[k + 1]}, " "));
    if (all_optional && !extra_member.empty()) alts.push_back(extra_member + " " + after[n]);
    std::string body;
    if (!alts.empty()) body = "( " + join(alts, " | ") + " )" + (all_optional ? "?" : "");
    return define(name, join({"\"{\"", ws, body, "\"}\""}, " "));
  }

  // ---- Arrays ----

  std::string visit_array(const Json& s, const std::string& name, const std::string& path) {
    if (has(s, "uniqueItems")) {
      KS_CHECK(s["uniqueItems"].is_boolean(), "JSON Schema: 'uniqueItems' at {} must be a boolean", path);
      KS_CHECK(!s["uniqueItems"].template get<bool>(), "JSON Schema keyword 'uniqueItems' (at {}) is not supported",
               path);
    }
    const Json* prefix = nullptr;
    const Json* rest = nullptr;  // nullptr: any value
    std::string rest_key = "items";
    if (has(s, "prefixItems")) {
      prefix = &s["prefixItems"];
      if (has(s, "items")) rest = &s["items"];
    } else if (has(s, "items") && s["items"].is_array()) {
      prefix = &s["items"];
      rest_key = "additionalItems";
      if (has(s, "additionalItems")) rest = &s["additionalItems"];
    } else if (has(s, "items")) {
      rest = &s["items"];
    }
    if (prefix) KS_CHECK(prefix->is_array(), "JSON Schema: 'prefixItems' at {} must be an array", path);
    const int64_t k = prefix ? static_cast<int64_t>(prefix->size()) : 0;
    const bool rest_allowed = !(rest && rest->is_boolean() && !rest->template get<bool>());

    int64_t min_items = has(s, "minItems") ? count(s, "minItems", path) : 0;
    int64_t max_items = has(s, "maxItems") ? count(s, "maxItems", path) : -1;
    if (!rest_allowed) max_items = max_items < 0 ? k : std::min(max_items, k);
    KS_CHECK(max_items < 0 || min_items <= max_items, "JSON Schema: no array satisfies minItems/maxItems (at {})",
             path);
    if (k == 0 && !rest && min_items == 0 && max_items < 0) return prim("array");

    const std::string ws = prim("ws");
    std::vector<std::string> elements;
    for (int64_t i = 0; i < k; ++i)
      elements.push_back(
          visit((*prefix)[i], fresh(fmt::format("{}-{}", name, i + 1)), fmt::format("{}/prefixItems/{}", path, i)));
    std::string item;
    if (rest_allowed) item = rest ? visit(*rest, fresh(name + "-item"), path + "/" + rest_key) : prim("value");

    const std::string comma = "\",\" " + ws + " ";
    // The elements from index i on (i of them before), recursively through the prefix.
    std::function<std::string(int64_t)> from = [&](int64_t i) -> std::string {
      if (max_items >= 0 && i >= max_items) return "";
      const std::string sep = i == 0 ? "" : comma;
      if (i < k) {
        std::string e = join({sep + elements[i] + " " + ws, from(i + 1)}, " ");
        return i < min_items ? e : "( " + e + " )?";
      }
      if (!rest_allowed) return "";
      const int64_t rmin = std::max<int64_t>(0, min_items - i);
      const int64_t rmax = max_items < 0 ? -1 : max_items - i;
      const std::string one = item + " " + ws;
      if (i > 0) return repeat("( " + comma + one + " )", rmin, rmax);
      // The first element has no comma.
      std::string tail = repeat("( " + comma + one + " )", std::max<int64_t>(0, rmin - 1), rmax < 0 ? -1 : rmax - 1);
      std::string e = join({one, tail}, " ");
      return rmin >= 1 ? e : "( " + e + " )?";
    };
    return define(name, join({"\"[\"", ws, from(0), "\"]\""}, " "));
  }

  // ---- Strings ----

  std::string visit_string(const Json& s, const std::string& name, const std::string& path) {
    int64_t min_length = has(s, "minLength") ? count(s, "minLength", path) : 0;
    int64_t max_length = has(s, "maxLength") ? count(s, "maxLength", path) : -1;
    KS_CHECK(max_length < 0 || min_length <= max_length, "JSON Schema: no string satisfies minLength/maxLength (at {})",
             path);
    const bool lengths = min_length > 0 || max_length >= 0;
    std::string format;
    if (has(s, "format")) {
      KS_CHECK(s["format"].is_string(), "JSON Schema: 'format' at {} must be a string", path);
      format = s["format"].template get<std::string>();
      if (!kStringFormats.count(format)) format.clear();  // an annotation
    }
    const std::string quote = "\"\\\"\"";
    if (has(s, "pattern")) {
      KS_CHECK(s["pattern"].is_string(), "JSON Schema: 'pattern' at {} must be a string", path);
      KS_CHECK(!lengths, "JSON Schema: 'pattern' with minLength/maxLength (at {}) is not supported", path);
      KS_CHECK(format.empty(), "JSON Schema: 'pattern' with format '{}' (at {}) is not supported", format, path);
      return define(name, quote + " " + pattern(s["pattern"].template get<std::string>(), name, path) + " " + quote);
    }
    if (!format.empty()) {
      KS_CHECK(!lengths, "JSON Schema: format '{}' with minLength/maxLength (at {}) is not supported", format, path);
      return define(name, quote + " " + prim(format) + " " + quote);
    }
    if (!lengths) return prim("string");
    std::string chars = repeat(prim("char"), min_length, max_length);
    return define(name, join({quote, chars, quote}, " "));
  }

  // A string's content matching `re` somewhere (JSON Schema patterns are not anchored): each top-level branch
  // translated alone, with any characters where it lacks ^ or $.
  std::string pattern(const std::string& re, const std::string& name, const std::string& path) {
    const std::string chars = prim("char") + "*";
    std::vector<std::string> alts;
    bool empty_alt = false;
    for (std::string branch : regex_branches(re)) {
      const bool start = !branch.empty() && branch.front() == '^';
      if (start) branch.erase(0, 1);
      const bool end = ends_with_anchor(branch);
      if (end) branch.pop_back();
      std::string core;
      if (!branch.empty()) {
        // regex.h names its helper rules after ours; pick a name whose helpers collide with nothing.
        std::string text;
        std::string rule;
        for (int attempt = 0;; ++attempt) {
          KS_CHECK(attempt < 100, "JSON Schema: could not name the rules of pattern at {}", path);
          rule = fresh(name + "-pattern");
          text.clear();
          try {
            regex_to_gbnf(branch, rule, text, RegexOptions{.json_string = true});
          } catch (const Error& e) {
            KS_FAIL("JSON Schema: 'pattern' {} at {}: {}", nlohmann::json(re).dump(), path, e.what());
          }
          std::vector<std::string> defined = defined_rules(text);
          if (std::none_of(defined.begin(), defined.end(),
                           [&](const std::string& d) { return d != rule && used_.count(d); })) {
            for (const auto& d : defined) used_.insert(d);
            break;
          }
        }
        rules_ += text;
        if (!rules_.empty() && rules_.back() != '\n') rules_ += '\n';
        core = rule;
      }
      std::string e =
          core.empty() ? (start && end ? "" : chars) : join({start ? "" : chars, core, end ? "" : chars}, " ");
      if (e.empty()) {
        empty_alt = true;
      } else {
        alts.push_back(e);
      }
    }
    if (alts.empty()) return "";
    return "( " + join(alts, " | ") + " )" + (empty_alt ? "?" : "");
  }

  // ---- Numbers ----

  void check_multiple_of(const Json& s, bool integer, const std::string& path) {
    if (!has(s, "multipleOf")) return;
    const Json& m = s["multipleOf"];
    KS_CHECK(integer && m.is_number() && m.template get<double>() == 1.0,
             "JSON Schema keyword 'multipleOf' (at {}) is not supported (only 1 on integers)", path);
  }

  std::string visit_integer(const Json& s, const std::string& name, const std::string& path) {
    check_multiple_of(s, true, path);
    auto lower = read_bound(s, true);
    auto upper = read_bound(s, false);
    if (!lower && !upper) return prim("integer");
    // Whole bounds, inclusive, within what 16 digits reach (one past: nothing reachable).
    const int64_t lo = lower ? std::max(integer_bound(s, *lower, true), -kMaxInt) : -kMaxInt;
    const int64_t hi = upper ? std::min(integer_bound(s, *upper, false), kMaxInt) : kMaxInt;
    KS_CHECK(lo <= hi, "JSON Schema: no integer of at most 16 digits satisfies {}{} (at {})",
             lower ? lower->keyword : "", upper ? (lower ? " and " : "") + upper->keyword : "", path);
    std::vector<std::string> alts;
    if (hi >= 0) alts.push_back(uint_range(std::max<int64_t>(lo, 0), hi));
    if (lo < 0) alts.push_back("\"-\" " + uint_range(hi < 0 ? -hi : 1, -lo));
    return define(name, join(alts, " | "));
  }

  // The inclusive whole bound of an integer, clamped to one past what 16 digits reach. Integer keywords are
  // read as integers: doubles round past 2^53.
  static int64_t integer_bound(const Json& s, const Bound& b, bool lower) {
    const Json& v = s[b.keyword];
    int64_t x;
    if (v.is_number_unsigned()) {
      x = static_cast<int64_t>(std::min<uint64_t>(v.template get<uint64_t>(), kMaxInt + 1));
    } else if (v.is_number_integer()) {
      x = std::clamp<int64_t>(v.template get<int64_t>(), -kMaxInt - 1, kMaxInt + 1);
    } else {
      const double d = b.value;  // clamped to 1e17
      return static_cast<int64_t>(std::clamp<double>(
          lower ? (b.exclusive ? std::floor(d) + 1 : std::ceil(d)) : (b.exclusive ? std::ceil(d) - 1 : std::floor(d)),
          -kMaxInt - 1, kMaxInt + 1));
    }
    if (b.exclusive) x += lower ? 1 : -1;
    return std::clamp<int64_t>(x, -kMaxInt - 1, kMaxInt + 1);
  }

  // A whole bound of a number, or an error naming the keyword.
  static int64_t whole(const Bound& b, const std::string& path) {
    KS_CHECK(std::floor(b.value) == b.value,
             "JSON Schema: '{}' {} on a number (at {}) is not supported (only whole-number bounds)", b.keyword, b.value,
             path);
    return static_cast<int64_t>(b.value);
  }

  std::string visit_number(const Json& s, const std::string& name, const std::string& path) {
    check_multiple_of(s, false, path);
    auto lower = read_bound(s, true);
    auto upper = read_bound(s, false);
    // Bounds past 16 integer digits: every number generated satisfies them, or none does.
    if (lower && lower->value < -1e16) lower.reset();
    if (upper && upper->value > 1e16) upper.reset();
    KS_CHECK(!lower || lower->value <= 1e16,
             "JSON Schema: '{}' (at {}) is beyond the 16 integer digits numbers are generated with", lower->keyword,
             path);
    KS_CHECK(!upper || upper->value >= -1e16,
             "JSON Schema: '{}' (at {}) is beyond the 16 integer digits numbers are generated with", upper->keyword,
             path);
    if (!lower && !upper) return prim("number");
    std::optional<int64_t> lo, hi;
    if (lower) lo = whole(*lower, path);
    if (upper) hi = whole(*upper, path);
    const bool lo_excl = lower && lower->exclusive, hi_excl = upper && upper->exclusive;
    KS_CHECK(!lo || !hi || *lo < *hi || (*lo == *hi && !lo_excl && !hi_excl),
             "JSON Schema: no number satisfies the bounds at {}", path);
    std::vector<std::string> alts;
    // v >= 0 written without a sign.
    if (!hi || *hi > 0 || (*hi == 0 && !hi_excl)) {
      const bool from_lo = lo && *lo >= 0;
      std::string e = magnitude(from_lo ? *lo : 0, from_lo && lo_excl, hi, hi_excl);
      if (!e.empty()) alts.push_back(e);
    }
    // v < 0 as "-" and its magnitude x = -v: v <= hi bounds x from below, v >= lo from above.
    if (!lo || *lo < 0) {
      const bool neg_hi = hi && *hi < 0;
      std::optional<int64_t> x_hi;
      if (lo) x_hi = -*lo;
      std::string e = magnitude(neg_hi ? -*hi : 0, neg_hi ? hi_excl : true, x_hi, lo_excl);
      if (!e.empty()) alts.push_back("\"-\" " + e);
    }
    KS_CHECK(!alts.empty(), "JSON Schema: no number satisfies the bounds at {}", path);
    return define(name, join(alts, " | "));
  }
};

}  // namespace

std::string json_schema_grammar(const nlohmann::json& schema) {
  return Converter<nlohmann::json>(schema).run();
}

std::string json_schema_grammar(const nlohmann::ordered_json& schema) {
  return Converter<nlohmann::ordered_json>(schema).run();
}

std::string json_object_grammar() {
  static const nlohmann::json empty = nlohmann::json::object();
  return Converter<nlohmann::json>(empty).object_grammar();
}

}  // namespace kestrel::structured
