#include "tokenizer/chat_template/builtins.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/chat_template/budget.h"
#include "tokenizer/chat_template/interpreter.h"
#include "tokenizer/chat_template/py_string.h"

namespace kestrel::chat_template {
namespace {

// jinja2's sandbox refuses larger ranges; strings and lists get a similar cap so a template cannot
// exhaust memory.
constexpr int64_t kMaxRange = 100000;
constexpr size_t kMaxRepeatBytes = size_t{64} << 20;

// Binds call arguments to a Python-style signature: positional in order, or by keyword.
class Args {
 public:
  Args(const CallArgs& args, std::string_view fn, std::initializer_list<std::string_view> names)
      : args_(args), fn_(fn), names_(names) {
    KS_CHECK(args.positional.size() <= names_.size(), "{}() takes at most {} argument(s) ({} given)", fn, names_.size(),
             args.positional.size());
    for (const auto& [k, v] : args.keyword) {
      const auto it = std::find(names_.begin(), names_.end(), k);
      KS_CHECK(it != names_.end(), "{}() got an unexpected keyword argument '{}'", fn, k);
      KS_CHECK(static_cast<size_t>(it - names_.begin()) >= args.positional.size(),
               "{}() got multiple values for argument '{}'", fn, k);
    }
  }

  const Value* get(size_t i) const {
    if (i < args_.positional.size()) return &args_.positional[i];
    for (const auto& [k, v] : args_.keyword)
      if (k == names_[i]) return &v;
    return nullptr;
  }
  bool has(size_t i) const { return get(i) != nullptr; }
  const Value& require(size_t i) const {
    const Value* v = get(i);
    KS_CHECK(v, "{}() missing required argument '{}'", fn_, names_[i]);
    return *v;
  }
  bool flag(size_t i, bool dflt) const {
    const Value* v = get(i);
    return v ? v->truthy() : dflt;
  }
  int64_t integer(size_t i, int64_t dflt) const {
    const Value* v = get(i);
    if (!v || v->is_none()) return dflt;
    KS_CHECK(v->is_int() || v->is_bool(), "{}(): '{}' must be an integer, not {}", fn_, names_[i], v->type_name());
    return v->to_int();
  }
  std::optional<std::string> string(size_t i) const {
    const Value* v = get(i);
    if (!v || v->is_none()) return std::nullopt;
    KS_CHECK(v->is_string(), "{}(): '{}' must be a string, not {}", fn_, names_[i], v->type_name());
    return v->as_string();
  }

 private:
  const CallArgs& args_;
  std::string_view fn_;
  std::vector<std::string_view> names_;
};

Value make_function(std::string name, std::function<Value(CallArgs&, Interpreter&)> fn) {
  auto c = std::make_shared<Callable>();
  c->name = std::move(name);
  c->fn = std::move(fn);
  return Value(std::shared_ptr<const Callable>(std::move(c)));
}

Value make_tuple(Value a, Value b) {
  return Value(ValueList{std::move(a), std::move(b)}, Value::Seq::Tuple);
}

ValueList string_values(const std::vector<std::string>& parts) {
  ValueList out;
  out.reserve(parts.size());
  for (const auto& p : parts) out.emplace_back(p);
  return out;
}

// ---- arithmetic ----

int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  KS_CHECK(!__builtin_add_overflow(a, b, &r), "integer overflow");
  return r;
}

int64_t checked_sub(int64_t a, int64_t b) {
  int64_t r;
  KS_CHECK(!__builtin_sub_overflow(a, b, &r), "integer overflow");
  return r;
}

int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  KS_CHECK(!__builtin_mul_overflow(a, b, &r), "integer overflow");
  return r;
}

int64_t floor_div(int64_t a, int64_t b) {
  KS_CHECK(b != 0, "integer division or modulo by zero");
  KS_CHECK(!(a == INT64_MIN && b == -1), "integer overflow");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t floor_mod(int64_t a, int64_t b) {
  KS_CHECK(b != 0, "integer division or modulo by zero");
  if (b == -1) return 0;
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

double float_mod(double a, double b) {
  KS_CHECK(b != 0.0, "float modulo");
  double r = std::fmod(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

// CPython's float floor division (float_divmod), exact where floor(a / b) would round wrongly.
double float_floor_div(double a, double b) {
  const double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1.0;
  if (div == 0) return std::copysign(0.0, a / b);
  double floordiv = std::floor(div);
  if (div - floordiv > 0.5) floordiv += 1.0;
  return floordiv;
}

// A string result that stays Markup when its source was (markupsafe's str methods do that).
Value same_flavor(const Value& source, std::string s) {
  return source.is_markup() ? Value::markup(std::move(s)) : Value(std::move(s));
}

std::string html_escape(const std::string& s);

// The text of v as it joins a Markup string: Markup passes through, anything else is escaped.
std::string markup_text(const Value& v) {
  return v.is_markup() ? v.as_string() : html_escape(v.str());
}

// The bytes a shallow copy of `list` makes: its items, and the strings among them (nested lists and
// dicts are shared).
size_t copy_bytes(const ValueList& list) {
  size_t bytes = list.size() * sizeof(Value);
  for (const Value& v : list)
    if (v.is_string()) bytes += v.as_string().size();
  return bytes;
}

Value repeat(const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_string() ? same_flavor(seq, "") : Value(ValueList{}, seq.seq());
  if (seq.is_string()) {
    const std::string& s = seq.as_string();
    KS_CHECK(static_cast<size_t>(n) <= kMaxRepeatBytes && s.size() * static_cast<size_t>(n) <= kMaxRepeatBytes,
             "string repetition result is too large");
    charge_bytes(s.size() * static_cast<size_t>(n));
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out += s;
    return same_flavor(seq, std::move(out));
  }
  const ValueList& list = seq.as_list();
  KS_CHECK(static_cast<size_t>(n) <= kMaxRepeatBytes &&
               list.size() * static_cast<size_t>(n) <= kMaxRepeatBytes / sizeof(Value),
           "list repetition result is too large");
  charge_bytes(copy_bytes(list) * static_cast<size_t>(n));
  ValueList out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), list.begin(), list.end());
  return Value(std::move(out), seq.seq());
}

[[noreturn]] void unsupported_operands(std::string_view op, const Value& a, const Value& b) {
  KS_FAIL("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(), b.type_name());
}

std::string percent_format(const std::string& fmt_str, const Value& args, bool escape_args = false);

// ---- iteration helpers ----

// jinja2's make_attrgetter: "a.b.0" walks getitem lookups (dict key first, then attribute); a
// default replaces an undefined at every step.
Value get_attribute_path(Interpreter& in, const Value& item, const std::string& path, const Value* dflt = nullptr) {
  Value cur = item;
  for (const auto& part : py::split(path, std::string("."), -1)) {
    const bool numeric =
        !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    cur = numeric ? in.get_item(cur, Value(static_cast<int64_t>(std::strtoll(part.c_str(), nullptr, 10))))
                  : in.get_item(cur, Value(part));
    if (dflt && !dflt->is_none() && cur.is_undefined()) cur = *dflt;
  }
  return cur;
}

// A sort/unique key: lower-cased strings unless case_sensitive.
Value fold_case(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(py::lower(v.as_string()));
  return v;
}

std::string to_str(const Value& v) {
  return v.str();
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// jinja2's title filter: words start after '-', whitespace or an opening bracket.
std::string jinja_title(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (size_t i = 0; i < s.size();) {
    const uint32_t cp = py::next_code_point(s, i);
    const bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || py::is_space(cp);
    if (sep) {
      py::append_utf8(out, cp);
      word_start = true;
    } else {
      py::append_utf8(out, word_start ? py::to_upper(cp) : py::to_lower(cp));
      word_start = false;
    }
  }
  return out;
}

std::string indent(const std::string& s, const Value* width_arg, bool first, bool blank) {
  std::string pad = "    ";
  if (width_arg)
    pad = width_arg->is_string() ? width_arg->as_string()
                                 : std::string(static_cast<size_t>(std::max<int64_t>(0, width_arg->to_int())), ' ');
  // jinja2 appends a newline first so splitlines() keeps a trailing empty line.
  std::vector<std::string> lines = py::splitlines(s + "\n", false);
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + pad : "") + lines[k];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].empty() ? "" : pad + lines[k]);
  }
  if (first) rv = pad + rv;
  return rv;
}

