// Byte-level alphabet and the incremental lossy UTF-8 cleaner (see utf8.h).
#include "tokenizer/utf8.h"

#include <array>

namespace keel::tokenizer {
namespace {

// Bytes that GPT-2 keeps as themselves: printable Latin-1 except the soft hyphen.
bool kept_as_itself(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174); }

struct ByteLevelTables {
  std::array<uint32_t, 256> to_char{};
  std::array<int16_t, 512> to_byte{};  // code point -> byte, -1 when not in the alphabet
  ByteLevelTables() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      to_char[b] = kept_as_itself(b) ? uint32_t(b) : next++;
      to_byte[to_char[b]] = int16_t(b);
    }
  }
};

const ByteLevelTables& tables() {
  static const ByteLevelTables t;
  return t;
}

// Length of the valid prefix of a UTF-8 sequence at s[0..n) and whether it is
// complete: returns {consumed, status} with status 1 = complete character,
// 0 = valid but truncated by the end of input, -1 = invalid after `consumed`
// bytes (consumed >= 1: that many bytes form one replacement).
struct SeqState {
  size_t len;
  int status;
};

SeqState scan_sequence(const unsigned char* s, size_t n) {
  unsigned char c = s[0];
  if (c < 0x80) return {1, 1};
  size_t need;
  unsigned char lo = 0x80, hi = 0xbf;  // range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    need = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    need = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return {1, -1};
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= n) return {i, 0};
    unsigned char b = s[i];
    unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xbf;
    if (b < l || b > h) return {i, -1};
  }
  return {need, 1};
}

}  // namespace

uint32_t byte_level_char(uint8_t b) { return tables().to_char[b]; }

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xc0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += char(0xe0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  } else {
    out += char(0xf0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3f));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  }
}

std::optional<std::string> byte_level_to_bytes(std::string_view s) {
  const auto& t = tables();
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    SeqState st = scan_sequence(p + i, n - i);
    if (st.status != 1) return std::nullopt;
    uint32_t cp;
    switch (st.len) {
      case 1: cp = p[i]; break;
      case 2: cp = ((p[i] & 0x1fu) << 6) | (p[i + 1] & 0x3fu); break;
      default: return std::nullopt;  // every alphabet character is below U+0800
    }
    if (cp >= t.to_byte.size() || t.to_byte[cp] < 0) return std::nullopt;
    out += char(t.to_byte[cp]);
    i += st.len;
  }
  return out;
}

size_t utf8_clean(std::string_view in, std::string& out, bool final) {
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  size_t i = 0, n = in.size();
  while (i < n) {
    // Copy an ASCII run in one go.
    size_t j = i;
    while (j < n && p[j] < 0x80) ++j;
    if (j > i) {
      out.append(in.data() + i, j - i);
      i = j;
      if (i == n) break;
    }
    SeqState st = scan_sequence(p + i, n - i);
    if (st.status == 1) {
      out.append(in.data() + i, st.len);
    } else if (st.status == 0 && !final) {
      return i;
    } else {
      out += "\xef\xbf\xbd";
    }
    i += st.len;
  }
  return n;
}

bool utf8_valid(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    SeqState st = scan_sequence(p + i, n - i);
    if (st.status != 1) return false;
    i += st.len;
  }
  return true;
}

}  // namespace keel::tokenizer
