// Template: parses once, renders by walking the AST. Scopes follow Jinja: the
// root scope holds the globals and the caller's variables; a for loop body
// and a macro call get their own scope (so {% set %} inside a loop does not
// leak out, which is why templates use namespace()); if blocks do not.
// Errors from filters and methods get "NAME:LINE:COL: " of the expression
// that failed; raise_exception's RaisedError passes through unchanged.
#include "jinja/template.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "jinja/ast.h"
#include "jinja/builtins.h"

namespace keel::jinja {

struct Template::Impl {
  std::string name;
  Body body;
};

namespace {

/// An error that already names its location.
class LocatedError : public Error {
 public:
  using Error::Error;
};

enum class Flow : uint8_t { Normal, Break, Continue };

std::string_view object_desc(const Value& v) {
  switch (v.type()) {
    case Value::Type::Object: return v.object().is_namespace ? "Namespace object" : "dict object";
    case Value::Type::Array: return "list object";
    case Value::Type::String: return "str object";
    default: return "object";
  }
}

class Interpreter {
 public:
  Interpreter(const Template::Impl& t, const RenderOptions& opt) : t_(t), opt_(opt) {}

  std::string run(const nlohmann::ordered_json& variables) {
    KEEL_CHECK(variables.is_object() || variables.is_null(), t_.name, ": template variables must be a JSON object");
    Object root;
    add_globals(root, opt_);
    if (variables.is_object())
      for (const auto& [k, v] : variables.items()) root.set(k, Value::from_json(v));
    stack_ = {&root};
    std::string out;
    render(t_.body, out);
    return out;
  }

 private:
  const Template::Impl& t_;
  const RenderOptions& opt_;
  std::vector<Object*> stack_;
  size_t iterations_ = 0;
  int call_depth_ = 0;

  template <class... A>
  [[noreturn]] void error_at(int line, int col, const A&... msg) const {
    throw LocatedError(cat(t_.name, ":", line, ":", col, ": ", msg...));
  }

  // Runs f; a keel::Error from it that names no position gets (line, col).
  // raise_exception's message passes through unchanged.
  template <class F>
  auto located(int line, int col, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const LocatedError&) {
      throw;
    } catch (const RaisedError&) {
      throw;
    } catch (const Error& e) {
      error_at(line, col, e.what());
    }
  }

  const Value* lookup(const std::string& name) const {
    for (auto it = stack_.rbegin(); it != stack_.rend(); ++it)
      if (const Value* v = (*it)->find(name)) return v;
    return nullptr;
  }

  void append(std::string& out, std::string_view s, const Node& at) {
    if (out.size() + s.size() > opt_.max_output)
      error_at(at.line, at.col, "output exceeds ", opt_.max_output, " bytes");
    out.append(s);
  }

  // --------------------------------------------------------------- statements