Value round_value(const Value& v, int64_t precision, const std::string& method) {
  KS_CHECK(v.is_number(), "round filter needs a number, not {}", v.type_name());
  const double x = v.to_double();
  KS_CHECK(method == "common" || method == "floor" || method == "ceil", "method must be common, ceil or floor");
  if (method == "common") {
    // printf rounds the exact binary value half-to-even, as Python's round() does.
    const std::string s = fmt::format("{:.{}f}", x, static_cast<int>(std::clamp<int64_t>(precision, 0, 300)));
    return Value(std::strtod(s.c_str(), nullptr));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  return Value((method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale);
}

Value to_int_value(const Value& v, const Value* dflt) {
  const Value fallback = dflt ? *dflt : Value(0);
  if (v.is_int()) return v;
  if (v.is_bool()) return Value(v.to_int());
  if (v.is_float()) {
    KS_CHECK(std::isfinite(v.as_float()), "cannot convert float {} to integer", v.repr());
    return Value(static_cast<int64_t>(v.as_float()));
  }
  if (v.is_string()) {
    const std::string s = py::strip(v.as_string(), std::nullopt, true, true);
    char* end = nullptr;
    errno = 0;
    const long long i = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return Value(static_cast<int64_t>(i));
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(d)) return Value(static_cast<int64_t>(d));
  }
  if (v.is_undefined()) raise_undefined(v);
  return fallback;
}

Value to_float_value(const Value& v, const Value* dflt) {
  const Value fallback = dflt ? *dflt : Value(0.0);
  if (v.is_number()) return Value(v.to_double());
  if (v.is_string()) {
    const std::string s = py::strip(v.as_string(), std::nullopt, true, true);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size()) return Value(d);
  }
  if (v.is_undefined()) raise_undefined(v);
  return fallback;
}

std::string tojson(const Value& v, const CallArgs& call) {
  Args a(call, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions opts;
  opts.ensure_ascii = a.flag(0, false);
  opts.sort_keys = a.flag(3, false);
  if (const Value* ind = a.get(1); ind && !ind->is_none()) {
    if (ind->is_string()) {
      opts.indent = ind->as_string();
    } else {
      KS_CHECK(ind->is_int() || ind->is_bool(), "tojson(): indent must be an integer or string");
      opts.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(ind->to_int(), 0, 64)), ' ');
    }
    opts.item_separator = ",";
  }
  if (const Value* sep = a.get(2); sep && !sep->is_none()) {
    KS_CHECK(
        sep->is_list() && sep->as_list().size() == 2 && sep->as_list()[0].is_string() && sep->as_list()[1].is_string(),
        "tojson(): separators must be a pair of strings");
    opts.item_separator = sep->as_list()[0].as_string();
    opts.key_separator = sep->as_list()[1].as_string();
  }
  return python_json_dumps(v, opts);
}

ValueList sorted_values(Interpreter& in, ValueList items, bool reverse, bool case_sensitive, const Value* attribute) {
  std::vector<std::pair<Value, size_t>> keyed;
  keyed.reserve(items.size());
  for (size_t k = 0; k < items.size(); ++k) {
    Value key = attribute && !attribute->is_none() ? get_attribute_path(in, items[k], attribute->str()) : items[k];
    keyed.emplace_back(fold_case(key, case_sensitive), k);
  }
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    charge_steps(1);
    return reverse ? less_than(y.first, x.first, "<") : less_than(x.first, y.first, "<");
  });
  ValueList out;
  out.reserve(items.size());
  for (const auto& [key, idx] : keyed) out.push_back(items[idx]);
  return out;
}

// select/reject/selectattr/rejectattr share one implementation (jinja2's select_or_reject).
Value select_or_reject(Interpreter& in, const Value& seq, const CallArgs& call, bool by_attr, bool want) {
  // jinja2 yields nothing for any falsy input, None included.
  if (!seq.truthy()) return Value(ValueList{}, Value::Seq::Generator);
  std::optional<std::string> attr;
  size_t next = 0;
  if (by_attr) {
    KS_CHECK(!call.positional.empty() && call.positional[0].is_string(),
             "selectattr/rejectattr need an attribute name");
    attr = call.positional[0].as_string();
    next = 1;
  }
  std::optional<std::string> test;
  CallArgs test_args;
  if (call.positional.size() > next) {
    KS_CHECK(call.positional[next].is_string(), "select/reject need a test name");
    test = call.positional[next].as_string();
    test_args.positional.assign(call.positional.begin() + static_cast<std::ptrdiff_t>(next) + 1, call.positional.end());
    test_args.keyword = call.keyword;
  }
  ValueList out;
  for (const Value& item : iterate(seq)) {
    const Value probe = attr ? get_attribute_path(in, item, *attr) : item;
    CallArgs args = test_args;
    const bool pass = test ? apply_test(in, *test, probe, args) : probe.truthy();
    if (pass == want) out.push_back(item);
  }
  return Value(std::move(out), Value::Seq::Generator);
}

