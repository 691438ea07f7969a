#include "tokenizer/chat_template/value.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/error.h"
#include "tokenizer/chat_template/budget.h"
#include "tokenizer/chat_template/py_string.h"

namespace kestrel::chat_template {

// Lookups scan the entries (see the struct's comment), so they cost a step per entry.
const Value* ValueDict::find(const Value& key) const {
  charge_steps(entries.size());
  for (const auto& [k, v] : entries)
    if (k.equals(key)) return &v;
  return nullptr;
}

const Value* ValueDict::find(std::string_view key) const {
  charge_steps(entries.size());
  for (const auto& [k, v] : entries)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

void ValueDict::set(Value key, Value value) {
  charge_steps(entries.size());
  for (auto& [k, v] : entries) {
    if (k.equals(key)) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

template <typename Children>
void Value::set_depth(const Children& children) {
  int deepest = 0;
  for (const auto& c : children) {
    if constexpr (std::is_same_v<std::decay_t<decltype(c)>, Value>)
      deepest = std::max(deepest, c.depth());
    else
      deepest = std::max({deepest, c.first.depth(), c.second.depth()});
  }
  if (deepest + 1 > kMaxValueDepth)
    throw TemplateBudgetError(
        fmt::format("the chat template went over its render budget: lists, dicts and namespaces nested deeper than {}",
                    kMaxValueDepth));
  depth_ = static_cast<uint16_t>(deepest + 1);
}

Value::Value(ValueList list, Seq seq) : seq_(seq) {
  set_depth(list);
  data_ = std::make_shared<const ValueList>(std::move(list));
}

Value::Value(ValueDict dict) {
  set_depth(dict.entries);
  data_ = std::make_shared<const ValueDict>(std::move(dict));
}

Value::Value(std::shared_ptr<Namespace> ns) {
  set_depth(ns->attrs.entries);
  data_ = std::move(ns);
}

Value Value::markup(std::string s) {
  Value v(std::move(s));
  v.markup_ = true;
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      KS_CHECK(u <= static_cast<uint64_t>(INT64_MAX), "chat template context: integer {} is too large", u);
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList list;
      list.reserve(j.size());
      for (const auto& e : j) list.push_back(from_json(e));
      return Value(std::move(list));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict dict;
      dict.entries.reserve(j.size());
      for (const auto& [k, v] : j.items()) dict.entries.emplace_back(Value(k), from_json(v));
      return Value(std::move(dict));
    }
    default: KS_FAIL("chat template context: unsupported JSON value (binary or discarded)");
  }
}

double Value::to_double() const {
  if (is_float()) return as_float();
  return static_cast<double>(to_int());
}

bool Value::truthy() const {
  switch (kind()) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return as_bool();
    case Kind::Int: return as_int() != 0;
    case Kind::Float: return as_float() != 0.0;
    case Kind::String: return !as_string().empty();
    case Kind::List: return is_iterator() || !as_list().empty();
    case Kind::Dict: return !as_dict().entries.empty();
    case Kind::Callable:
    case Kind::Namespace: return true;
  }
  return false;
}

bool Value::equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (is_float() || other.is_float()) return to_double() == other.to_double();
    return to_int() == other.to_int();
  }
  if (kind() != other.kind()) return false;
  switch (kind()) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::String: charge_bytes(as_string().size()); return as_string() == other.as_string();
    case Kind::List: {
      const auto& a = as_list();
      const auto& b = other.as_list();
      if (is_iterator() || other.is_iterator()) return &a == &b;  // iterators compare by identity
      if (is_tuple() != other.is_tuple() || a.size() != b.size()) return false;
      charge_steps(a.size());
      for (size_t i = 0; i < a.size(); ++i)
        if (!a[i].equals(b[i])) return false;
      return true;
    }
    case Kind::Dict: {
      const auto& a = as_dict().entries;
      const auto& b = other.as_dict();
      if (a.size() != b.entries.size()) return false;
      for (const auto& [k, v] : a) {
        const Value* o = b.find(k);
        if (!o || !v.equals(*o)) return false;
      }
      return true;
    }
    case Kind::Callable:
      return std::get<std::shared_ptr<const Callable>>(data_) == std::get<std::shared_ptr<const Callable>>(other.data_);
    case Kind::Namespace:
      return std::get<std::shared_ptr<Namespace>>(data_) == std::get<std::shared_ptr<Namespace>>(other.data_);
    default: return false;
  }
}

std::string Value::type_name() const {
  switch (kind()) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List:
      switch (seq_) {
        case Seq::List: return "list";
        case Seq::Tuple: return "tuple";
        case Seq::Generator: return "generator";
        case Seq::ReverseIterator: return "list_reverseiterator";
      }
      return "list";
    case Kind::Dict: return "dict";
    case Kind::Callable: return "function";
    case Kind::Namespace: return as_namespace().type_name;
  }
  return "object";
}

