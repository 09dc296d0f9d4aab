// Jinja's filters and tests, Python's string and dict methods, and
// transformers' globals, as chat templates use them. Each entry is one small
// function in a name-keyed table; known_filter / known_test let the parser
// reject unknown names at parse time, as Jinja does. Case mapping and
// whitespace are ASCII (templates apply them to role names and JSON).
#include "jinja/builtins.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "core/error.h"
#include "jinja/ast.h"

namespace keel::jinja {
namespace {

using FilterFn = Value (*)(const Value&, const Args&);
using TestFn = bool (*)(const Value&, const Args&);

// Argument `i` (or keyword `name`) of a call, or Undefined.
Value arg(const Args& a, size_t i, std::string_view name) {
  for (const auto& [k, v] : a.kw)
    if (k == name) return v;
  return i < a.pos.size() ? a.pos[i] : Value();
}

std::string need_string(const Value& v, std::string_view what) {
  if (!v.is_string()) fail(what, " expects a string, got ", v.type_name());
  return v.str();
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1f); }

// str.strip / lstrip / rstrip: whitespace, or any of `chars` (characters).
std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<std::string> cs = utf8_chars(s);
  std::vector<std::string> set = chars.is_string() ? utf8_chars(chars.str()) : std::vector<std::string>{};
  auto strip_it = [&](const std::string& c) {
    if (!chars.is_string()) return c.size() == 1 && is_space(c[0]);
    return std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cs.size();
  if (left)
    while (b < e && strip_it(cs[b])) ++b;
  if (right)
    while (e > b && strip_it(cs[e - 1])) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) out += cs[i];
  return out;
}

std::string upper(std::string s) {
  for (char& c : s) c = char(std::toupper(uint8_t(c)));
  return s;
}
std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(uint8_t(c)));
  return s;
}
// Python's str.title(): a letter after a non-letter is upper-cased, others lowered.
std::string title(std::string s) {
  bool prev_letter = false;
  for (char& c : s) {
    const bool letter = std::isalpha(uint8_t(c)) != 0;
    c = char(letter && !prev_letter ? std::toupper(uint8_t(c)) : std::tolower(uint8_t(c)));
    prev_letter = letter || (uint8_t(c) & 0x80);
  }
  return s;
}
std::string capitalize(std::string s) {
  s = lower(std::move(s));
  if (!s.empty()) s[0] = char(std::toupper(uint8_t(s[0])));
  return s;
}