Value map_filter(Interpreter& in, const Value& seq, const CallArgs& call) {
  ValueList out;
  // As in jinja2, falsy input (None too) maps to nothing.
  if (!seq.truthy()) return Value(std::move(out), Value::Seq::Generator);
  const ValueList items = iterate(seq);
  if (call.positional.empty()) {
    std::optional<std::string> attribute;
    const Value* dflt = nullptr;
    for (const auto& [k, v] : call.keyword) {
      if (k == "attribute")
        attribute = v.str();
      else if (k == "default")
        dflt = &v;
      else
        KS_FAIL("map() got an unexpected keyword argument '{}'", k);
    }
    KS_CHECK(attribute, "map requires a filter name or attribute=");
    for (const Value& item : items) out.push_back(get_attribute_path(in, item, *attribute, dflt));
    return Value(std::move(out), Value::Seq::Generator);
  }
  KS_CHECK(call.positional[0].is_string(), "map needs a filter name");
  const std::string filter = call.positional[0].as_string();
  CallArgs rest;
  rest.positional.assign(call.positional.begin() + 1, call.positional.end());
  rest.keyword = call.keyword;
  for (const Value& item : items) {
    CallArgs args = rest;
    out.push_back(apply_filter(in, filter, item, args));
  }
  return Value(std::move(out), Value::Seq::Generator);
}

Value min_max(Interpreter& in, const Value& seq, const CallArgs& call, bool want_max, std::string_view name) {
  Args a(call, name, {"case_sensitive", "attribute"});
  const ValueList items = iterate(seq);
  if (items.empty()) return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
  const Value* attribute = a.get(1);
  auto key = [&](const Value& v) {
    return fold_case(attribute && !attribute->is_none() ? get_attribute_path(in, v, attribute->str()) : v,
                     a.flag(0, false));
  };
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t k = 1; k < items.size(); ++k) {
    Value kk = key(items[k]);
    if (want_max ? less_than(best_key, kk, "<") : less_than(kk, best_key, "<")) {
      best = k;
      best_key = std::move(kk);
    }
  }
  return items[best];
}

// ---- filters ----

using FilterFn = Value (*)(Interpreter&, const Value&, CallArgs&);

const std::unordered_map<std::string_view, FilterFn>& filters() {
  static const std::unordered_map<std::string_view, FilterFn> table = {
      {"abs",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "abs", {});
         if (v.is_float()) return Value(std::fabs(v.as_float()));
         KS_CHECK(v.is_int() || v.is_bool(), "bad operand type for abs(): '{}'", v.type_name());
         KS_CHECK(v.to_int() != INT64_MIN, "integer overflow");
         return Value(static_cast<int64_t>(std::llabs(v.to_int())));
       }},
      {"attr",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value {
         return in.get_attr(v, Args(c, "attr", {"name"}).require(0).str());
       }},
      {"capitalize",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "capitalize", {});
         return same_flavor(v, py::capitalize(to_str(v)));
       }},
      {"center",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         const int64_t width = Args(c, "center", {"width"}).integer(0, 80);
         const std::string s = to_str(v);
         const auto len = static_cast<int64_t>(py::length(s));
         if (width <= len) return Value(s);
         const int64_t total = std::min<int64_t>(width - len, kMaxRange);
         const int64_t left = total / 2 + (total & width & 1);
         return Value(std::string(static_cast<size_t>(left), ' ') + s +
                      std::string(static_cast<size_t>(total - left), ' '));
       }},
      {"default",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args a(c, "default", {"default_value", "boolean"});
         const bool use_default = v.is_undefined() || (a.flag(1, false) && !v.truthy());
         if (!use_default) return v;
         const Value* d = a.get(0);
         return d ? *d : Value("");
       }},
      {"dictsort",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value {
         Args a(c, "dictsort", {"case_sensitive", "by", "reverse"});
         KS_CHECK(v.is_dict(), "You can only sort by either \"key\" or \"value\" of a dict");
         const std::string by = a.string(1).value_or("key");
         KS_CHECK(by == "key" || by == "value", "You can only sort by either \"key\" or \"value\"");
         ValueList pairs;
         for (const auto& [k, val] : v.as_dict().entries) pairs.push_back(make_tuple(k, val));
         const Value index(by == "key" ? 0 : 1);
         std::vector<std::pair<Value, size_t>> keyed;
         for (size_t k = 0; k < pairs.size(); ++k)
           keyed.emplace_back(fold_case(in.get_item(pairs[k], index), a.flag(0, false)), k);
         const bool rev = a.flag(2, false);
         std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
           return rev ? less_than(y.first, x.first, "<") : less_than(x.first, y.first, "<");
         });
         ValueList out;
         for (const auto& [key, idx] : keyed) out.push_back(pairs[idx]);
         return Value(std::move(out));
       }},
      {"escape",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "escape", {});
         return Value::markup(markup_text(v));
       }},
      {"first",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "first", {});
         const ValueList items = iterate(v);
         if (items.empty()) return Value::undefined("No first item, sequence was empty.");
         return items.front();
       }},
      {"float",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         return to_float_value(v, Args(c, "float", {"default"}).get(0));
       }},
      {"format",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         KS_CHECK(c.positional.empty() || c.keyword.empty(),
                  "can't handle positional and keyword arguments at the same time");
         if (!c.keyword.empty()) {
           ValueDict d;
           for (const auto& [k, val] : c.keyword) d.set(Value(k), val);
           return Value(percent_format(to_str(v), Value(std::move(d))));
         }
         return Value(percent_format(to_str(v), Value(c.positional, Value::Seq::Tuple)));
       }},
      {"indent",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args a(c, "indent", {"width", "first", "blank"});
         return same_flavor(v, indent(to_str(v), a.get(0), a.flag(1, false), a.flag(2, false)));
       }},
      {"int",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args a(c, "int", {"default", "base"});
         KS_CHECK(a.integer(1, 10) == 10, "int filter: only base 10 is supported");
         return to_int_value(v, a.get(0));
       }},
      {"items",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "items", {});
         if (v.is_undefined()) return Value(ValueList{}, Value::Seq::Generator);
         KS_CHECK(v.is_dict(), "Can only get item pairs from a mapping.");
         ValueList out;
         for (const auto& [k, val] : v.as_dict().entries) out.push_back(make_tuple(k, val));
         return Value(std::move(out), Value::Seq::Generator);
       }},
      {"join",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value {
         Args a(c, "join", {"d", "attribute"});
         const std::string sep = a.has(0) ? a.get(0)->str() : "";
         const Value* attribute = a.get(1);
         std::string out;
         bool first = true;
         for (const Value& item : iterate(v)) {
           if (!first) out += sep;
           first = false;
           out += to_str(attribute && !attribute->is_none() ? get_attribute_path(in, item, attribute->str()) : item);
         }
         return Value(std::move(out));
       }},
      {"last",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "last", {});
         KS_CHECK(!v.is_iterator() && !v.is_dict(), "'{}' object is not reversible", v.type_name());
         const ValueList items = iterate(v);
         if (items.empty()) return Value::undefined("No last item, sequence was empty.");
         return items.back();
       }},
      {"length",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "length", {});
         switch (v.kind()) {
           case Value::Kind::Undefined: return Value(0);
           case Value::Kind::String: return Value(static_cast<int64_t>(py::length(v.as_string())));
           case Value::Kind::List:
             KS_CHECK(!v.is_iterator(), "object of type '{}' has no len()", v.type_name());
             return Value(static_cast<int64_t>(v.as_list().size()));
           case Value::Kind::Dict: return Value(static_cast<int64_t>(v.as_dict().entries.size()));
           default: KS_FAIL("object of type '{}' has no len()", v.type_name());
         }
       }},
      {"list",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "list", {});
         return Value(iterate(v));
       }},
      {"lower",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "lower", {});
         return same_flavor(v, py::lower(to_str(v)));
       }},
      {"map", [](Interpreter& in, const Value& v, CallArgs& c) -> Value { return map_filter(in, v, c); }},
      {"max", [](Interpreter& in, const Value& v, CallArgs& c) -> Value { return min_max(in, v, c, true, "max"); }},
      {"min", [](Interpreter& in, const Value& v, CallArgs& c) -> Value { return min_max(in, v, c, false, "min"); }},
      {"reject",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value { return select_or_reject(in, v, c, false, false); }},
      {"rejectattr",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value { return select_or_reject(in, v, c, true, false); }},
      {"replace",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args a(c, "replace", {"old", "new", "count"});
         return Value(py::replace(to_str(v), a.require(0).str(), a.require(1).str(), a.integer(2, -1)));
       }},
      {"reverse",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "reverse", {});
         if (v.is_string()) {
           const std::string& s = v.as_string();
           const std::vector<size_t> offs = py::code_point_offsets(s);
           std::string out;
           for (size_t k = offs.size() - 1; k > 0; --k) out.append(s, offs[k - 1], offs[k] - offs[k - 1]);
           return Value(std::move(out));
         }
         // jinja2 returns reversed(value) when the value supports it, else a reversed list.
         const bool reversible = v.is_list() && !v.is_iterator();
         ValueList items = iterate(v);
         std::reverse(items.begin(), items.end());
         return Value(std::move(items), reversible ? Value::Seq::ReverseIterator : Value::Seq::List);
       }},
      {"round",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args a(c, "round", {"precision", "method"});
         return round_value(v, a.integer(0, 0), a.string(1).value_or("common"));
       }},
      {"safe",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "safe", {});
         return Value::markup(to_str(v));
       }},
      {"select",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value { return select_or_reject(in, v, c, false, true); }},
      {"selectattr",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value { return select_or_reject(in, v, c, true, true); }},
      {"sort",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value {
         Args a(c, "sort", {"reverse", "case_sensitive", "attribute"});
         return Value(sorted_values(in, iterate(v), a.flag(0, false), a.flag(1, false), a.get(2)));
       }},
      {"string",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "string", {});
         return same_flavor(v, to_str(v));
       }},
      {"sum",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value {
         Args a(c, "sum", {"attribute", "start"});
         Value total = a.has(1) ? *a.get(1) : Value(0);
         const Value* attribute = a.get(0);
         for (const Value& item : iterate(v))
           total = binary_op(
               "+", total, attribute && !attribute->is_none() ? get_attribute_path(in, item, attribute->str()) : item);
         return total;
       }},
      {"title",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "title", {});
         return Value(jinja_title(to_str(v)));
       }},
      {"tojson", [](Interpreter&, const Value& v, CallArgs& c) -> Value { return Value(tojson(v, c)); }},
      {"trim",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         return same_flavor(v, py::strip(to_str(v), Args(c, "trim", {"chars"}).string(0), true, true));
       }},
      {"unique",
       [](Interpreter& in, const Value& v, CallArgs& c) -> Value {
         Args a(c, "unique", {"case_sensitive", "attribute"});
         const Value* attribute = a.get(1);
         ValueList out, seen;
         for (const Value& item : iterate(v)) {
           Value key =
               fold_case(attribute && !attribute->is_none() ? get_attribute_path(in, item, attribute->str()) : item,
                         a.flag(0, false));
           charge_steps(seen.size());
           if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return s.equals(key); })) {
             seen.push_back(std::move(key));
             out.push_back(item);
           }
         }
         return Value(std::move(out), Value::Seq::Generator);
       }},
      {"upper",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "upper", {});
         return same_flavor(v, py::upper(to_str(v)));
       }},
      {"wordcount",
       [](Interpreter&, const Value& v, CallArgs& c) -> Value {
         Args(c, "wordcount", {});
         return Value(static_cast<int64_t>(py::split(to_str(v), std::nullopt, -1).size()));
       }},
  };
  return table;
}