  Flow render(const Body& body, std::string& out) {
    for (const Node& n : body) {
      const Flow f = located(n.line, n.col, [&] { return render_node(n, out); });
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow render_node(const Node& n, std::string& out) {
    switch (n.kind) {
      case Node::Kind::Text: append(out, n.text, n); return Flow::Normal;
      case Node::Kind::Output: append(out, to_str(eval(*n.expr)), n); return Flow::Normal;
      case Node::Kind::If:
        for (const auto& [cond, body] : n.branches)
          if (eval(*cond).truthy()) return render(body, out);
        return render(n.else_body, out);
      case Node::Kind::For: return render_for(n, out);
      case Node::Kind::Set: set(n, eval(*n.expr)); return Flow::Normal;
      case Node::Kind::SetBlock: {
        std::string text;
        render(n.body, text);
        Value v(std::move(text));
        if (n.filter) v = apply_filters(*n.filter, std::move(v));
        set(n, std::move(v));
        return Flow::Normal;
      }
      case Node::Kind::Macro: define_macro(n); return Flow::Normal;
      case Node::Kind::Break: return Flow::Break;
      case Node::Kind::Continue: return Flow::Continue;
      case Node::Kind::FilterBlock: {
        std::string text;
        render(n.body, text);
        append(out, to_str(apply_filters(*n.filter, Value(std::move(text)))), n);
        return Flow::Normal;
      }
      case Node::Kind::Scope: return render(n.body, out);
    }
    return Flow::Normal;
  }

  // {% set %}: a name, several names from a sequence, or ns.attr.
  void set(const Node& n, Value v) {
    if (!n.attr.empty()) {
      const Value* ns = lookup(n.targets[0]);
      if (!ns || !ns->is_object() || !ns->object().is_namespace)
        error_at(n.line, n.col, "cannot assign attribute '", n.attr, "' on '", n.targets[0],
                 "': not a namespace object");
      if (!n.attr.empty() && n.attr[0] == '_')
        error_at(n.line, n.col, "namespace attributes cannot start with '_' ('", n.attr, "')");
      ns->object().set(n.attr, std::move(v));
      return;
    }
    assign(n.targets, std::move(v), n, *stack_.back());
  }

  void assign(const std::vector<std::string>& targets, Value v, const Node& at, Object& scope) {
    if (targets.size() == 1) {
      scope.set(targets[0], std::move(v));
      return;
    }
    Array items = iterate(v);
    if (items.size() != targets.size())
      error_at(at.line, at.col, "cannot unpack ", items.size(), " values into ", targets.size(), " names");
    for (size_t i = 0; i < targets.size(); ++i) scope.set(targets[i], std::move(items[i]));
  }

  Flow render_for(const Node& n, std::string& out) {
    Array all = iterate(eval(*n.expr));
    Object scope;
    stack_.push_back(&scope);
    struct Pop {
      std::vector<Object*>& s;
      ~Pop() { s.pop_back(); }
    } pop{stack_};
    // A loop filter (for x in xs if cond) runs before the loop: loop.length
    // and loop.index count only the items that pass.
    Array items;
    if (n.cond) {
      for (Value& v : all) {
        assign(n.targets, v, n, scope);
        if (eval(*n.cond).truthy()) items.push_back(std::move(v));
      }
    } else {
      items = std::move(all);
    }
    const int64_t len = int64_t(items.size());
    for (int64_t i = 0; i < len; ++i) {
      if (++iterations_ > opt_.max_iterations)
        error_at(n.line, n.col, "more than ", opt_.max_iterations, " loop iterations");
      Value loop = Value::new_object();
      Object& L = loop.object();
      L.set("index0", Value(i));
      L.set("index", Value(i + 1));
      L.set("revindex0", Value(len - i - 1));
      L.set("revindex", Value(len - i));
      L.set("first", Value(i == 0));
      L.set("last", Value(i == len - 1));
      L.set("length", Value(len));
      L.set("depth", Value(1));
      L.set("depth0", Value(0));
      if (i > 0) L.set("previtem", items[size_t(i - 1)]);
      if (i + 1 < len) L.set("nextitem", items[size_t(i + 1)]);
      L.set("cycle", Value(Function([i](Args& a) -> Value {
              if (a.pos.empty()) fail("loop.cycle() needs at least one argument");
              return a.pos[size_t(i) % a.pos.size()];
            })));
      scope.set("loop", std::move(loop));
      assign(n.targets, items[size_t(i)], n, scope);
      if (render(n.body, out) == Flow::Break) break;
    }
    if (len == 0) return render(n.else_body, out);
    return Flow::Normal;
  }

  void define_macro(const Node& n) {
    const Node* node = &n;
    Object* root = stack_.front();
    stack_.back()->set(n.name, Value(Function([this, node, root](Args& a) -> Value {
      if (++call_depth_ > opt_.max_call_depth)
        error_at(node->line, node->col, "macro '", node->name, "' nested deeper than ", opt_.max_call_depth, " calls");
      if (a.pos.size() > node->targets.size())
        fail("macro '", node->name, "' takes ", node->targets.size(), " arguments, got ", a.pos.size());
      Object scope;
      std::vector<Object*> saved = std::move(stack_);
      stack_ = {root, &scope};
      struct Restore {
        Interpreter& in;
        std::vector<Object*>& saved;
        ~Restore() {
          in.stack_ = std::move(saved);
          --in.call_depth_;
        }
      } restore{*this, saved};
      for (size_t i = 0; i < node->targets.size(); ++i) {
        const std::string& p = node->targets[i];
        Value v;
        bool given = i < a.pos.size();
        if (given) v = a.pos[i];
        for (auto& [k, kv] : a.kw)
          if (k == p) {
            v = kv;
            given = true;
          }
        if (!given && node->defaults[i]) v = eval(*node->defaults[i]);
        scope.set(p, std::move(v));
      }
      for (auto& [k, kv] : a.kw) {
        bool known = false;
        for (const std::string& p : node->targets) known = known || p == k;
        if (!known) fail("macro '", node->name, "' has no parameter '", k, "'");
      }
      std::string text;
      render(node->body, text);
      return Value(std::move(text));
    })));
  }

  // ------------------------------------------------------------ expressions

  Value eval(const Expr& e) {
    return located(e.line, e.col, [&] { return eval_inner(e); });
  }

  Args eval_args(const Expr& e, size_t first) {
    Args a;
    for (size_t i = first; i < e.args.size(); ++i) a.pos.push_back(eval(*e.args[i]));
    for (const auto& [k, v] : e.kwargs) a.kw.emplace_back(k, eval(*v));
    return a;
  }

  // `f` is a Filter expression (possibly a chain ending in one whose input is null).
  Value apply_filters(const Expr& f, Value input) {
    Value in = f.args[0] ? apply_filters(*f.args[0], std::move(input)) : std::move(input);
    return apply_filter(f.name, in, eval_args(f, 1));
  }

  // What to call an expression that evaluated to Undefined, as Jinja says it.
  std::string undefined_desc(const Expr& e) {
    if (e.kind == Expr::Kind::Name) return "'" + e.name + "' is undefined";
    if (e.kind == Expr::Kind::GetAttr || e.kind == Expr::Kind::GetItem) {
      Value obj = eval(*e.args[0]);
      std::string key = e.kind == Expr::Kind::GetAttr ? e.name : to_str(eval(*e.args[1]));
      return cat("'", object_desc(obj), "' has no attribute '", key, "'");
    }
    return "the value is undefined";
  }

  // Fails at the position of `e`, an expression that evaluated to Undefined.
  [[noreturn]] void undefined_error(const Expr& e) { error_at(e.line, e.col, undefined_desc(e)); }

  Value eval_inner(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::Literal: return e.value;
      case Expr::Kind::Name: {
        const Value* v = lookup(e.name);
        return v ? *v : Value();
      }
      case Expr::Kind::List: {
        Array a;
        for (const auto& x : e.args) a.push_back(eval(*x));
        return Value(std::move(a));
      }
      case Expr::Kind::Dict: {
        Value d = Value::new_object();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          Value k = eval(*e.args[i]);
          d.object().set(dict_key(k), eval(*e.args[i + 1]));
        }
        return d;
      }
      case Expr::Kind::GetAttr: {
        Value obj = eval(*e.args[0]);
        if (obj.is_undefined()) undefined_error(*e.args[0]);
        if (obj.is_object())
          if (const Value* v = obj.object().find(e.name)) return *v;
        return Value();
      }
      case Expr::Kind::GetItem: return get_item(e);
      case Expr::Kind::Slice: return slice(e);
      case Expr::Kind::Call: return call(e);
      case Expr::Kind::Filter: return apply_filter(e.name, eval(*e.args[0]), eval_args(e, 1));
      case Expr::Kind::Test: return Value(apply_test(e.name, eval(*e.args[0]), eval_args(e, 1)) != e.negate);
      case Expr::Kind::Unary: {
        Value v = eval(*e.args[0]);
        if (e.name == "not") return Value(!v.truthy());
        if (!v.is_number()) fail("bad operand type for unary ", e.name, ": '", v.type_name(), "'");
        if (e.name == "+") return v.is_bool() ? Value(v.as_int()) : v;
        if (v.type() == Value::Type::Float) return Value(-v.as_float());
        return Value(-v.as_int());
      }
      case Expr::Kind::Binary: return binary(e.name, eval(*e.args[0]), eval(*e.args[1]));
      case Expr::Kind::Compare: {
        Value left = eval(*e.args[0]);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.args[i + 1]);
          if (!compare(e.ops[i], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case Expr::Kind::And: {
        Value a = eval(*e.args[0]);
        return a.truthy() ? eval(*e.args[1]) : a;
      }
      case Expr::Kind::Or: {
        Value a = eval(*e.args[0]);
        return a.truthy() ? a : eval(*e.args[1]);
      }
      case Expr::Kind::Cond:
        if (eval(*e.args[1]).truthy()) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value();
    }
    return Value();
  }

  Value get_item(const Expr& e) {
    Value obj = eval(*e.args[0]);
    Value key = eval(*e.args[1]);
    if (obj.is_undefined()) undefined_error(*e.args[0]);
    if (obj.is_object()) {
      if (!key.is_array() && !key.is_object() && !key.is_undefined())
        if (const Value* v = obj.object().find(dict_key(key))) return *v;
      return Value();
    }
    if ((obj.is_array() || obj.is_string()) && key.is_number() && key.type() != Value::Type::Float) {
      int64_t i = key.as_int();
      if (obj.is_array()) {
        const int64_t n = int64_t(obj.array().size());
        if (i < 0) i += n;
        return i >= 0 && i < n ? obj.array()[size_t(i)] : Value();
      }
      std::vector<std::string> chars = utf8_chars(obj.str());
      const int64_t n = int64_t(chars.size());
      if (i < 0) i += n;
      return i >= 0 && i < n ? Value(chars[size_t(i)]) : Value();
    }
    if (key.is_string()) return Value();  // e.g. a list's attribute: undefined, as Jinja
    if (obj.is_none()) return Value();
    fail("'", obj.type_name(), "' object is not subscriptable with '", key.type_name(), "'");
  }

  Value slice(const Expr& e) {
    Value obj = eval(*e.args[0]);
    if (obj.is_undefined()) undefined_error(*e.args[0]);
    auto part = [&](int k) -> std::optional<int64_t> {
      if (!e.args[size_t(k)]) return std::nullopt;
      Value v = eval(*e.args[size_t(k)]);
      if (v.is_none()) return std::nullopt;
      if (!v.is_number() || v.type() == Value::Type::Float) fail("slice indices must be integers or None");
      return v.as_int();
    };
    std::optional<int64_t> start = part(1), stop = part(2), step_opt = part(3);
    const int64_t step = step_opt.value_or(1);
    if (step == 0) fail("slice step cannot be zero");
    Array items;
    std::vector<std::string> chars;
    int64_t n;
    if (obj.is_array()) {
      n = int64_t(obj.array().size());
    } else if (obj.is_string()) {
      chars = utf8_chars(obj.str());
      n = int64_t(chars.size());
    } else {
      fail("'", obj.type_name(), "' object cannot be sliced");
    }
    // Python's slice.indices().
    auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
      if (!v) return dflt;
      int64_t x = *v;
      if (x < 0) x += n;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t lo = clamp(start, step > 0 ? 0 : n - 1), hi = clamp(stop, step > 0 ? n : -1);
    std::string s;
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) {
      if (obj.is_array()) items.push_back(obj.array()[size_t(i)]);
      else s += chars[size_t(i)];
    }
    return obj.is_array() ? Value(std::move(items)) : Value(std::move(s));
  }

  Value call(const Expr& e) {
    const Expr& callee = *e.args[0];
    if (callee.kind == Expr::Kind::GetAttr) {
      Value obj = eval(*callee.args[0]);
      if (obj.is_undefined()) undefined_error(*callee.args[0]);
      const Value* member = obj.is_object() ? obj.object().find(callee.name) : nullptr;
      if (!(member && member->is_function())) {
        Args a = eval_args(e, 1);
        if (std::optional<Value> r = call_method(obj, callee.name, a)) return *r;
        error_at(callee.line, callee.col, "'", object_desc(obj), "' has no attribute '", callee.name, "'");
      }
    }
    Value f = eval(callee);
    if (f.is_undefined()) undefined_error(callee);
    if (!f.is_function()) fail("'", f.type_name(), "' object is not callable");
    Args a = eval_args(e, 1);
    return f.function()(a);
  }

  static Value binary(const std::string& op, const Value& a, const Value& b) {
    if (op == "~") return Value(to_str(a) + to_str(b));
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
      if (a.is_array() && b.is_array()) {
        Array r = a.array();
        r.insert(r.end(), b.array().begin(), b.array().end());
        return Value(std::move(r));
      }
    }
    if (op == "*" && (((a.is_string() || a.is_array()) && b.is_int()) || ((b.is_string() || b.is_array()) && a.is_int()))) {
      const Value& seq = a.is_int() ? b : a;
      const int64_t n = std::max<int64_t>(0, (a.is_int() ? a : b).as_int());
      const size_t unit = seq.is_string() ? seq.str().size() : seq.array().size();
      if (unit && uint64_t(n) > (uint64_t(64) << 20) / unit) fail("repetition result too large");
      if (seq.is_string()) {
        std::string r;
        for (int64_t i = 0; i < n; ++i) r += seq.str();
        return Value(std::move(r));
      }
      Array r;
      for (int64_t i = 0; i < n; ++i) r.insert(r.end(), seq.array().begin(), seq.array().end());
      return Value(std::move(r));
    }
    if (!a.is_number() || !b.is_number())
      fail("unsupported operand type(s) for ", op, ": '", a.type_name(), "' and '", b.type_name(), "'");
    const bool floats = a.type() == Value::Type::Float || b.type() == Value::Type::Float;
    if (op == "/") {
      if (b.as_float() == 0) fail("division by zero");
      return Value(a.as_float() / b.as_float());
    }
    if (op == "**") {
      if (!floats && b.as_int() >= 0) {
        double r = std::pow(double(a.as_int()), double(b.as_int()));
        if (std::fabs(r) < 9.2e18) return Value(int64_t(std::llround(r)));
        fail("integer power result too large");
      }
      return Value(std::pow(a.as_float(), b.as_float()));
    }
    if (floats) {
      const double x = a.as_float(), y = b.as_float();
      if (op == "+") return Value(x + y);
      if (op == "-") return Value(x - y);
      if (op == "*") return Value(x * y);
      if (y == 0) fail("float division by zero");
      if (op == "//") return Value(std::floor(x / y));
      return Value(x - y * std::floor(x / y));  // Python's %: the sign of the divisor
    }
    const int64_t x = a.as_int(), y = b.as_int();
    int64_t r;
    if (op == "+" && !__builtin_add_overflow(x, y, &r)) return Value(r);
    if (op == "-" && !__builtin_sub_overflow(x, y, &r)) return Value(r);
    if (op == "*" && !__builtin_mul_overflow(x, y, &r)) return Value(r);
    if (op == "+" || op == "-" || op == "*") fail("integer overflow in '", op, "'");
    if (y == 0) fail("integer division or modulo by zero");
    if (x == INT64_MIN && y == -1) fail("integer overflow in '", op, "'");
    int64_t q = x / y, m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) {  // floor, as Python
      --q;
      m += y;
    }
    return Value(op == "//" ? q : m);
  }

