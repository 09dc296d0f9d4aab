// The parsed form of a template: expressions (Expr) and statements (Node),
// built by parser.cpp and walked by interpreter.cpp. Every node keeps the
// line and column it came from, for error messages.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jinja/lexer.h"
#include "jinja/value.h"

namespace keel::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind : uint8_t {
    Literal,  // value
    Name,     // name
    List,     // args: items
    Dict,     // args: key0, value0, key1, value1, ...
    GetAttr,  // args[0].name
    GetItem,  // args[0][args[1]]
    Slice,    // args[0][args[1]:args[2]:args[3]], absent parts null
    Call,     // args[0](args[1..], kwargs)
    Filter,   // args[0] | name(args[1..], kwargs); args[0] null in {% filter %}
    Test,     // args[0] is [not] name(args[1..])
    Unary,    // name ("-", "+" or "not") args[0]
    Binary,   // args[0] name args[1]: + - * / // % ** ~
    Compare,  // args[0] ops[0] args[1] ops[1] args[2] ...: == != < > <= >= in "not in"
    And,
    Or,
    Cond,  // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind = Kind::Literal;
  int line = 0, col = 0;
  Value value;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negate = false;  // Test: 'is not'
};

struct Node;
using Body = std::vector<Node>;

struct Node {
  enum class Kind : uint8_t {
    Text,      // text
    Output,    // {{ expr }}
    If,        // branches (cond, body); else_body
    For,       // for targets in expr [if cond]: body; else_body
    Set,       // targets (names, or one name + attr) = expr
    SetBlock,  // targets[0] = rendered body (through filter when set)
    Macro,     // name(targets with defaults): body
    Break,
    Continue,
    FilterBlock,  // filter (an Expr::Filter with a null input) applied to the rendered body
    Scope,        // {% generation %} body: rendered as is
  };
  Kind kind = Kind::Text;
  int line = 0, col = 0;
  std::string text, name, attr;
  ExprPtr expr, cond, filter;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  std::vector<std::string> targets;
  std::vector<ExprPtr> defaults;  // Macro: one per target, null when none
};

/// Parses tokens into a template body. Throws keel::Error "NAME:LINE:COL: ..."
/// for syntax errors, unknown tags, filters and tests.
Body parse(const std::vector<Token>& tokens, const std::string& name);

/// True when the interpreter knows the filter / test (builtins.cpp).
bool known_filter(const std::string& name);
bool known_test(const std::string& name);

}  // namespace keel::jinja