std::string_view filter_alias(std::string_view name) {
  if (name == "d") return "default";
  if (name == "e") return "escape";
  if (name == "count") return "length";
  return name;
}

// ---- tests ----

using TestFn = bool (*)(Interpreter&, const Value&, CallArgs&);

const Value& one_arg(const CallArgs& c, std::string_view test) {
  return Args(c, test, {"other"}).require(0);
}

bool compare_test(std::string_view op, const Value& a, const Value& b) {
  if (op == "eq") return a.equals(b);
  if (op == "ne") return !a.equals(b);
  if (op == "lt") return less_than(a, b, "<");
  if (op == "le") return !less_than(b, a, "<=");
  if (op == "gt") return less_than(b, a, ">");
  return !less_than(a, b, ">=");
}

const std::unordered_map<std::string_view, TestFn>& tests() {
  static const std::unordered_map<std::string_view, TestFn> table = {
      {"boolean", [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool(); }},
      {"callable", [](Interpreter&, const Value& v, CallArgs&) { return v.is_callable(); }},
      {"defined", [](Interpreter&, const Value& v, CallArgs&) { return !v.is_undefined(); }},
      {"undefined", [](Interpreter&, const Value& v, CallArgs&) { return v.is_undefined(); }},
      {"none", [](Interpreter&, const Value& v, CallArgs&) { return v.is_none(); }},
      {"true", [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && v.as_bool(); }},
      {"false", [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && !v.as_bool(); }},
      {"integer", [](Interpreter&, const Value& v, CallArgs&) { return v.is_int(); }},
      {"float", [](Interpreter&, const Value& v, CallArgs&) { return v.is_float(); }},
      {"number", [](Interpreter&, const Value& v, CallArgs&) { return v.is_number(); }},
      {"string", [](Interpreter&, const Value& v, CallArgs&) { return v.is_string(); }},
      {"mapping", [](Interpreter&, const Value& v, CallArgs&) { return v.is_dict(); }},
      {"iterable", [](Interpreter&, const Value& v,
                      CallArgs&) { return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined(); }},
      {"sequence",
       [](Interpreter&, const Value& v, CallArgs&) {
         return v.is_string() || (v.is_list() && !v.is_iterator()) || v.is_dict() || v.is_undefined();
       }},
      {"escaped", [](Interpreter&, const Value&, CallArgs&) { return false; }},
      {"lower",
       [](Interpreter&, const Value& v, CallArgs&) {
         const std::string s = to_str(v);
         bool cased = false;
         for (size_t i = 0; i < s.size();) {
           const uint32_t cp = py::next_code_point(s, i);
           if (py::is_upper_letter(cp)) return false;
           cased = cased || py::is_lower_letter(cp);
         }
         return cased;
       }},
      {"upper",
       [](Interpreter&, const Value& v, CallArgs&) {
         const std::string s = to_str(v);
         bool cased = false;
         for (size_t i = 0; i < s.size();) {
           const uint32_t cp = py::next_code_point(s, i);
           if (py::is_lower_letter(cp)) return false;
           cased = cased || py::is_upper_letter(cp);
         }
         return cased;
       }},
      {"even",
       [](Interpreter&, const Value& v, CallArgs&) {
         KS_CHECK(v.is_int() || v.is_bool(), "even test needs an integer");
         return v.to_int() % 2 == 0;
       }},
      {"odd",
       [](Interpreter&, const Value& v, CallArgs&) {
         KS_CHECK(v.is_int() || v.is_bool(), "odd test needs an integer");
         return v.to_int() % 2 != 0;
       }},
      {"divisibleby",
       [](Interpreter&, const Value& v, CallArgs& c) {
         const Value& n = Args(c, "divisibleby", {"num"}).require(0);
         KS_CHECK((v.is_int() || v.is_bool()) && (n.is_int() || n.is_bool()), "divisibleby needs integers");
         return floor_mod(v.to_int(), n.to_int()) == 0;
       }},
      {"eq", [](Interpreter&, const Value& v, CallArgs& c) { return compare_test("eq", v, one_arg(c, "eq")); }},
      {"ne", [](Interpreter&, const Value& v, CallArgs& c) { return compare_test("ne", v, one_arg(c, "ne")); }},
      {"lt", [](Interpreter&, const Value& v, CallArgs& c) { return compare_test("lt", v, one_arg(c, "lt")); }},
      {"le", [](Interpreter&, const Value& v, CallArgs& c) { return compare_test("le", v, one_arg(c, "le")); }},
      {"gt", [](Interpreter&, const Value& v, CallArgs& c) { return compare_test("gt", v, one_arg(c, "gt")); }},
      {"ge", [](Interpreter&, const Value& v, CallArgs& c) { return compare_test("ge", v, one_arg(c, "ge")); }},
      {"in", [](Interpreter&, const Value& v, CallArgs& c) { return contains(Args(c, "in", {"seq"}).require(0), v); }},
      {"sameas",
       [](Interpreter&, const Value& v, CallArgs& c) {
         // Identity for None/True/False; other values approximate "is" by equal type and value.
         const Value& o = one_arg(c, "sameas");
         return v.kind() == o.kind() && v.equals(o);
       }},
      {"filter", [](Interpreter&, const Value& v,
                    CallArgs&) { return v.is_string() && filters().count(filter_alias(v.as_string())) != 0; }},
      {"test",
       [](Interpreter&, const Value& v, CallArgs&) { return v.is_string() && tests().count(v.as_string()) != 0; }},
  };
  return table;
}

