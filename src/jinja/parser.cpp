// Recursive-descent parser from tokens to the AST, following Jinja's grammar
// and operator precedence (lowest first): conditional expression, or, and,
// not, comparisons and 'in', + -, ~, * / // %, **, unary - +, then postfix
// (.attr, [index], [a:b:c], call) and the filter / test chain ('|', 'is').
// Unknown filters and tests are reported here, as Jinja reports them when it
// compiles a template, except inside an {% if %} of the same frame (Jinja's
// "soft" frames: a template may guard a filter another engine provides);
// there they fail only if they run.
#include <initializer_list>
#include <string_view>

#include "core/error.h"
#include "jinja/ast.h"

namespace keel::jinja {
namespace {

constexpr int kMaxDepth = 200;  // nesting of expressions and blocks (bounds the parser's stack)

class Parser {
 public:
  Parser(const std::vector<Token>& toks, const std::string& name) : t_(toks), name_(name) {}

  Body run() {
    std::string ended;
    Body b = body({}, &ended);
    if (cur().kind != Tok::End) error(cur(), "unexpected token");
    return b;
  }

 private:
  const std::vector<Token>& t_;
  const std::string& name_;
  size_t i_ = 0;
  int depth_ = 0;
  int soft_ = 0;  // > 0 inside an if block of the current frame (loop and macro bodies are new frames)

  // Parses a new frame's body: not soft, whatever encloses it.
  template <class F>
  auto in_new_frame(F&& f) {
    const int saved = soft_;
    soft_ = 0;
    auto r = f();
    soft_ = saved;
    return r;
  }

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser, const Token& at) : p(parser) {
      if (++p.depth_ > kMaxDepth) p.error(at, "template nested too deeply (more than ", kMaxDepth, " levels)");
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token& next() {
    const Token& t = t_[i_];
    if (i_ + 1 < t_.size()) ++i_;
    return t;
  }

  template <class... A>
  [[noreturn]] void error(const Token& at, const A&... msg) const {
    fail(name_, ":", at.line, ":", at.col, ": ", msg...);
  }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Tok::Text: return "template text";
      case Tok::VarBegin: return "'{{'";
      case Tok::VarEnd: return "'}}'";
      case Tok::BlockBegin: return "'{%'";
      case Tok::BlockEnd: return "'%}'";
      case Tok::Name: return "'" + t.text + "'";
      case Tok::String: return "a string";
      case Tok::Int:
      case Tok::Float: return "a number";
      case Tok::Op: return "'" + t.text + "'";
      case Tok::End: return "the end of the template";
    }
    return "?";
  }

  bool is_op(std::string_view op) const { return cur().kind == Tok::Op && cur().text == op; }
  bool is_name(std::string_view n) const { return cur().kind == Tok::Name && cur().text == n; }

  void expect_op(std::string_view op) {
    if (!is_op(op)) error(cur(), "expected '", op, "', got ", describe(cur()));
    next();
  }
  void expect(Tok kind, std::string_view what) {
    if (cur().kind != kind) error(cur(), "expected ", what, ", got ", describe(cur()));
    next();
  }
  std::string expect_name(std::string_view what) {
    if (cur().kind != Tok::Name) error(cur(), "expected ", what, ", got ", describe(cur()));
    return next().text;
  }

  static ExprPtr make(Expr::Kind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->col = at.col;
    return e;
  }

  // ------------------------------------------------------------ statements

  Body body(std::initializer_list<std::string_view> ends, std::string* ended) {
    Body out;
    for (;;) {
      const Token& t = cur();
      if (t.kind == Tok::End) {
        if (ends.size() != 0) error(t, "unexpected end of template, expected '", *ends.begin(), "'");
        return out;
      }
      if (t.kind == Tok::Text) {
        Node n = node(Node::Kind::Text, t);
        n.text = t.text;
        out.push_back(std::move(n));
        next();
        continue;
      }
      if (t.kind == Tok::VarBegin) {
        next();
        Node n = node(Node::Kind::Output, t);
        n.expr = expression();
        expect(Tok::VarEnd, "'}}'");
        out.push_back(std::move(n));
        continue;
      }
      if (t.kind != Tok::BlockBegin) error(t, "unexpected ", describe(t));
      const Token& kw = peek();
      if (kw.kind != Tok::Name) error(kw, "expected a tag name after '{%', got ", describe(kw));
      for (std::string_view e : ends)
        if (kw.text == e) {
          next();
          next();
          *ended = kw.text;
          return out;
        }
      next();
      out.push_back(statement());
    }
  }

  static Node node(Node::Kind kind, const Token& at) {
    Node n;
    n.kind = kind;
    n.line = at.line;
    n.col = at.col;
    return n;
  }