std::string python_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  // Shortest round-trip digits in scientific form, then laid out the way Python's repr does.
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string_view sci(buf, res.ptr - buf);
  const size_t e_pos = sci.find('e');
  std::string_view mantissa = sci.substr(0, e_pos);
  const int exp = std::stoi(std::string(sci.substr(e_pos + 1)));
  std::string sign;
  if (mantissa.front() == '-') {
    sign = "-";
    mantissa.remove_prefix(1);
  }
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  const int decpt = exp + 1;
  const int ndigits = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    std::string m = digits.substr(0, 1);
    if (ndigits > 1) m += "." + digits.substr(1);
    return fmt::format("{}{}e{}{:02d}", sign, m, exp < 0 ? '-' : '+', std::abs(exp));
  }
  if (decpt <= 0) return sign + "0." + std::string(-decpt, '0') + digits;
  if (decpt >= ndigits) return sign + digits + std::string(decpt - ndigits, '0') + ".0";
  return sign + digits.substr(0, decpt) + "." + digits.substr(decpt);
}

std::string Value::str() const {
  switch (kind()) {
    case Kind::Undefined: return "";
    case Kind::String: return as_string();
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind()) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "None";
    case Kind::Bool: return as_bool() ? "True" : "False";
    case Kind::Int: return std::to_string(as_int());
    case Kind::Float: return python_float_repr(as_float());
    case Kind::String: return py::repr(as_string());
    case Kind::List: {
      if (is_iterator()) return fmt::format("<{} object>", type_name());
      std::string out = is_tuple() ? "(" : "[";
      const auto& list = as_list();
      charge_steps(list.size());
      for (size_t i = 0; i < list.size(); ++i) {
        if (i) out += ", ";
        out += list[i].repr();
      }
      if (is_tuple() && list.size() == 1) out += ",";
      out += is_tuple() ? ")" : "]";
      return out;
    }
    case Kind::Dict: {
      std::string out = "{";
      bool first = true;
      charge_steps(as_dict().entries.size());
      for (const auto& [k, v] : as_dict().entries) {
        if (!first) out += ", ";
        first = false;
        out += k.repr() + ": " + v.repr();
      }
      return out + "}";
    }
    case Kind::Callable: return fmt::format("<function {}>", as_callable().name);
    case Kind::Namespace: {
      // A namespace may hold itself (ns.me = [ns]); Python would print "...", jinja2 templates don't
      // print namespaces at all, so a cycle is an error here.
      const auto& ns = as_namespace();
      thread_local int depth = 0;
      if (depth >= kMaxValueDepth) {
        throw TemplateBudgetError(
            fmt::format("the chat template went over its render budget: printing namespaces nested deeper than {} "
                        "(a namespace that holds itself?)",
                        kMaxValueDepth));
      }
      ++depth;
      struct Leave {
        ~Leave() { --depth; }
      } leave;
      return fmt::format("<{} {}>", ns.type_name, Value(ns.attrs).repr());
    }
  }
  return "";
}

namespace {

void dump_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const size_t at = i;
    const uint32_t cp = py::next_code_point(s, i);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20) {
          out += fmt::format("\\u{:04x}", cp);
        } else if (ensure_ascii && cp >= 0x80) {
          if (cp >= 0x10000) {
            const uint32_t v = cp - 0x10000;
            out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          } else {
            out += fmt::format("\\u{:04x}", cp);
          }
        } else {
          out += s.substr(at, i - at);
        }
    }
  }
  out += '"';
}

std::string json_float(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return python_float_repr(v);
}

// json.dumps turns non-string keys into strings the way JSON would print them.
std::string json_key(const Value& k) {
  switch (k.kind()) {
    case Value::Kind::String: return k.as_string();
    case Value::Kind::None: return "null";
    case Value::Kind::Bool: return k.as_bool() ? "true" : "false";
    case Value::Kind::Int: return std::to_string(k.as_int());
    case Value::Kind::Float: return json_float(k.as_float());
    default: KS_FAIL("keys must be str, int, float, bool or None, not {}", k.type_name());
  }
}

void dump_json(std::string& out, const Value& v, const JsonDumpOptions& opts, int depth) {
  KS_CHECK(depth < 512, "tojson: value nested too deeply");
  charge_steps(1);
  auto newline = [&](int level) {
    if (!opts.indent) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += *opts.indent;
  };
  switch (v.kind()) {
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.as_int()); return;
    case Value::Kind::Float: out += json_float(v.as_float()); return;
    case Value::Kind::String: dump_json_string(out, v.as_string(), opts.ensure_ascii); return;
    case Value::Kind::List: {
      KS_CHECK(!v.is_iterator(), "Object of type {} is not JSON serializable", v.type_name());
      const auto& list = v.as_list();
      if (list.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < list.size(); ++i) {
        if (i) out += opts.item_separator;
        newline(depth + 1);
        dump_json(out, list[i], opts, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::Dict: {
      const auto& entries = v.as_dict().entries;
      if (entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const Value*>> items;
      items.reserve(entries.size());
      for (const auto& [k, val] : entries) items.emplace_back(json_key(k), &val);
      if (opts.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += opts.item_separator;
        newline(depth + 1);
        dump_json_string(out, items[i].first, opts.ensure_ascii);
        out += opts.key_separator;
        dump_json(out, *items[i].second, opts, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default: KS_FAIL("Object of type {} is not JSON serializable", v.type_name());
  }
}

}  // namespace

std::string python_json_dumps(const Value& v, const JsonDumpOptions& opts) {
  std::string out;
  dump_json(out, v, opts, 0);
  return out;
}

}  // namespace kestrel::chat_template
