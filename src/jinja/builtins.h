// Internal: Jinja's filters and tests, the Python methods templates call on
// strings, dicts and lists, and the globals transformers provides. Each throws
// keel::Error with a plain message; the interpreter adds the location.
#pragma once

#include <optional>
#include <string>

#include "jinja/template.h"
#include "jinja/value.h"

namespace keel::jinja {

Value apply_filter(const std::string& name, const Value& input, const Args& args);
bool apply_test(const std::string& name, const Value& v, const Args& args);
/// obj.name(args) for a built-in method; nullopt when obj has no such method.
std::optional<Value> call_method(const Value& obj, const std::string& name, const Args& args);

/// Adds range, namespace, dict, raise_exception and strftime_now to `scope`.
void add_globals(Object& scope, const RenderOptions& options);

/// Iterates v as Python's for loop does (list items, dict keys, string
/// characters; Undefined is empty). Throws for values that are not iterable.
Array iterate(const Value& v);
/// Splits UTF-8 text into characters (code points; invalid bytes one by one).
std::vector<std::string> utf8_chars(const std::string& s);

}  // namespace keel::jinja
