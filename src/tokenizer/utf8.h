// UTF-8 helpers shared by the tokenizer's encoder and decoders: the GPT-2
// byte-level alphabet (every byte drawn as a printable code point, the form in
// which byte-level vocabularies are written), and a lossy UTF-8 cleaner that
// can run incrementally. The cleaner replaces each maximal invalid subsequence
// with U+FFFD (the rule of the Unicode standard, as Rust's from_utf8_lossy and
// Python's errors="replace" do); fed in chunks it makes the same decisions as on
// the whole string, which is what keeps streamed and batch decoding identical.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keel::tokenizer {

/// The code point that the byte-level alphabet draws byte `b` as.
uint32_t byte_level_char(uint8_t b);

/// Maps a byte-level string (as stored in vocab.json) back to raw bytes;
/// nullopt when some character is outside the 256-character alphabet.
std::optional<std::string> byte_level_to_bytes(std::string_view s);

/// Appends code point cp to out as UTF-8.
void append_utf8(std::string& out, uint32_t cp);

/// Appends the valid UTF-8 in `in` to `out`, each maximal invalid subsequence
/// replaced by U+FFFD. When `final` is false an incomplete but so-far valid
/// sequence at the end is left unconsumed. Returns the bytes consumed.
size_t utf8_clean(std::string_view in, std::string& out, bool final);

/// True when `s` is entirely valid UTF-8.
bool utf8_valid(std::string_view s);

/// Byte length of the UTF-8 character that starts with `lead` (1 for a stray byte).
inline size_t utf8_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xf0) return 4;
  if (lead >= 0xe0) return 3;
  if (lead >= 0xc0) return 2;
  return 1;
}

}  // namespace keel::tokenizer
