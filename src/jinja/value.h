// The values a Jinja template computes with: Python's None, bool, int, float,
// str, list and dict (insertion-ordered, as Python's), plus Jinja's Undefined
// and callables (macros, globals such as namespace()). Lists and dicts are
// shared by reference, as in Python; templates rendered by transformers run in
// an immutable sandbox, so only namespace objects are ever changed in place.
// Printing follows Python's str()/repr(), and to_json follows json.dumps with
// transformers' tojson defaults (ensure_ascii=False), so rendered text matches
// transformers byte for byte.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace keel::jinja {

class Value;
using Array = std::vector<Value>;
struct Object;

/// Arguments of a call: positional, then keyword (name, value) in call order.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};
using Function = std::function<Value(Args&)>;

class Value {
 public:
  enum class Type : uint8_t { Undefined, None, Bool, Int, Float, String, Array, Object, Function };

  Value() = default;  // Undefined
  Value(std::nullptr_t) : v_(nullptr) {}
  Value(bool b) : v_(b) {}
  Value(int i) : v_(int64_t(i)) {}
  Value(int64_t i) : v_(i) {}
  Value(double f) : v_(f) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(std::string_view s) : v_(std::string(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(Array a) : v_(std::make_shared<Array>(std::move(a))) {}
  Value(std::shared_ptr<Object> o) : v_(std::move(o)) {}
  Value(Function f) : v_(std::make_shared<Function>(std::move(f))) {}
  static Value new_object();
  static Value from_json(const nlohmann::ordered_json& j);

  Type type() const { return Type(v_.index()); }
  bool is_undefined() const { return type() == Type::Undefined; }
  bool is_none() const { return type() == Type::None; }
  bool is_bool() const { return type() == Type::Bool; }
  bool is_int() const { return type() == Type::Int; }
  bool is_number() const { return type() == Type::Int || type() == Type::Float || type() == Type::Bool; }
  bool is_string() const { return type() == Type::String; }
  bool is_array() const { return type() == Type::Array; }
  bool is_object() const { return type() == Type::Object; }
  bool is_function() const { return type() == Type::Function; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const;   // int or bool
  double as_float() const;  // int, bool or float
  const std::string& str() const { return std::get<std::string>(v_); }
  Array& array() const { return *std::get<std::shared_ptr<Array>>(v_); }
  Object& object() const { return *std::get<std::shared_ptr<Object>>(v_); }
  const Function& function() const { return *std::get<std::shared_ptr<Function>>(v_); }

  /// Python truthiness: empty strings, lists and dicts, 0, None and Undefined are false.
  bool truthy() const;
  /// Python's type name ("str", "int", "dict", ...), for error messages.
  std::string_view type_name() const;

 private:
  std::variant<std::monostate, std::nullptr_t, bool, int64_t, double, std::string, std::shared_ptr<Array>,
               std::shared_ptr<Object>, std::shared_ptr<Function>>
      v_;
};

/// A dict (insertion-ordered) or a namespace() object. Keys are strings as
/// they are; a number or None key (a dict literal such as {0: 0, 1024: 1}) is
/// stored encoded by dict_key and read back by key_value.
struct Object {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;

  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);
};

/// The stored form of a dict key: strings as they are, numbers and None
/// encoded (1, 1.0 and True are one key, as in Python). Throws keel::Error
/// for unhashable keys (lists, dicts).
std::string dict_key(const Value& key);
/// The key a stored key stands for.
Value key_value(const std::string& stored);

/// Python str(): strings as they are, None as "None", lists and dicts as repr().
std::string to_str(const Value& v);
/// Python repr().
std::string repr(const Value& v);
/// json.dumps options, with transformers' tojson defaults.
struct JsonStyle {
  int indent = -1;  // < 0: None (one line)
  bool sort_keys = false;
  bool ensure_ascii = false;  // escape non-ASCII as \uXXXX
  std::string item_sep, key_sep = ": ";  // item_sep empty: ", " without indent, "," with
};
/// json.dumps(v, ...). Throws keel::Error for Undefined and callables.
std::string to_json(const Value& v, const JsonStyle& style = {});
/// Python ==.
bool equals(const Value& a, const Value& b);
/// Python <; throws keel::Error when the types cannot be ordered.
bool less(const Value& a, const Value& b);
/// Python repr() of a float (shortest round-trip digits, "1.0", "1e-05", "inf").
std::string float_repr(double f);

}  // namespace keel::jinja