std::string_view test_alias(std::string_view name) {
  if (name == "equalto" || name == "==") return "eq";
  if (name == "!=") return "ne";
  if (name == "lessthan" || name == "<") return "lt";
  if (name == "<=") return "le";
  if (name == "greaterthan" || name == ">") return "gt";
  if (name == ">=") return "ge";
  return name;
}

// ---- str.format / % formatting ----

std::string brace_format(const std::string& f, const CallArgs& c) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    const char ch = f[i];
    if (ch == '{' && i + 1 < f.size() && f[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    if (ch == '}' && i + 1 < f.size() && f[i + 1] == '}') {
      out += '}';
      ++i;
      continue;
    }
    KS_CHECK(ch != '}', "Single '}}' encountered in format string");
    if (ch != '{') {
      out += ch;
      continue;
    }
    const size_t close = f.find('}', i);
    KS_CHECK(close != std::string::npos, "Single '{{' encountered in format string");
    const std::string field = f.substr(i + 1, close - i - 1);
    KS_CHECK(field.find_first_of(":!") == std::string::npos, "format specs and conversions are not supported");
    const Value* v = nullptr;
    if (field.empty()) {
      KS_CHECK(auto_index < c.positional.size(), "Replacement index {} out of range", auto_index);
      v = &c.positional[auto_index++];
    } else if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      const size_t idx = std::strtoul(field.c_str(), nullptr, 10);
      KS_CHECK(idx < c.positional.size(), "Replacement index {} out of range", idx);
      v = &c.positional[idx];
    } else {
      for (const auto& [k, val] : c.keyword)
        if (k == field) v = &val;
      KS_CHECK(v, "KeyError: '{}'", field);
    }
    out += to_str(*v);
    i = close;
  }
  return out;
}

// Python's printf-style "%" formatting for the conversions templates use: %s %r %d %i %f %%.
std::string percent_format(const std::string& f, const Value& args, bool escape_args) {
  const bool mapping = args.is_dict();
  const ValueList single{args};
  const ValueList& positional = args.is_tuple() ? args.as_list() : single;
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') {
      out += f[i];
      continue;
    }
    KS_CHECK(i + 1 < f.size(), "incomplete format");
    ++i;
    const Value* v = nullptr;
    if (f[i] == '(') {
      const size_t close = f.find(')', i);
      KS_CHECK(mapping && close != std::string::npos, "format requires a mapping");
      v = args.as_dict().find(std::string_view(f).substr(i + 1, close - i - 1));
      KS_CHECK(v, "KeyError: '{}'", f.substr(i + 1, close - i - 1));
      i = close + 1;
      KS_CHECK(i < f.size(), "incomplete format");
    }
    std::optional<int> precision;
    if (f[i] == '.') {
      int p = 0;
      while (++i < f.size() && f[i] >= '0' && f[i] <= '9') p = std::min(p * 10 + (f[i] - '0'), 100);
      precision = p;
      KS_CHECK(i < f.size(), "incomplete format");
    }
    const char conv = f[i];
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (!v) {
      KS_CHECK(next < positional.size(), "not enough arguments for format string");
      v = &positional[next++];
    }
    switch (conv) {
      case 's': out += escape_args ? markup_text(*v) : to_str(*v); break;
      case 'r': out += escape_args ? html_escape(v->repr()) : v->repr(); break;
      case 'd':
      case 'i':
        KS_CHECK(v->is_number(), "%{} format: a real number is required, not {}", conv, v->type_name());
        out += std::to_string(v->is_float() ? static_cast<int64_t>(v->as_float()) : v->to_int());
        break;
      case 'f':
        KS_CHECK(v->is_number(), "must be real number, not {}", v->type_name());
        out += fmt::format("{:.{}f}", v->to_double(), precision.value_or(6));
        break;
      default: KS_FAIL("unsupported format character '{}'", conv);
    }
  }
  KS_CHECK(mapping || next == positional.size() || !args.is_tuple(),
           "not all arguments converted during string formatting");
  return out;
}