  static bool contains(const Value& container, const Value& item) {
    switch (container.type()) {
      case Value::Type::String:
        if (!item.is_string()) fail("'in <string>' requires string as left operand, not ", item.type_name());
        return container.str().find(item.str()) != std::string::npos;
      case Value::Type::Array:
        for (const Value& v : container.array())
          if (equals(v, item)) return true;
        return false;
      case Value::Type::Object:
        return !item.is_undefined() && container.object().find(dict_key(item)) != nullptr;
      case Value::Type::Undefined: return false;
      default: fail("argument of type '", container.type_name(), "' is not iterable");
    }
  }

  static bool compare(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "<") return less(a, b);
    if (op == ">") return less(b, a);
    if (op == "<=") return !less(b, a);
    if (op == ">=") return !less(a, b);
    if (op == "in") return contains(b, a);
    return !contains(b, a);  // not in
  }
};

}  // namespace

Template::Template(std::string_view source, std::string name) : impl_(std::make_unique<Impl>()) {
  impl_->name = std::move(name);
  impl_->body = parse(lex(source, impl_->name), impl_->name);
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

const std::string& Template::name() const { return impl_->name; }

std::string Template::render(const nlohmann::ordered_json& variables, const RenderOptions& options) const {
  return Interpreter(*impl_, options).run(variables);
}

}  // namespace keel::jinja