std::string replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` around every character
    std::vector<std::string> cs = utf8_chars(s);
    for (size_t i = 0; i < cs.size(); ++i) {
      if (count < 0 || int64_t(i) < count) out += to;
      out += cs[i];
    }
    if (count < 0 || int64_t(cs.size()) < count) out += to;
    return out;
  }
  size_t pos = 0;
  for (int64_t n = 0; count < 0 || n < count; ++n) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(s, pos);
  return out;
}

Array split(const std::string& s, const Value& sep, int64_t maxsplit) {
  Array out;
  if (sep.is_undefined() || sep.is_none()) {  // runs of whitespace, no empty parts
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && is_space(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && int64_t(out.size()) == maxsplit) {
        size_t e = s.size();
        while (e > i && is_space(s[e - 1])) --e;
        out.push_back(Value(s.substr(i, e - i)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !is_space(s[j])) ++j;
      out.push_back(Value(s.substr(i, j - i)));
      i = j;
    }
    return out;
  }
  const std::string& d = need_string(sep, "split()");
  if (d.empty()) fail("split(): empty separator");
  size_t pos = 0;
  for (;;) {
    size_t hit = s.find(d, pos);
    if (hit == std::string::npos || (maxsplit >= 0 && int64_t(out.size()) == maxsplit)) break;
    out.push_back(Value(s.substr(pos, hit - pos)));
    pos = hit + d.size();
  }
  out.push_back(Value(s.substr(pos)));
  return out;
}

// startswith / endswith take a string or a tuple (list) of strings.
bool affix(const std::string& s, const Value& what, bool prefix) {
  auto one = [&](const Value& v) {
    const std::string& a = need_string(v, prefix ? "startswith()" : "endswith()");
    if (a.size() > s.size()) return false;
    return prefix ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (what.is_array()) {
    for (const Value& v : what.array())
      if (one(v)) return true;
    return false;
  }
  return one(what);
}

int64_t length(const Value& v) {
  switch (v.type()) {
    case Value::Type::String: return int64_t(utf8_chars(v.str()).size());
    case Value::Type::Array: return int64_t(v.array().size());
    case Value::Type::Object: return int64_t(v.object().items.size());
    case Value::Type::Undefined: return 0;
    default: fail("object of type '", v.type_name(), "' has no len()");
  }
}

// An attribute path "a.b.0" of a value, as map/selectattr/join take it.
Value attribute(const Value& v, const std::string& path) {
  Value cur = v;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (cur.is_object()) {
      const Value* x = cur.object().find(part);
      cur = x ? *x : Value();
    } else if (cur.is_array() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      size_t i = std::stoul(part);
      cur = i < cur.array().size() ? cur.array()[i] : Value();
    } else {
      cur = Value();
    }
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return cur;
}

// select / reject / selectattr / rejectattr: keep items whose test (or truth) is `want`.
Value select(const Value& seq, const Args& a, bool want, bool by_attr) {
  Array out;
  size_t first = 0;
  std::string attr;
  if (by_attr) {
    Value n = arg(a, 0, "attribute");
    attr = need_string(n, "selectattr()");
    first = 1;
  }
  std::string test;
  Args targs;
  if (a.pos.size() > first) {
    test = need_string(a.pos[first], "select()");
    if (!known_test(test)) fail("no test named '", test, "'");
    targs.pos.assign(a.pos.begin() + std::ptrdiff_t(first + 1), a.pos.end());
  }
  for (const Value& item : seq.truthy() ? iterate(seq) : Array{}) {  // Jinja: `if seq:` (None is empty)
    Value v = by_attr ? attribute(item, attr) : item;
    const bool pass = test.empty() ? v.truthy() : apply_test(test, v, targs);
    if (pass == want) out.push_back(item);
  }
  return Value(std::move(out));
}

std::string indent(const std::string& s, const Value& width, bool first, bool blank) {
  std::string pad = width.is_string() ? width.str()
                                      : std::string(size_t(width.is_number() ? std::clamp<int64_t>(width.as_int(), 0, 1024) : 4), ' ');
  std::string out;
  size_t pos = 0;
  bool first_line = true;
  while (pos <= s.size()) {
    size_t nl = s.find('\n', pos);
    std::string line = s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    bool is_blank = std::all_of(line.begin(), line.end(), [](char c) { return is_space(c); });
    if ((first_line ? first : true) && (blank || !is_blank)) out += pad;
    out += line;
    first_line = false;
    if (nl == std::string::npos) break;
    out += '\n';
    pos = nl + 1;
  }
  return out;
}

Value to_int(const Value& v, const Value& dflt) {
  if (v.is_number()) return v.type() == Value::Type::Float ? Value(int64_t(std::trunc(v.as_float()))) : Value(v.as_int());
  if (v.is_string()) {
    std::string s = strip(v.str(), Value(), true, true);
    char* end = nullptr;
    errno = 0;
    long long i = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && *end == '\0' && errno == 0) return Value(int64_t(i));
    double f = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0' && std::isfinite(f)) return Value(int64_t(std::trunc(f)));
  }
  return dflt.is_undefined() ? Value(0) : dflt;
}

// str.format with {}, {0} and {name} fields and {{ }} escapes; no format specs.
std::string format(const std::string& s, const Args& a) {
  std::string out;
  size_t auto_index = 0;
  bool manual = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if ((c == '{' || c == '}') && i + 1 < s.size() && s[i + 1] == c) {
      out.push_back(c);
      ++i;
      continue;
    }
    if (c == '}') fail("format(): single '}' in the format string");
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    const size_t close = s.find('}', i);
    if (close == std::string::npos) fail("format(): single '{' in the format string");
    const std::string field = s.substr(i + 1, close - i - 1);
    if (field.find_first_of(":!.[") != std::string::npos) fail("format(): field '{", field, "}' is not supported");
    Value v;
    if (field.empty() || std::all_of(field.begin(), field.end(), ::isdigit)) {
      if (field.empty() ? manual : auto_index > 0) fail("format(): cannot mix automatic and manual field numbering");
      manual = manual || !field.empty();
      const size_t k = field.empty() ? auto_index++ : std::stoul(field);
      if (k >= a.pos.size()) fail("format(): replacement index ", k, " out of range");
      v = a.pos[k];
    } else {
      v = arg(a, size_t(-1), field);
      if (v.is_undefined()) fail("format(): no argument named '", field, "'");
    }
    out += to_str(v);
    i = close;
  }
  return out;
}

const std::map<std::string, FilterFn, std::less<>>& filters() {
  static const std::map<std::string, FilterFn, std::less<>> m = {
      {"tojson",
       [](const Value& v, const Args& a) {
         JsonStyle st;
         st.ensure_ascii = arg(a, 0, "ensure_ascii").truthy();
         Value ind = arg(a, 1, "indent");
         if (ind.is_number()) st.indent = int(std::clamp<int64_t>(ind.as_int(), 0, 64));
         Value seps = arg(a, 2, "separators");
         if (seps.is_array() && seps.array().size() == 2) {
           st.item_sep = need_string(seps.array()[0], "tojson separators");
           st.key_sep = need_string(seps.array()[1], "tojson separators");
         }
         st.sort_keys = arg(a, 3, "sort_keys").truthy();
         return Value(to_json(v, st));
       }},
      {"trim", [](const Value& v, const Args& a) { return Value(strip(to_str(v), arg(a, 0, "chars"), true, true)); }},
      {"length", [](const Value& v, const Args&) { return Value(length(v)); }},
      {"count", [](const Value& v, const Args&) { return Value(length(v)); }},
      {"first",
       [](const Value& v, const Args&) {
         Array items = iterate(v);
         return items.empty() ? Value() : items.front();
       }},
      {"last",
       [](const Value& v, const Args&) {
         Array items = iterate(v);
         return items.empty() ? Value() : items.back();
       }},
      {"join",
       [](const Value& v, const Args& a) {
         Value sep = arg(a, 0, "d"), attr = arg(a, 1, "attribute");
         std::string out;
         bool first = true;
         for (const Value& item : iterate(v)) {
           if (!first) out += sep.is_undefined() ? "" : to_str(sep);
           first = false;
           out += to_str(attr.is_undefined() ? item : attribute(item, to_str(attr)));
         }
         return Value(std::move(out));
       }},
      {"default",
       [](const Value& v, const Args& a) {
         Value d = arg(a, 0, "default_value");
         const bool boolean = arg(a, 1, "boolean").truthy();
         if (v.is_undefined() || (boolean && !v.truthy())) return d.is_undefined() ? Value("") : d;
         return v;
       }},
      {"upper", [](const Value& v, const Args&) { return Value(upper(to_str(v))); }},
      {"lower", [](const Value& v, const Args&) { return Value(lower(to_str(v))); }},
      {"title", [](const Value& v, const Args&) { return Value(title(to_str(v))); }},
      {"capitalize", [](const Value& v, const Args&) { return Value(capitalize(to_str(v))); }},
      {"replace",
       [](const Value& v, const Args& a) {
         Value n = arg(a, 2, "count");
         return Value(replace(to_str(v), to_str(arg(a, 0, "old")), to_str(arg(a, 1, "new")),
                              n.is_number() ? n.as_int() : -1));
       }},
      {"string", [](const Value& v, const Args&) { return Value(to_str(v)); }},
      {"int", [](const Value& v, const Args& a) { return to_int(v, arg(a, 0, "default")); }},
      {"float",
       [](const Value& v, const Args& a) {
         if (v.is_number()) return Value(v.as_float());
         if (v.is_string()) {
           char* end = nullptr;
           std::string s = strip(v.str(), Value(), true, true);
           double f = std::strtod(s.c_str(), &end);
           if (!s.empty() && *end == '\0') return Value(f);
         }
         Value d = arg(a, 0, "default");
         return d.is_undefined() ? Value(0.0) : d;
       }},
      {"abs",
       [](const Value& v, const Args&) {
         if (!v.is_number()) fail("bad operand type for abs(): '", v.type_name(), "'");
         return v.type() == Value::Type::Float ? Value(std::fabs(v.as_float())) : Value(int64_t(std::llabs(v.as_int())));
       }},
      {"list", [](const Value& v, const Args&) { return Value(iterate(v)); }},
      {"items",
       [](const Value& v, const Args&) {
         Array out;
         if (v.is_undefined()) return Value(std::move(out));
         if (!v.is_object()) fail("items filter expects a mapping, got ", v.type_name());
         for (const auto& [k, x] : v.object().items) out.push_back(Value(Array{key_value(k), x}));
         return Value(std::move(out));
       }},
      {"reverse",
       [](const Value& v, const Args&) {
         if (v.is_string()) {
           std::vector<std::string> cs = utf8_chars(v.str());
           std::string out;
           for (auto it = cs.rbegin(); it != cs.rend(); ++it) out += *it;
           return Value(std::move(out));
         }
         Array items = iterate(v);
         std::reverse(items.begin(), items.end());
         return Value(std::move(items));
       }},
      {"sort",
       [](const Value& v, const Args& a) {
         Array items = iterate(v);
         const bool rev = arg(a, 0, "reverse").truthy();
         Value attr = arg(a, 2, "attribute");
         auto key = [&](const Value& x) { return attr.is_undefined() ? x : attribute(x, to_str(attr)); };
         std::stable_sort(items.begin(), items.end(),
                          [&](const Value& x, const Value& y) { return rev ? less(key(y), key(x)) : less(key(x), key(y)); });
         return Value(std::move(items));
       }},
      {"unique",
       [](const Value& v, const Args&) {
         Array out;
         for (const Value& x : iterate(v))
           if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return equals(x, y); })) out.push_back(x);
         return Value(std::move(out));
       }},
      {"map",
       [](const Value& v, const Args& a) {
         Array out;
         if (!v.truthy()) return Value(std::move(out));  // Jinja: `if value:` (None maps to nothing)
         Value attr = arg(a, 99, "attribute");
         if (!attr.is_undefined()) {
           Value dflt = arg(a, 99, "default");
           for (const Value& x : iterate(v)) {
             Value r = attribute(x, to_str(attr));
             out.push_back(r.is_undefined() && !dflt.is_undefined() ? dflt : r);
           }
           return Value(std::move(out));
         }
         if (a.pos.empty()) fail("map() needs a filter name or attribute=");
         const std::string& f = need_string(a.pos[0], "map()");
         if (!known_filter(f)) fail("no filter named '", f, "'");
         Args rest;
         rest.pos.assign(a.pos.begin() + 1, a.pos.end());
         rest.kw = a.kw;
         for (const Value& x : iterate(v)) out.push_back(apply_filter(f, x, rest));
         return Value(std::move(out));
       }},
      {"select", [](const Value& v, const Args& a) { return select(v, a, true, false); }},
      {"reject", [](const Value& v, const Args& a) { return select(v, a, false, false); }},
      {"selectattr", [](const Value& v, const Args& a) { return select(v, a, true, true); }},
      {"rejectattr", [](const Value& v, const Args& a) { return select(v, a, false, true); }},
      {"indent",
       [](const Value& v, const Args& a) {
         return Value(indent(to_str(v), arg(a, 0, "width"), arg(a, 1, "first").truthy(), arg(a, 2, "blank").truthy()));
       }},
      {"sum",
       [](const Value& v, const Args& a) {
         Value attr = arg(a, 0, "attribute"), total = arg(a, 1, "start");
         if (total.is_undefined()) total = Value(0);
         for (const Value& x : iterate(v)) {
           Value y = attr.is_undefined() ? x : attribute(x, to_str(attr));
           if (!y.is_number() || !total.is_number()) fail("sum(): items must be numbers");
           total = total.type() == Value::Type::Float || y.type() == Value::Type::Float ? Value(total.as_float() + y.as_float())
                                                                                     : Value(total.as_int() + y.as_int());
         }
         return total;
       }},
      {"min",
       [](const Value& v, const Args&) {
         Array items = iterate(v);
         if (items.empty()) return Value();
         return *std::min_element(items.begin(), items.end(), [](const Value& x, const Value& y) { return less(x, y); });
       }},
      {"max",
       [](const Value& v, const Args&) {
         Array items = iterate(v);
         if (items.empty()) return Value();
         return *std::max_element(items.begin(), items.end(), [](const Value& x, const Value& y) { return less(x, y); });
       }},
      {"round",
       [](const Value& v, const Args& a) {
         if (!v.is_number()) fail("round expects a number, got ", v.type_name());
         Value p = arg(a, 0, "precision");
         const double scale = std::pow(10.0, p.is_number() ? double(p.as_int()) : 0.0);
         const std::string method = arg(a, 1, "method").is_string() ? arg(a, 1, "method").str() : "common";
         double x = v.as_float() * scale;
         x = method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : std::nearbyint(x);  // Python's round: half to even
         return Value(x / scale);
       }},
      {"safe", [](const Value& v, const Args&) { return v; }},
      {"escape",
       [](const Value& v, const Args&) {
         std::string out;
         for (char c : to_str(v)) {
           switch (c) {
             case '&': out += "&amp;"; break;
             case '<': out += "&lt;"; break;
             case '>': out += "&gt;"; break;
             case '"': out += "&#34;"; break;
             case '\'': out += "&#39;"; break;
             default: out.push_back(c);
           }
         }
         return Value(std::move(out));
       }},
      {"dictsort",
       [](const Value& v, const Args& a) {
         if (!v.is_object()) fail("dictsort expects a mapping, got ", v.type_name());
         Array out;
         for (const auto& [k, x] : v.object().items) out.push_back(Value(Array{key_value(k), x}));
         const bool by_value = to_str(arg(a, 1, "by")) == "value", rev = arg(a, 2, "reverse").truthy();
         std::stable_sort(out.begin(), out.end(), [&](const Value& x, const Value& y) {
           const Value &p = x.array()[by_value ? 1 : 0], &q = y.array()[by_value ? 1 : 0];
           return rev ? less(q, p) : less(p, q);
         });
         return Value(std::move(out));
       }},
  };
  return m;
}

bool num_test(const Value& v) { return v.is_number(); }

const std::map<std::string, TestFn, std::less<>>& tests() {
  static const std::map<std::string, TestFn, std::less<>> m = {
      {"defined", [](const Value& v, const Args&) { return !v.is_undefined(); }},
      {"undefined", [](const Value& v, const Args&) { return v.is_undefined(); }},
      {"none", [](const Value& v, const Args&) { return v.is_none(); }},
      {"boolean", [](const Value& v, const Args&) { return v.is_bool(); }},
      {"true", [](const Value& v, const Args&) { return v.is_bool() && v.as_bool(); }},
      {"false", [](const Value& v, const Args&) { return v.is_bool() && !v.as_bool(); }},
      {"integer", [](const Value& v, const Args&) { return v.is_int(); }},
      {"float", [](const Value& v, const Args&) { return v.type() == Value::Type::Float; }},
      {"number", [](const Value& v, const Args&) { return num_test(v); }},
      {"string", [](const Value& v, const Args&) { return v.is_string(); }},
      {"mapping", [](const Value& v, const Args&) { return v.is_object() && !v.object().is_namespace; }},
      // Jinja: anything iter() accepts (Undefined too); a sequence has len() and [].
      {"iterable",
       [](const Value& v, const Args&) { return v.is_string() || v.is_array() || v.is_object() || v.is_undefined(); }},
      {"sequence",
       [](const Value& v, const Args&) { return v.is_string() || v.is_array() || v.is_object() || v.is_undefined(); }},
      {"callable", [](const Value& v, const Args&) { return v.is_function(); }},
      {"sameas",
       [](const Value& v, const Args& a) {
         Value o = arg(a, 0, "other");
         if (v.type() != o.type()) return false;
         if (v.is_none() || v.is_undefined()) return true;
         if (v.is_bool()) return v.as_bool() == o.as_bool();
         return equals(v, o) && (!v.is_array() || &v.array() == &o.array()) && (!v.is_object() || &v.object() == &o.object());
       }},
      {"eq", [](const Value& v, const Args& a) { return equals(v, arg(a, 0, "other")); }},
      {"ne", [](const Value& v, const Args& a) { return !equals(v, arg(a, 0, "other")); }},
      {"lt", [](const Value& v, const Args& a) { return less(v, arg(a, 0, "other")); }},
      {"le", [](const Value& v, const Args& a) { return !less(arg(a, 0, "other"), v); }},
      {"gt", [](const Value& v, const Args& a) { return less(arg(a, 0, "other"), v); }},
      {"ge", [](const Value& v, const Args& a) { return !less(v, arg(a, 0, "other")); }},
      {"in",
       [](const Value& v, const Args& a) {
         Value seq = arg(a, 0, "seq");
         if (seq.is_string()) return v.is_string() && seq.str().find(v.str()) != std::string::npos;
         if (seq.is_object()) return seq.object().find(dict_key(v)) != nullptr;
         for (const Value& x : iterate(seq))
           if (equals(x, v)) return true;
         return false;
       }},
      {"even", [](const Value& v, const Args&) { return v.is_number() && v.as_int() % 2 == 0; }},
      {"odd", [](const Value& v, const Args&) { return v.is_number() && v.as_int() % 2 != 0; }},
      {"divisibleby",
       [](const Value& v, const Args& a) {
         Value n = arg(a, 0, "num");
         if (!v.is_number() || !n.is_number() || n.as_int() == 0) fail("divisibleby needs a non-zero number");
         return v.as_int() % n.as_int() == 0;
       }},
      {"lower", [](const Value& v, const Args&) { return v.is_string() && lower(v.str()) == v.str(); }},
      {"upper", [](const Value& v, const Args&) { return v.is_string() && upper(v.str()) == v.str(); }},
  };
  return m;
}

const std::map<std::string, std::string, std::less<>>& aliases() {
  static const std::map<std::string, std::string, std::less<>> m = {
      {"d", "default"}, {"e", "escape"}, {"equalto", "eq"}, {"==", "eq"}, {"!=", "ne"}, {"lessthan", "lt"},
      {"greaterthan", "gt"}, {"<", "lt"}, {"<=", "le"}, {">", "gt"}, {">=", "ge"}};
  return m;
}

std::string_view canonical(std::string_view name) {
  auto it = aliases().find(name);
  return it == aliases().end() ? name : std::string_view(it->second);
}

Value strftime_now(const Args& a, const RenderOptions& opt) {
  const std::string& fmt = need_string(arg(a, 0, "format"), "strftime_now()");
  std::tm tm{};
  if (opt.now) {
    tm = *opt.now;
  } else {
    std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  }
  if (fmt.empty()) return Value("");
  std::string buf(fmt.size() * 4 + 64, '\0');
  size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
  if (n == 0) fail("strftime_now(): cannot format '", fmt, "'");
  buf.resize(n);
  return Value(std::move(buf));
}

}  // namespace

bool known_filter(const std::string& name) { return filters().count(canonical(name)) != 0; }
bool known_test(const std::string& name) { return tests().count(canonical(name)) != 0; }

Value apply_filter(const std::string& name, const Value& input, const Args& args) {
  auto it = filters().find(canonical(name));
  if (it == filters().end()) fail("no filter named '", name, "'");
  return it->second(input, args);
}

bool apply_test(const std::string& name, const Value& v, const Args& args) {
  auto it = tests().find(canonical(name));
  if (it == tests().end()) fail("no test named '", name, "'");
  return it->second(v, args);
}

std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = uint8_t(s[i]);
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (i + n > s.size()) n = 1;
    for (size_t k = 1; k < n; ++k)
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) n = 1;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

Array iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::Array: return v.array();
    case Value::Type::Object: {
      Array keys;
      for (const auto& [k, x] : v.object().items) keys.push_back(key_value(k));
      return keys;
    }
    case Value::Type::String: {
      Array chars;
      for (std::string& c : utf8_chars(v.str())) chars.push_back(Value(std::move(c)));
      return chars;
    }
    case Value::Type::Undefined: return {};
    default: fail("'", v.type_name(), "' object is not iterable");
  }
}

std::optional<Value> call_method(const Value& obj, const std::string& name, const Args& a) {
  if (obj.is_string()) {
    const std::string& s = obj.str();
    if (name == "strip") return Value(strip(s, arg(a, 0, "chars"), true, true));
    if (name == "lstrip") return Value(strip(s, arg(a, 0, "chars"), true, false));
    if (name == "rstrip") return Value(strip(s, arg(a, 0, "chars"), false, true));
    if (name == "split") {
      Value n = arg(a, 1, "maxsplit");
      return Value(split(s, arg(a, 0, "sep"), n.is_number() ? n.as_int() : -1));
    }
    if (name == "startswith") return Value(affix(s, arg(a, 0, "prefix"), true));
    if (name == "endswith") return Value(affix(s, arg(a, 0, "suffix"), false));
    if (name == "replace") {
      Value n = arg(a, 2, "count");
      return Value(replace(s, need_string(arg(a, 0, "old"), "replace()"), need_string(arg(a, 1, "new"), "replace()"),
                           n.is_number() ? n.as_int() : -1));
    }
    if (name == "upper") return Value(upper(s));
    if (name == "lower") return Value(lower(s));
    if (name == "title") return Value(title(s));
    if (name == "capitalize") return Value(capitalize(s));
    if (name == "find" || name == "rfind") {
      const std::string& sub = need_string(arg(a, 0, "sub"), "find()");
      size_t at = name == "find" ? s.find(sub) : s.rfind(sub);
      if (at == std::string::npos) return Value(-1);
      return Value(int64_t(utf8_chars(s.substr(0, at)).size()));
    }
    if (name == "count") {
      const std::string& sub = need_string(arg(a, 0, "sub"), "count()");
      if (sub.empty()) return Value(int64_t(utf8_chars(s).size()) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    }
    if (name == "join") {
      std::string out;
      bool first = true;
      for (const Value& x : iterate(arg(a, 0, "iterable"))) {
        if (!first) out += s;
        first = false;
        out += need_string(x, "join()");
      }
      return Value(std::move(out));
    }
    if (name == "format") return Value(format(s, a));
    if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum") {
      if (s.empty()) return Value(false);
      for (char c : s) {
        const uint8_t u = uint8_t(c);
        const bool ok = name == "isdigit" ? std::isdigit(u) : name == "isspace" ? is_space(c)
                        : name == "isalpha"                ? std::isalpha(u)
                                                           : std::isalnum(u);
        if (!ok) return Value(false);
      }
      return Value(true);
    }
    return std::nullopt;
  }
  if (obj.is_object() && !obj.object().is_namespace) {
    const Object& o = obj.object();
    if (name == "get") {
      Value key = arg(a, 0, "key");
      const Value* v = key.is_array() || key.is_object() ? nullptr : o.find(dict_key(key));
      if (v) return *v;
      Value d = arg(a, 1, "default");
      return d.is_undefined() ? Value(nullptr) : d;
    }
    if (name == "items") return apply_filter("items", obj, Args{});
    if (name == "keys") return Value(iterate(obj));
    if (name == "values") {
      Array out;
      for (const auto& [k, v] : o.items) out.push_back(v);
      return Value(std::move(out));
    }
    return std::nullopt;
  }
  return std::nullopt;
}

void add_globals(Object& scope, const RenderOptions& options) {
  scope.set("range", Value(Function([](Args& a) -> Value {
              int64_t start = 0, stop, step = 1;
              for (const Value& v : a.pos)
                if (!v.is_number() || v.type() == Value::Type::Float) fail("range() arguments must be integers");
              if (a.pos.size() == 1) {
                stop = a.pos[0].as_int();
              } else if (a.pos.size() == 2 || a.pos.size() == 3) {
                start = a.pos[0].as_int();
                stop = a.pos[1].as_int();
                if (a.pos.size() == 3) step = a.pos[2].as_int();
              } else {
                fail("range() takes 1 to 3 arguments");
              }
              if (step == 0) fail("range() arg 3 must not be zero");
              Array out;
              for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                if (out.size() >= 1'000'000) fail("range() longer than 1000000 items");
                out.push_back(Value(i));
              }
              return Value(std::move(out));
            })));
  auto make_dict = [](Args& a, bool ns) {
    Value o = Value::new_object();
    o.object().is_namespace = ns;
    for (const Value& p : a.pos) {
      if (!p.is_object()) fail(ns ? "namespace()" : "dict()", " takes a mapping or keyword arguments");
      for (const auto& [k, v] : p.object().items) o.object().set(k, v);
    }
    for (auto& [k, v] : a.kw) {
      if (ns && !k.empty() && k[0] == '_') fail("namespace attributes cannot start with '_' ('", k, "')");
      o.object().set(k, v);
    }
    return o;
  };
  scope.set("namespace", Value(Function([make_dict](Args& a) { return make_dict(a, true); })));
  scope.set("dict", Value(Function([make_dict](Args& a) { return make_dict(a, false); })));
  scope.set("raise_exception", Value(Function([](Args& a) -> Value {
              throw RaisedError(a.pos.empty() ? std::string() : to_str(a.pos[0]));
            })));
  scope.set("strftime_now", Value(Function([options](Args& a) { return strftime_now(a, options); })));
}

}  // namespace keel::jinja