// ---- methods ----

Value bound_method(const Value& self, std::string_view name,
                   std::function<Value(const Value&, CallArgs&, Interpreter&)> fn) {
  return make_function(std::string(name),
                       [self, fn = std::move(fn)](CallArgs& c, Interpreter& in) { return fn(self, c, in); });
}

bool prefix_test(const Value& self, const CallArgs& c, std::string_view name, bool suffix) {
  Args a(c, name, {"prefix"});
  const Value& p = a.require(0);
  const std::string& s = self.as_string();
  auto test_one = [&](const Value& x) {
    KS_CHECK(x.is_string(), "{} first arg must be str or a tuple of str, not {}", name, x.type_name());
    const std::string& t = x.as_string();
    if (t.size() > s.size()) return false;
    return suffix ? s.compare(s.size() - t.size(), t.size(), t) == 0 : s.compare(0, t.size(), t) == 0;
  };
  if (p.is_list()) return std::any_of(p.as_list().begin(), p.as_list().end(), test_one);
  return test_one(p);
}

template <typename Pred>
bool all_code_points(const std::string& s, Pred&& pred) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();)
    if (!pred(py::next_code_point(s, i))) return false;
  return true;
}

Value string_method(const Value& self, std::string_view name) {
  using C = CallArgs;
  using I = Interpreter;
  auto strip_method = [&](bool left, bool right) {
    return bound_method(self, name, [left, right, n = std::string(name)](const Value& s, C& c, I&) {
      return same_flavor(s, py::strip(s.as_string(), Args(c, n, {"chars"}).string(0), left, right));
    });
  };
  if (name == "strip") return strip_method(true, true);
  if (name == "lstrip") return strip_method(true, false);
  if (name == "rstrip") return strip_method(false, true);
  if (name == "split" || name == "rsplit") {
    const bool r = name == "rsplit";
    return bound_method(self, name, [r](const Value& s, C& c, I&) {
      Args a(c, r ? "rsplit" : "split", {"sep", "maxsplit"});
      const auto sep = a.string(0);
      KS_CHECK(!sep || !sep->empty(), "empty separator");
      const int64_t maxsplit = a.integer(1, -1);
      return Value(
          string_values(r ? py::rsplit(s.as_string(), sep, maxsplit) : py::split(s.as_string(), sep, maxsplit)));
    });
  }
  if (name == "splitlines")
    return bound_method(self, name, [](const Value& s, C& c, I&) {
      return Value(string_values(py::splitlines(s.as_string(), Args(c, "splitlines", {"keepends"}).flag(0, false))));
    });
  if (name == "startswith" || name == "endswith") {
    const bool suffix = name == "endswith";
    return bound_method(self, name, [suffix](const Value& s, C& c, I&) {
      return Value(prefix_test(s, c, suffix ? "endswith" : "startswith", suffix));
    });
  }
  auto unary = [&](std::string (*f)(std::string_view)) {
    return bound_method(self, name, [f, n = std::string(name)](const Value& s, C& c, I&) {
      Args(c, n, {});
      return same_flavor(s, f(s.as_string()));
    });
  };
  if (name == "upper") return unary(py::upper);
  if (name == "lower") return unary(py::lower);
  if (name == "title") return unary(py::title);
  if (name == "capitalize") return unary(py::capitalize);
  if (name == "swapcase") return unary(py::swapcase);
  if (name == "replace")
    return bound_method(self, name, [](const Value& s, C& c, I&) {
      Args a(c, "replace", {"old", "new", "count"});
      const Value& o = a.require(0);
      const Value& n = a.require(1);
      KS_CHECK(o.is_string() && n.is_string(), "replace() arguments must be str");
      if (s.is_markup())  // markupsafe escapes the replacement, not the searched text
        return Value::markup(py::replace(s.as_string(), o.as_string(), markup_text(n), a.integer(2, -1)));
      return Value(py::replace(s.as_string(), o.as_string(), n.as_string(), a.integer(2, -1)));
    });
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    const bool rev = name[0] == 'r';
    const bool raise = name.find("index") != std::string_view::npos;
    return bound_method(self, name, [rev, raise, n = std::string(name)](const Value& s, C& c, I&) {
      const Value& sub = Args(c, n, {"sub"}).require(0);
      KS_CHECK(sub.is_string(), "must be str, not {}", sub.type_name());
      const int64_t at = py::find(s.as_string(), sub.as_string(), rev);
      KS_CHECK(!(raise && at < 0), "substring not found");
      return Value(at);
    });
  }
  if (name == "count")
    return bound_method(self, name, [](const Value& s, C& c, I&) {
      const Value& sub = Args(c, "count", {"sub"}).require(0);
      KS_CHECK(sub.is_string(), "must be str, not {}", sub.type_name());
      return Value(py::count(s.as_string(), sub.as_string()));
    });
  if (name == "join")
    return bound_method(self, name, [](const Value& s, C& c, I&) {
      std::string out;
      bool first = true;
      for (const Value& item : iterate(Args(c, "join", {"iterable"}).require(0))) {
        KS_CHECK(item.is_string(), "sequence item: expected str instance, {} found", item.type_name());
        if (!first) out += s.as_string();
        first = false;
        out += item.as_string();
      }
      return Value(std::move(out));
    });
  if (name == "format")
    return bound_method(self, name, [](const Value& s, C& c, I&) { return Value(brace_format(s.as_string(), c)); });
  if (name == "removeprefix" || name == "removesuffix") {
    const bool suffix = name == "removesuffix";
    return bound_method(self, name, [suffix](const Value& s, C& c, I&) {
      const std::string t = Args(c, suffix ? "removesuffix" : "removeprefix", {"affix"}).require(0).str();
      const std::string& str = s.as_string();
      if (t.size() <= str.size() &&
          (suffix ? str.compare(str.size() - t.size(), t.size(), t) == 0 : str.compare(0, t.size(), t) == 0))
        return Value(suffix ? str.substr(0, str.size() - t.size()) : str.substr(t.size()));
      return s;
    });
  }
  auto predicate = [&](bool (*pred)(uint32_t)) {
    return bound_method(self, name, [pred, n = std::string(name)](const Value& s, C& c, I&) {
      Args(c, n, {});
      return Value(all_code_points(s.as_string(), pred));
    });
  };
  if (name == "isspace") return predicate(py::is_space);
  if (name == "isdigit") return predicate([](uint32_t cp) { return cp >= '0' && cp <= '9'; });
  if (name == "isalpha")
    return predicate([](uint32_t cp) {
      return (cp < 0x80 && std::isalpha(static_cast<int>(cp))) ||
             (cp >= 0x80 && (py::is_upper_letter(cp) || py::is_lower_letter(cp)));
    });
  if (name == "isalnum")
    return predicate([](uint32_t cp) {
      return (cp < 0x80 && std::isalnum(static_cast<int>(cp))) ||
             (cp >= 0x80 && (py::is_upper_letter(cp) || py::is_lower_letter(cp)));
    });
  if (name == "islower" || name == "isupper") {
    const bool want_lower = name == "islower";
    return bound_method(self, name, [want_lower](const Value& s, C& c, I& in) {
      CallArgs none;
      return Value(apply_test(in, want_lower ? "lower" : "upper", s, none));
    });
  }
  return Value::undefined("");
}

