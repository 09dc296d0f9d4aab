// A guard run on untrusted JSON text before it is parsed. nlohmann's parser is
// iterative, but the values it builds are copied, compared and printed
// recursively, and keel's own walks over tokenizer components recurse too: a
// file nested 50,000 levels deep (200 KB) would overflow the stack. Real files
// nest a handful of levels, so anything deeper than kMaxJsonDepth is refused
// before it is parsed.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace keel {

/// Deepest nesting of arrays and objects accepted in a JSON file keel reads.
inline constexpr size_t kMaxJsonDepth = 64;

/// Throws keel::Error naming `source` when `text` nests arrays/objects deeper
/// than kMaxJsonDepth. Brackets inside strings are ignored; the text need not
/// be valid JSON (the parser reports that afterwards). One pass, no allocation.
void check_json_depth(std::string_view text, const std::string& source);

}  // namespace keel
