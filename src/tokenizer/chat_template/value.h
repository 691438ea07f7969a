// The value model of the chat-template interpreter: Python's object semantics as jinja2 sees them
// (None, bool, int, float, str, list, dict, callables, namespaces and jinja2's Undefined), so that
// templates written against Hugging Face's jinja2 environment render byte-identically.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kestrel::chat_template {

class Value;
class Interpreter;

using ValueList = std::vector<Value>;

// A dict keeps insertion order (as Python's does); chat-message dicts are small, so lookup is a scan.
struct ValueDict {
  std::vector<std::pair<Value, Value>> entries;

  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
};

// Arguments of a call: positional first, then keyword.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Callable {
  std::string name;
  std::function<Value(CallArgs&, Interpreter&)> fn;
};

// jinja2's namespace() (and the loop object): the only mutable values a template can see.
struct Namespace {
  std::string type_name;  // what str() prints, e.g. "Namespace"
  ValueDict attrs;
};

// jinja2's default Undefined: renders as "", is falsy and iterates empty, but raises (with this
// message) when an attribute, item, call or arithmetic is attempted on it.
struct Undefined {
  std::string message;
};

class Value {
 public:
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Callable, Namespace };
  // What Python type a List value stands for. Generators (what jinja2's map/select/... filters
  // return) and reverse iterators are always truthy, have no len() and are not JSON serializable.
  enum class Seq : uint8_t { List, Tuple, Generator, ReverseIterator };

  Value() : data_(Undefined{}) {}
  static Value undefined(std::string message) { return Value(Undefined{std::move(message)}); }
  static Value none() { return Value(std::monostate{}); }
  Value(bool b) : data_(b) {}
  Value(int v) : data_(int64_t{v}) {}
  Value(int64_t v) : data_(v) {}
  Value(double v) : data_(v) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(std::string_view s) : data_(std::string(s)) {}
  Value(const char* s) : data_(std::string(s)) {}
  Value(ValueList list, Seq seq = Seq::List);
  // A markupsafe.Markup string (from |safe or |escape): concatenating a plain str to it escapes
  // the plain str, as jinja2 does even with autoescape off.
  static Value markup(std::string s);
  Value(ValueDict dict);
  Value(std::shared_ptr<const Callable> c) : data_(std::move(c)) {}
  Value(std::shared_ptr<Namespace> ns);

  // Objects keep their key order, so pass nlohmann::ordered_json to render tools and arguments in
  // the order the client sent them (plain nlohmann::json has already sorted its keys).
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::Undefined; }
  bool is_none() const { return kind() == Kind::None; }
  bool is_bool() const { return kind() == Kind::Bool; }
  bool is_int() const { return kind() == Kind::Int; }
  bool is_float() const { return kind() == Kind::Float; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }  // Python: bool is an int
  bool is_string() const { return kind() == Kind::String; }
  bool is_list() const { return kind() == Kind::List; }
  bool is_dict() const { return kind() == Kind::Dict; }
  bool is_callable() const { return kind() == Kind::Callable; }
  bool is_namespace() const { return kind() == Kind::Namespace; }
  bool is_tuple() const { return is_list() && seq_ == Seq::Tuple; }
  bool is_iterator() const { return is_list() && (seq_ == Seq::Generator || seq_ == Seq::ReverseIterator); }
  Seq seq() const { return seq_; }
  // How many lists, dicts and namespaces deep the value is (0 for a scalar). Lists and dicts can't
  // change, so theirs is exact; a namespace's is taken when it is wrapped.
  int depth() const { return depth_; }
  bool is_markup() const { return is_string() && markup_; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const { return std::get<int64_t>(data_); }
  double as_float() const { return std::get<double>(data_); }
  // Ints and bools widen to double (callers check is_number first).
  double to_double() const;
  // Ints and bools as int64 (callers check is_int() || is_bool() first).
  int64_t to_int() const { return is_bool() ? int64_t{as_bool()} : as_int(); }
  const std::string& as_string() const { return std::get<std::string>(data_); }
  const ValueList& as_list() const { return *std::get<std::shared_ptr<const ValueList>>(data_); }
  const ValueDict& as_dict() const { return *std::get<std::shared_ptr<const ValueDict>>(data_); }
  const Callable& as_callable() const { return *std::get<std::shared_ptr<const Callable>>(data_); }
  Namespace& as_namespace() const { return *std::get<std::shared_ptr<Namespace>>(data_); }
  const std::string& undefined_message() const { return std::get<Undefined>(data_).message; }

  // Python truthiness.
  bool truthy() const;
  // Python ==, so 1 == 1.0 == True and dicts compare by content regardless of order.
  bool equals(const Value& other) const;
  // Python's type name as in error messages: "str", "int", "NoneType", "dict", "Undefined"...
  std::string type_name() const;

  // str(value) as jinja2 prints it (Undefined prints as "").
  std::string str() const;
  // repr(value), used for containers inside str().
  std::string repr() const;

 private:
  explicit Value(Undefined u) : data_(std::move(u)) {}
  explicit Value(std::monostate m) : data_(m) {}

  // The variant's order must match Kind.
  std::variant<Undefined, std::monostate, bool, int64_t, double, std::string, std::shared_ptr<const ValueList>,
               std::shared_ptr<const ValueDict>, std::shared_ptr<const Callable>, std::shared_ptr<Namespace>>
      data_;
  // Sets depth_ from the children; throws TemplateBudgetError past kMaxValueDepth, so that printing,
  // comparing and destroying a value never recurses deeper than that.
  template <typename Children>
  void set_depth(const Children& children);

  Seq seq_ = Seq::List;
  bool markup_ = false;
  uint16_t depth_ = 0;
};

// Nesting allowed in values: JSON schemas in tool definitions are far shallower.
inline constexpr int kMaxValueDepth = 200;

// Python's float repr: shortest round-trip digits, "1.0", "1e+16", "1.5e-07", "inf", "nan".
std::string python_float_repr(double v);

struct JsonDumpOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // unset: single line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};

// Python's json.dumps with the given options (Hugging Face's tojson filter).
std::string python_json_dumps(const Value& v, const JsonDumpOptions& opts);

}  // namespace kestrel::chat_template