Value dict_method(const Value& self, std::string_view name) {
  using C = CallArgs;
  using I = Interpreter;
  if (name == "get")
    return bound_method(self, name, [](const Value& d, C& c, I&) {
      Args a(c, "get", {"key", "default"});
      if (const Value* v = d.as_dict().find(a.require(0))) return *v;
      return a.has(1) ? *a.get(1) : Value::none();
    });
  if (name == "items" || name == "keys" || name == "values") {
    const int which = name == "items" ? 0 : name == "keys" ? 1 : 2;
    return bound_method(self, name, [which](const Value& d, C& c, I&) {
      Args(c, which == 0 ? "items" : which == 1 ? "keys" : "values", {});
      ValueList out;
      for (const auto& [k, v] : d.as_dict().entries) out.push_back(which == 0 ? make_tuple(k, v) : which == 1 ? k : v);
      return Value(std::move(out));
    });
  }
  if (name == "copy")
    return bound_method(self, name, [](const Value& d, C& c, I&) {
      Args(c, "copy", {});
      return d;
    });
  return Value::undefined("");
}

Value list_method(const Value& self, std::string_view name) {
  using C = CallArgs;
  using I = Interpreter;
  if (name == "index")
    return bound_method(self, name, [](const Value& l, C& c, I&) {
      const Value& x = Args(c, "index", {"value"}).require(0);
      const ValueList& items = l.as_list();
      for (size_t k = 0; k < items.size(); ++k)
        if (items[k].equals(x)) return Value(static_cast<int64_t>(k));
      KS_FAIL("{} is not in list", x.repr());
    });
  if (name == "count")
    return bound_method(self, name, [](const Value& l, C& c, I&) {
      const Value& x = Args(c, "count", {"value"}).require(0);
      return Value(static_cast<int64_t>(
          std::count_if(l.as_list().begin(), l.as_list().end(), [&](const Value& v) { return v.equals(x); })));
    });
  if (name == "copy")
    return bound_method(self, name, [](const Value& l, C& c, I&) {
      Args(c, "copy", {});
      return l;
    });
  return Value::undefined("");
}

bool is_mutating_method(const Value& obj, std::string_view name) {
  static constexpr std::string_view dict_mutators[] = {"clear", "pop", "popitem", "setdefault", "update"};
  static constexpr std::string_view list_mutators[] = {"append", "clear",  "extend",  "insert",
                                                       "pop",    "remove", "reverse", "sort"};
  if (obj.is_dict())
    return std::find(std::begin(dict_mutators), std::end(dict_mutators), name) != std::end(dict_mutators);
  if (obj.is_list() && obj.seq() == Value::Seq::List)
    return std::find(std::begin(list_mutators), std::end(list_mutators), name) != std::end(list_mutators);
  return false;
}

}  // namespace

[[noreturn]] void raise_undefined(const Value& v) {
  KS_FAIL("{}", v.undefined_message());
}

Value get_method(const Value& obj, std::string_view name) {
  if (is_mutating_method(obj, name))
    return Value::undefined(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, obj.type_name()));
  if (obj.is_string()) return string_method(obj, name);
  if (obj.is_dict()) return dict_method(obj, name);
  if (obj.is_list() && !obj.is_iterator()) return list_method(obj, name);
  return Value::undefined("");
}

bool is_filter_name(std::string_view name) {
  return filters().count(filter_alias(name)) != 0;
}
bool is_test_name(std::string_view name) {
  return tests().count(test_alias(name)) != 0;
}

Value apply_filter(Interpreter& in, std::string_view name, const Value& operand, CallArgs& args) {
  const auto& table = filters();
  const auto it = table.find(filter_alias(name));
  KS_CHECK(it != table.end(), "No filter named '{}'.", name);
  return it->second(in, operand, args);
}

bool apply_test(Interpreter& in, std::string_view name, const Value& operand, CallArgs& args) {
  const auto& table = tests();
  const auto it = table.find(test_alias(name));
  KS_CHECK(it != table.end(), "No test named '{}'.", name);
  return it->second(in, operand, args);
}

Value binary_op(std::string_view op, const Value& a, const Value& b) {
  if (op == "~") return Value(to_str(a) + to_str(b));
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined()) raise_undefined(b);
  const bool ints = (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
  const bool nums = a.is_number() && b.is_number();
  if (op == "+") {
    if (ints) return Value(checked_add(a.to_int(), b.to_int()));
    if (nums) return Value(a.to_double() + b.to_double());
    if (a.is_string() && b.is_string()) {
      if (a.is_markup() || b.is_markup()) return Value::markup(markup_text(a) + markup_text(b));
      return Value(a.as_string() + b.as_string());
    }
    if (a.is_list() && b.is_list() && a.seq() == b.seq() && !a.is_iterator()) {
      charge_bytes(copy_bytes(a.as_list()) + copy_bytes(b.as_list()));
      ValueList out = a.as_list();
      out.insert(out.end(), b.as_list().begin(), b.as_list().end());
      return Value(std::move(out), a.seq());
    }
    if (a.is_string() || (a.is_list() && !a.is_iterator()))
      KS_FAIL("can only concatenate {} (not \"{}\") to {}", a.type_name(), b.type_name(), a.type_name());
    unsupported_operands(op, a, b);
  }
  if (op == "-") {
    if (ints) return Value(checked_sub(a.to_int(), b.to_int()));
    if (nums) return Value(a.to_double() - b.to_double());
    unsupported_operands(op, a, b);
  }
  if (op == "*") {
    if (ints) return Value(checked_mul(a.to_int(), b.to_int()));
    if (nums) return Value(a.to_double() * b.to_double());
    auto repeatable = [](const Value& v) { return v.is_string() || (v.is_list() && !v.is_iterator()); };
    if (repeatable(a) && (b.is_int() || b.is_bool())) return repeat(a, b.to_int());
    if (repeatable(b) && (a.is_int() || a.is_bool())) return repeat(b, a.to_int());
    if (a.is_string() || a.is_list() || b.is_string() || b.is_list())
      KS_FAIL("can't multiply sequence by non-int of type '{}'", (a.is_string() || a.is_list() ? b : a).type_name());
    unsupported_operands(op, a, b);
  }
  if (op == "/") {
    if (!nums) unsupported_operands(op, a, b);
    KS_CHECK(b.to_double() != 0.0, "division by zero");
    return Value(a.to_double() / b.to_double());
  }
  if (op == "//") {
    if (ints) return Value(floor_div(a.to_int(), b.to_int()));
    if (!nums) unsupported_operands(op, a, b);
    KS_CHECK(b.to_double() != 0.0, "float floor division by zero");
    return Value(float_floor_div(a.to_double(), b.to_double()));
  }
  if (op == "%") {
    if (a.is_string()) return same_flavor(a, percent_format(a.as_string(), b, a.is_markup()));
    if (ints) return Value(floor_mod(a.to_int(), b.to_int()));
    if (!nums) unsupported_operands(op, a, b);
    return Value(float_mod(a.to_double(), b.to_double()));
  }
  if (op == "**") {
    if (ints && b.to_int() >= 0) {
      int64_t base = a.to_int(), e = b.to_int(), acc = 1;
      while (e > 0) {
        if (e & 1) acc = checked_mul(acc, base);
        e >>= 1;
        if (e > 0) base = checked_mul(base, base);
      }
      return Value(acc);
    }
    if (!nums) unsupported_operands("** or pow()", a, b);
    KS_CHECK(!(a.to_double() == 0.0 && b.to_double() < 0), "0.0 cannot be raised to a negative power");
    return Value(std::pow(a.to_double(), b.to_double()));
  }
  KS_FAIL("unknown operator '{}'", op);
}