  Node statement() {
    const Token& kw = next();
    DepthGuard guard(*this, kw);
    const std::string& k = kw.text;
    std::string ended;
    if (k == "if") {
      ++soft_;
      struct Unsoft {
        int& s;
        ~Unsoft() { --s; }
      } unsoft{soft_};
      Node n = node(Node::Kind::If, kw);
      ExprPtr c = expression();
      for (;;) {
        expect(Tok::BlockEnd, "'%}'");
        Body b = body({"elif", "else", "endif"}, &ended);
        n.branches.emplace_back(std::move(c), std::move(b));
        if (ended != "elif") break;
        c = expression();
      }
      if (ended == "else") {
        expect(Tok::BlockEnd, "'%}'");
        n.else_body = body({"endif"}, &ended);
      }
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (k == "for") {
      Node n = node(Node::Kind::For, kw);
      n.targets = name_list("a loop variable");
      if (!is_name("in")) error(cur(), "expected 'in', got ", describe(cur()));
      next();
      n.expr = expression(false);
      if (is_name("if")) {
        next();
        n.cond = in_new_frame([&] { return expression(); });
      }
      if (is_name("recursive")) error(cur(), "recursive for loops are not supported");
      expect(Tok::BlockEnd, "'%}'");
      n.body = in_new_frame([&] { return body({"else", "endfor"}, &ended); });
      if (ended == "else") {
        expect(Tok::BlockEnd, "'%}'");
        n.else_body = body({"endfor"}, &ended);
      }
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (k == "set") {
      Node n = node(Node::Kind::Set, kw);
      n.targets = name_list("a variable name");
      if (n.targets.size() == 1 && is_op(".")) {
        next();
        n.attr = expect_name("an attribute name");
      }
      if (is_op("=")) {
        next();
        n.expr = expression();
        if (is_op(",")) {  // set a, b = x, y
          auto list = make(Expr::Kind::List, cur());
          list->args.push_back(std::move(n.expr));
          while (is_op(",")) {
            next();
            list->args.push_back(expression());
          }
          n.expr = std::move(list);
        }
        expect(Tok::BlockEnd, "'%}'");
        return n;
      }
      if (n.targets.size() != 1 || !n.attr.empty()) error(cur(), "expected '=' in set, got ", describe(cur()));
      n.kind = Node::Kind::SetBlock;
      if (is_op("|")) n.filter = filter_chain(nullptr);
      expect(Tok::BlockEnd, "'%}'");
      n.body = body({"endset"}, &ended);
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (k == "macro") {
      Node n = node(Node::Kind::Macro, kw);
      n.name = expect_name("a macro name");
      expect_op("(");
      while (!is_op(")")) {
        n.targets.push_back(expect_name("a parameter name"));
        if (is_op("=")) {
          next();
          n.defaults.push_back(expression());
        } else {
          n.defaults.push_back(nullptr);
        }
        if (!is_op(")")) expect_op(",");
      }
      next();
      expect(Tok::BlockEnd, "'%}'");
      n.body = in_new_frame([&] { return body({"endmacro"}, &ended); });
      if (cur().kind == Tok::Name) next();  // {% endmacro name %}
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (k == "break" || k == "continue") {
      Node n = node(k == "break" ? Node::Kind::Break : Node::Kind::Continue, kw);
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (k == "filter") {
      Node n = node(Node::Kind::FilterBlock, kw);
      n.filter = filter_chain(nullptr, /*leading_bar=*/false);
      expect(Tok::BlockEnd, "'%}'");
      n.body = body({"endfilter"}, &ended);
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    if (k == "generation") {  // transformers' assistant-mask tag: renders its body
      Node n = node(Node::Kind::Scope, kw);
      expect(Tok::BlockEnd, "'%}'");
      n.body = body({"endgeneration"}, &ended);
      expect(Tok::BlockEnd, "'%}'");
      return n;
    }
    static const char* const kUnsupported[] = {"call", "include", "import", "from", "extends", "block", "with", "do"};
    for (const char* u : kUnsupported)
      if (k == u) error(kw, "the '", k, "' tag is not supported by keel's template engine");
    error(kw, "unknown tag '", k, "'");
  }

  // a, b, c  or  (a, b)
  std::vector<std::string> name_list(std::string_view what) {
    std::vector<std::string> names;
    const bool paren = is_op("(");
    if (paren) next();
    names.push_back(expect_name(what));
    while (is_op(",")) {
      next();
      names.push_back(expect_name(what));
    }
    if (paren) expect_op(")");
    return names;
  }

  // ----------------------------------------------------------- expressions

  ExprPtr expression(bool with_cond = true) {
    DepthGuard guard(*this, cur());
    ExprPtr e = or_expr();
    while (with_cond && is_name("if")) {
      auto c = make(Expr::Kind::Cond, cur());
      next();
      c->args.push_back(std::move(e));
      c->args.push_back(or_expr());
      if (is_name("else")) {
        next();
        c->args.push_back(expression());
      } else {
        c->args.push_back(nullptr);
      }
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary_chain(Expr::Kind kind, std::string_view word, ExprPtr (Parser::*sub)()) {
    ExprPtr e = (this->*sub)();
    while (is_name(word)) {
      auto b = make(kind, cur());
      next();
      b->args.push_back(std::move(e));
      b->args.push_back((this->*sub)());
      e = std::move(b);
    }
    return e;
  }
  ExprPtr or_expr() { return binary_chain(Expr::Kind::Or, "or", &Parser::and_expr); }
  ExprPtr and_expr() { return binary_chain(Expr::Kind::And, "and", &Parser::not_expr); }

  ExprPtr not_expr() {
    if (is_name("not")) {
      DepthGuard guard(*this, cur());
      auto u = make(Expr::Kind::Unary, cur());
      next();
      u->name = "not";
      u->args.push_back(not_expr());
      return u;
    }
    return compare();
  }

  ExprPtr compare() {
    ExprPtr first = math1();
    ExprPtr c;
    for (;;) {
      std::string op;
      if (cur().kind == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
        op = cur().text;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().kind == Tok::Name && peek().text == "in") {
        op = "not in";
        next();
        next();
      } else {
        break;
      }
      if (!c) {
        c = make(Expr::Kind::Compare, cur());
        c->line = first->line;
        c->col = first->col;
        c->args.push_back(std::move(first));
      }
      c->ops.push_back(op);
      c->args.push_back(math1());
    }
    return c ? std::move(c) : std::move(first);
  }

  ExprPtr binary_ops(std::initializer_list<std::string_view> ops, ExprPtr (Parser::*sub)()) {
    ExprPtr e = (this->*sub)();
    for (;;) {
      bool match = false;
      for (std::string_view op : ops) match = match || is_op(op);
      if (!match) return e;
      auto b = make(Expr::Kind::Binary, cur());
      b->name = next().text;
      b->args.push_back(std::move(e));
      b->args.push_back((this->*sub)());
      e = std::move(b);
    }
  }
  ExprPtr math1() { return binary_ops({"+", "-"}, &Parser::concat); }
  ExprPtr concat() { return binary_ops({"~"}, &Parser::math2); }
  ExprPtr math2() { return binary_ops({"*", "/", "//", "%"}, &Parser::power); }
  ExprPtr power() { return binary_ops({"**"}, &Parser::unary_with_filter); }
  ExprPtr unary_with_filter() { return unary(true); }

  ExprPtr unary(bool with_filter) {
    DepthGuard guard(*this, cur());
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = make(Expr::Kind::Unary, cur());
      e->name = next().text;
      e->args.push_back(unary(false));
    } else {
      e = primary();
    }
    e = postfix(std::move(e));
    if (with_filter) e = filter_chain(std::move(e));
    return e;
  }

  ExprPtr primary() {
    const Token& t = cur();
    switch (t.kind) {
      case Tok::Name: {
        next();
        if (t.text == "true" || t.text == "True") return literal(t, Value(true));
        if (t.text == "false" || t.text == "False") return literal(t, Value(false));
        if (t.text == "none" || t.text == "None") return literal(t, Value(nullptr));
        auto e = make(Expr::Kind::Name, t);
        e->name = t.text;
        return e;
      }
      case Tok::String: {
        std::string s;
        while (cur().kind == Tok::String) s += next().text;  // adjacent literals concatenate
        return literal(t, Value(std::move(s)));
      }
      case Tok::Int: next(); return literal(t, Value(t.i));
      case Tok::Float: next(); return literal(t, Value(t.f));
      case Tok::Op:
        if (t.text == "(") {
          next();
          if (is_op(")")) {  // empty tuple
            next();
            return make(Expr::Kind::List, t);
          }
          ExprPtr e = expression();
          if (is_op(",")) {  // a tuple: a list to the interpreter
            auto list = make(Expr::Kind::List, t);
            list->args.push_back(std::move(e));
            while (is_op(",")) {
              next();
              if (is_op(")")) break;
              list->args.push_back(expression());
            }
            e = std::move(list);
          }
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          next();
          auto list = make(Expr::Kind::List, t);
          while (!is_op("]")) {
            list->args.push_back(expression());
            if (!is_op("]")) expect_op(",");
          }
          next();
          return list;
        }
        if (t.text == "{") {
          next();
          auto dict = make(Expr::Kind::Dict, t);
          while (!is_op("}")) {
            dict->args.push_back(expression());
            expect_op(":");
            dict->args.push_back(expression());
            if (!is_op("}")) expect_op(",");
          }
          next();
          return dict;
        }
        break;
      default: break;
    }
    error(t, "unexpected ", describe(t), " in an expression");
  }

  static ExprPtr literal(const Token& t, Value v) {
    auto e = make(Expr::Kind::Literal, t);
    e->value = std::move(v);
    return e;
  }

  ExprPtr postfix(ExprPtr e) {
    for (;;) {
      const Token& t = cur();
      if (is_op(".")) {
        next();
        auto g = make(Expr::Kind::GetAttr, t);
        if (cur().kind == Tok::Int) {  // foo.0 is foo[0]
          g->kind = Expr::Kind::GetItem;
          g->args.push_back(std::move(e));
          g->args.push_back(literal(cur(), Value(next().i)));
        } else {
          g->name = expect_name("an attribute name");
          g->args.push_back(std::move(e));
        }
        e = std::move(g);
      } else if (is_op("[")) {
        next();
        e = subscript(std::move(e), t);
      } else if (is_op("(")) {
        e = call(std::move(e), Expr::Kind::Call, t);
      } else {
        return e;
      }
    }
  }

  ExprPtr subscript(ExprPtr obj, const Token& at) {
    auto g = make(Expr::Kind::GetItem, at);
    g->args.push_back(std::move(obj));
    ExprPtr parts[3];
    int n = 0;
    for (;;) {
      if (!is_op(":") && !is_op("]")) parts[n] = expression();
      if (is_op(":") && n < 2) {
        next();
        ++n;
        g->kind = Expr::Kind::Slice;
        continue;
      }
      break;
    }
    expect_op("]");
    if (g->kind == Expr::Kind::GetItem) {
      if (!parts[0]) error(at, "expected an index inside '[]'");
      g->args.push_back(std::move(parts[0]));
    } else {
      for (auto& p : parts) g->args.push_back(std::move(p));
    }
    return g;
  }

  // (args) after a callee, filter or test: positional then name=value.
  // The call is located where its callee starts (a method call: at the '.').
  ExprPtr call(ExprPtr callee, Expr::Kind kind, const Token& at) {
    auto c = make(kind, at);
    if (callee) {
      c->line = callee->line;
      c->col = callee->col;
    }
    if (callee || kind == Expr::Kind::Call) c->args.push_back(std::move(callee));
    call_args(*c);
    return c;
  }

  void call_args(Expr& c) {
    expect_op("(");
    while (!is_op(")")) {
      if (cur().kind == Tok::Name && peek().kind == Tok::Op && peek().text == "=") {
        std::string key = next().text;
        next();
        c.kwargs.emplace_back(std::move(key), expression());
      } else {
        if (!c.kwargs.empty()) error(cur(), "positional argument after keyword argument");
        c.args.push_back(expression());
      }
      if (!is_op(")")) expect_op(",");
    }
    next();
  }

  // e | f(args) | g ... and e is [not] test(args); `e` null for {% filter %}.
  ExprPtr filter_chain(ExprPtr e, bool leading_bar = true) {
    bool first = true;
    for (;;) {
      const Token& t = cur();
      if (is_op("|") || (!leading_bar && first)) {
        if (is_op("|")) next();
        first = false;
        const Token& name_tok = cur();
        auto f = make(Expr::Kind::Filter, name_tok);
        f->name = expect_name("a filter name");
        while (is_op(".")) {  // dotted names are allowed by Jinja's grammar
          next();
          f->name += "." + expect_name("a filter name");
        }
        if (!soft_ && !known_filter(f->name)) error(name_tok, "no filter named '", f->name, "'");
        f->args.push_back(std::move(e));
        if (is_op("(")) call_args(*f);
        e = std::move(f);
      } else if (e && is_name("is")) {
        next();
        auto test = make(Expr::Kind::Test, t);
        if (is_name("not")) {
          next();
          test->negate = true;
        }
        const Token& name_tok = cur();
        test->name = expect_name("a test name");
        if (!soft_ && !known_test(test->name)) error(name_tok, "no test named '", test->name, "'");
        test->args.push_back(std::move(e));
        if (is_op("(")) {
          call_args(*test);
        } else if ((cur().kind == Tok::Name || cur().kind == Tok::String || cur().kind == Tok::Int ||
                    cur().kind == Tok::Float || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) error(cur(), "you cannot chain multiple tests with 'is'");
          test->args.push_back(postfix(primary()));
        }
        e = std::move(test);
      } else if (e && is_op("(")) {
        e = call(std::move(e), Expr::Kind::Call, t);
      } else {
        return e;
      }
    }
  }
};

}  // namespace

Body parse(const std::vector<Token>& tokens, const std::string& name) { return Parser(tokens, name).run(); }

}  // namespace keel::jinja
