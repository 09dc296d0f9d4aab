// Value: conversions from JSON, Python's str()/repr() and json.dumps, and
// Python's comparison rules.
#include "jinja/value.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel::jinja {

Value Value::new_object() { return Value(std::make_shared<Object>()); }

Value Value::from_json(const nlohmann::ordered_json& j) {
  using J = nlohmann::ordered_json::value_t;
  switch (j.type()) {
    case J::null: return Value(nullptr);
    case J::boolean: return Value(j.get<bool>());
    case J::number_integer: return Value(j.get<int64_t>());
    case J::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      return u <= uint64_t(INT64_MAX) ? Value(int64_t(u)) : Value(double(u));
    }
    case J::number_float: return Value(j.get<double>());
    case J::string: return Value(j.get_ref<const std::string&>());
    case J::array: {
      Array a;
      a.reserve(j.size());
      for (const auto& e : j) a.push_back(from_json(e));
      return Value(std::move(a));
    }
    case J::object: {
      Value o = new_object();
      for (const auto& [k, e] : j.items()) o.object().items.emplace_back(k, from_json(e));
      return o;
    }
    default: return Value();  // binary, discarded: nothing a template can use
  }
}

int64_t Value::as_int() const { return is_bool() ? int64_t(as_bool()) : std::get<int64_t>(v_); }

double Value::as_float() const {
  switch (type()) {
    case Type::Bool: return as_bool() ? 1.0 : 0.0;
    case Type::Int: return double(std::get<int64_t>(v_));
    default: return std::get<double>(v_);
  }
}

bool Value::truthy() const {
  switch (type()) {
    case Type::Undefined:
    case Type::None: return false;
    case Type::Bool: return as_bool();
    case Type::Int: return as_int() != 0;
    case Type::Float: return as_float() != 0.0;
    case Type::String: return !str().empty();
    case Type::Array: return !array().empty();
    case Type::Object: return object().is_namespace || !object().items.empty();
    case Type::Function: return true;
  }
  return false;
}

std::string_view Value::type_name() const {
  switch (type()) {
    case Type::Undefined: return "Undefined";
    case Type::None: return "NoneType";
    case Type::Bool: return "bool";
    case Type::Int: return "int";
    case Type::Float: return "float";
    case Type::String: return "str";
    case Type::Array: return "list";
    case Type::Object: return object().is_namespace ? "Namespace" : "dict";
    case Type::Function: return "function";
  }
  return "?";
}

const Value* Object::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

void Object::set(const std::string& key, Value v) {
  for (auto& [k, old] : items)
    if (k == key) {
      old = std::move(v);
      return;
    }
  items.emplace_back(key, std::move(v));
}

// Encoded keys start with a NUL byte, which JSON keys and template strings
// used as keys practically never do.
std::string dict_key(const Value& key) {
  switch (key.type()) {
    case Value::Type::String: return key.str();
    case Value::Type::None: return std::string("\0N", 2);
    case Value::Type::Bool:
    case Value::Type::Int: return std::string("\0i", 2).append(std::to_string(key.as_int()));
    case Value::Type::Float: {
      const double f = key.as_float();
      if (std::isfinite(f) && f == std::trunc(f) && std::fabs(f) < 9e18)
        return std::string("\0i", 2).append(std::to_string(int64_t(f)));
      return std::string("\0f", 2).append(float_repr(f));
    }
    default: fail("unhashable type: '", key.type_name(), "'");
  }
}

Value key_value(const std::string& stored) {
  if (stored.size() < 2 || stored[0] != '\0') return Value(stored);
  if (stored[1] == 'N') return Value(nullptr);
  if (stored[1] == 'i') return Value(int64_t(std::strtoll(stored.c_str() + 2, nullptr, 10)));
  return Value(std::strtod(stored.c_str() + 2, nullptr));
}

std::string float_repr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's layout: positional for
  // exponents in [-4, 16), scientific ("1e-05", "1.5e+16") otherwise.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  const size_t e = s.find('e');
  const int exp = std::atoi(s.c_str() + e + 1);
  const std::string sign = s[0] == '-' ? "-" : "";
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (std::isdigit(uint8_t(s[i]))) digits.push_back(s[i]);
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp < 0) {
      out = "0." + std::string(size_t(-exp - 1), '0') + digits;
    } else if (size_t(exp) + 1 >= digits.size()) {
      out = digits + std::string(size_t(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, size_t(exp) + 1) + "." + digits.substr(size_t(exp) + 1);
    }
    return sign + out;
  }
  std::string mant = digits.substr(0, 1);
  if (digits.size() > 1) mant.append(1, '.').append(digits, 1, std::string::npos);
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return sign + mant + ebuf;
}

namespace {

void append_repr_string(std::string& out, const std::string& s) {
  // Python picks single quotes unless the text has a ' and no ".
  const char q = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
  out.push_back(q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == q) out += std::string("\\") + char(q);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(char(c));
    }
  }
  out.push_back(q);
}

void append_repr(std::string& out, const Value& v) {
  switch (v.type()) {
    case Value::Type::String: append_repr_string(out, v.str()); return;
    case Value::Type::Array: {
      out.push_back('[');
      bool first = true;
      for (const Value& e : v.array()) {
        if (!first) out += ", ";
        first = false;
        append_repr(out, e);
      }
      out.push_back(']');
      return;
    }
    case Value::Type::Object: {
      const Object& o = v.object();
      if (o.is_namespace) out += "<Namespace ";
      out.push_back('{');
      bool first = true;
      for (const auto& [k, e] : o.items) {
        if (!first) out += ", ";
        first = false;
        append_repr(out, key_value(k));
        out += ": ";
        append_repr(out, e);
      }
      out.push_back('}');
      if (o.is_namespace) out.push_back('>');
      return;
    }
    default: out += to_str(v);
  }
}