bool less_than(const Value& a, const Value& b, std::string_view op) {
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined()) raise_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.to_double() < b.to_double();
    return a.to_int() < b.to_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();  // UTF-8 order is code point order
  if (a.is_list() && b.is_list() && a.seq() == b.seq() && !a.is_iterator()) {
    const ValueList& x = a.as_list();
    const ValueList& y = b.as_list();
    for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
      charge_steps(1);
      if (x[k].equals(y[k])) continue;
      return less_than(x[k], y[k], op);
    }
    return x.size() < y.size();
  }
  KS_FAIL("'{}' not supported between instances of '{}' and '{}'", op, a.type_name(), b.type_name());
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::Undefined: return false;
    case Value::Kind::String:
      KS_CHECK(item.is_string(), "'in <string>' requires string as left operand, not {}", item.type_name());
      return py::find_bytes(container.as_string(), item.as_string()) != std::string::npos;
    case Value::Kind::List:
      charge_steps(container.as_list().size());
      return std::any_of(container.as_list().begin(), container.as_list().end(),
                         [&](const Value& v) { return v.equals(item); });
    case Value::Kind::Dict: return container.as_dict().find(item) != nullptr;
    default: KS_FAIL("argument of type '{}' is not iterable", container.type_name());
  }
}

ValueList iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::List: charge_bytes(copy_bytes(v.as_list())); return v.as_list();
    case Value::Kind::Dict: {
      charge_bytes(v.as_dict().entries.size() * sizeof(Value));
      ValueList keys;
      keys.reserve(v.as_dict().entries.size());
      for (const auto& [k, val] : v.as_dict().entries) keys.push_back(k);
      return keys;
    }
    case Value::Kind::String: {
      const std::string& s = v.as_string();
      charge_bytes(s.size() * (sizeof(Value) + 1));
      ValueList chars;
      for (size_t i = 0; i < s.size();) {
        const size_t at = i;
        py::next_code_point(s, i);
        chars.emplace_back(s.substr(at, i - at));
      }
      return chars;
    }
    default: KS_FAIL("'{}' object is not iterable", v.type_name());
  }
}

ValueDict make_globals() {
  ValueDict g;
  g.set(Value("range"), make_function("range", [](CallArgs& c, Interpreter&) -> Value {
          KS_CHECK(c.keyword.empty(), "range() takes no keyword arguments");
          KS_CHECK(!c.positional.empty() && c.positional.size() <= 3, "range expected 1 to 3 arguments");
          for (const auto& v : c.positional)
            KS_CHECK(v.is_int() || v.is_bool(), "'{}' object cannot be interpreted as an integer", v.type_name());
          int64_t start = 0, stop, step = 1;
          if (c.positional.size() == 1) {
            stop = c.positional[0].to_int();
          } else {
            start = c.positional[0].to_int();
            stop = c.positional[1].to_int();
            if (c.positional.size() == 3) step = c.positional[2].to_int();
          }
          KS_CHECK(step != 0, "range() arg 3 must not be zero");
          const double count = std::max(
              0.0, std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step)));
          KS_CHECK(count <= static_cast<double>(kMaxRange),
                   "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
          ValueList out;
          for (int64_t i = 0; i < static_cast<int64_t>(count); ++i) out.emplace_back(start + i * step);
          return Value(std::move(out));
        }));
  auto dict_from_args = [](CallArgs& c, std::string_view fn) {
    KS_CHECK(c.positional.size() <= 1, "{}() takes at most 1 positional argument", fn);
    ValueDict d;
    if (!c.positional.empty()) {
      const Value& src = c.positional[0];
      if (src.is_dict()) {
        d = src.as_dict();
      } else {
        for (const Value& pair : iterate(src)) {
          const ValueList kv = iterate(pair);
          KS_CHECK(kv.size() == 2, "dictionary update sequence element has length {}; 2 is required", kv.size());
          d.set(kv[0], kv[1]);
        }
      }
    }
    for (const auto& [k, v] : c.keyword) d.set(Value(k), v);
    return d;
  };
  g.set(Value("dict"), make_function("dict", [dict_from_args](CallArgs& c, Interpreter&) -> Value {
          return Value(dict_from_args(c, "dict"));
        }));
  g.set(Value("namespace"), make_function("namespace", [dict_from_args](CallArgs& c, Interpreter& in) -> Value {
          return in.make_namespace(dict_from_args(c, "namespace"));
        }));
  g.set(Value("raise_exception"), make_function("raise_exception", [](CallArgs& c, Interpreter&) -> Value {
          throw RaisedError(Args(c, "raise_exception", {"message"}).require(0).str());
        }));
  g.set(Value("strftime_now"), make_function("strftime_now", [](CallArgs& c, Interpreter& in) -> Value {
          const Value& f = Args(c, "strftime_now", {"format"}).require(0);
          KS_CHECK(f.is_string(), "strftime() argument 1 must be str, not {}", f.type_name());
          const std::tm t = in.now();
          std::string buf(256 + f.as_string().size() * 8, '\0');
          const size_t n = f.as_string().empty() ? 0 : std::strftime(buf.data(), buf.size(), f.as_string().c_str(), &t);
          buf.resize(n);
          return Value(std::move(buf));
        }));
  return g;
}

}  // namespace kestrel::chat_template