const std::string kSpaced = ", ", kTight = ",";

void append_u_escape(std::string& out, uint32_t u) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(u));
  out += buf;
}

void append_json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out.push_back('"');
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = s[i];
    if (ensure_ascii && c >= 0x80) {
      // Decode one UTF-8 sequence; invalid bytes are escaped one by one.
      const int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
      uint32_t cp = n == 3 ? c & 0x07 : n == 2 ? c & 0x0F : c & 0x1F;
      bool ok = n > 0;
      for (int k = 1; ok && k <= n; ++k) {
        if (i + size_t(k) >= s.size() || (uint8_t(s[i + k]) & 0xC0) != 0x80) ok = false;
        else cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
      }
      if (!ok) {
        append_u_escape(out, c);
        continue;
      }
      i += size_t(n);
      if (cp >= 0x10000) {
        cp -= 0x10000;
        append_u_escape(out, 0xD800 + (cp >> 10));
        append_u_escape(out, 0xDC00 + (cp & 0x3FF));
      } else {
        append_u_escape(out, cp);
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          append_u_escape(out, c);
        } else {
          out.push_back(char(c));
        }
    }
  }
  out.push_back('"');
}

void append_json(std::string& out, const Value& v, const JsonStyle& st, int depth) {
  const int indent = st.indent;
  KEEL_CHECK(depth < 512, "tojson: nesting deeper than 512 levels");
  auto newline = [&](int d) {
    if (indent < 0) return;
    out.push_back('\n');
    out.append(size_t(indent) * size_t(d), ' ');
  };
  const std::string& item_sep = !st.item_sep.empty() ? st.item_sep : indent < 0 ? kSpaced : kTight;
  switch (v.type()) {
    case Value::Type::None: out += "null"; return;
    case Value::Type::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Type::Int: out += std::to_string(v.as_int()); return;
    case Value::Type::Float: {
      const double f = v.as_float();
      out += std::isnan(f) ? "NaN" : std::isinf(f) ? (f > 0 ? "Infinity" : "-Infinity") : float_repr(f);
      return;
    }
    case Value::Type::String: append_json_string(out, v.str(), st.ensure_ascii); return;
    case Value::Type::Array: {
      const Array& a = v.array();
      if (a.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        append_json(out, a[i], st, depth + 1);
      }
      newline(depth);
      out.push_back(']');
      return;
    }
    case Value::Type::Object: {
      const Object& o = v.object();
      if (o.items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : o.items) items.push_back(&kv);
      if (st.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out.push_back('{');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        const Value key = key_value(items[i]->first);  // json.dumps: 1 -> "1", None -> "null"
        append_json_string(out, key.is_string() ? key.str() : key.is_none() ? "null" : to_str(key), st.ensure_ascii);
        out += st.key_sep;
        append_json(out, items[i]->second, st, depth + 1);
      }
      newline(depth);
      out.push_back('}');
      return;
    }
    case Value::Type::Undefined:
    case Value::Type::Function: fail("tojson: object of type ", v.type_name(), " is not JSON serializable");
  }
}

int type_rank(const Value& v) {  // for ordering: numbers together
  return v.is_number() ? 0 : int(v.type());
}

}  // namespace

std::string to_str(const Value& v) {
  switch (v.type()) {
    case Value::Type::Undefined: return "";
    case Value::Type::None: return "None";
    case Value::Type::Bool: return v.as_bool() ? "True" : "False";
    case Value::Type::Int: return std::to_string(v.as_int());
    case Value::Type::Float: return float_repr(v.as_float());
    case Value::Type::String: return v.str();
    case Value::Type::Function: return "<function>";
    default: {
      std::string out;
      append_repr(out, v);
      return out;
    }
  }
}

std::string repr(const Value& v) {
  std::string out;
  append_repr(out, v);
  return out;
}

std::string to_json(const Value& v, const JsonStyle& style) {
  std::string out;
  append_json(out, v, style, 0);
  return out;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.type() == Value::Type::Float || b.type() == Value::Type::Float) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Value::Type::Undefined:
    case Value::Type::None: return true;
    case Value::Type::String: return a.str() == b.str();
    case Value::Type::Array: {
      const Array &x = a.array(), &y = b.array();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!equals(x[i], y[i])) return false;
      return true;
    }
    case Value::Type::Object: {
      const Object &x = a.object(), &y = b.object();
      if (&x == &y) return true;
      if (x.is_namespace || y.is_namespace || x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* w = y.find(k);
        if (!w || !equals(v, *w)) return false;
      }
      return true;
    }
    case Value::Type::Function: return &a.function() == &b.function();
    default: return false;
  }
}

bool less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.type() == Value::Type::Float || b.type() == Value::Type::Float) return a.as_float() < b.as_float();
    return a.as_int() < b.as_int();
  }
  if (type_rank(a) == type_rank(b)) {
    if (a.is_string()) return a.str() < b.str();  // UTF-8 byte order is code point order
    if (a.is_array()) {
      const Array &x = a.array(), &y = b.array();
      for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
        if (less(x[i], y[i])) return true;
        if (less(y[i], x[i])) return false;
      }
      return x.size() < y.size();
    }
  }
  fail("'<' not supported between instances of '", a.type_name(), "' and '", b.type_name(), "'");
}

}  // namespace keel::jinja
