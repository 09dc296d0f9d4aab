// The normalizer's fast path (runs of "inert" characters skip utf8proc) must
// give exactly utf8proc's result on the whole string, for every form, on text
// mixing ASCII, combining marks, Hangul jamo, singletons, CJK and emoji.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include <nlohmann/json.hpp>
#include <utf8proc.h>

#include "tokenizer/pipeline.h"
#include "tokenizer/utf8.h"

namespace keel::tokenizer {
namespace {

std::string reference(const std::string& s, utf8proc_option_t opts) {
  utf8proc_uint8_t* dst = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()), &dst, opts);
  EXPECT_GE(n, 0);
  std::string out(reinterpret_cast<const char*>(dst), size_t(n));
  std::free(dst);
  return out;
}

TEST(Normalizer, FastPathMatchesUtf8proc) {
  // Code points chosen to exercise every path: ASCII bases, combining marks
  // (reordering and composition), precomposed letters that can compose
  // further, Hangul L/V/T jamo and syllables, singletons (U+212B, U+037E),
  // compatibility characters (U+FB01, U+2460, full-width A), Tibetan, CJK,
  // CJK compatibility ideographs, kana with voicing marks, emoji + ZWJ.
  const std::vector<uint32_t> pool = {
      'a', 'e', 'A', 'o', 'u', ' ', '1', 0x301, 0x300, 0x308, 0x323, 0x302, 0x327, 0x30c, 0xe9, 0xfc, 0xdc, 0xea,
      0x1ebf, 0x1100, 0x1161, 0x11a8, 0xac00, 0xac01, 0xd55c, 0x212b, 0x37e, 0x387, 0xfb01, 0x2460, 0xff21,
      0xf90, 0xfb5, 0xf71, 0xf72, 0x4e2d, 0x6587, 0xf900, 0x304b, 0x3099, 0x309a, 0x30cf, 0x1f600, 0x200d,
      0x1f468, 0x1f3fd, 0x43, 0x327, 0x41f, 0x438, 0x306, 0x3b1, 0x301, 0x345, 0x5d0, 0x5b4, 0x915, 0x93c};
  std::mt19937 rng(1234);
  const std::vector<std::pair<const char*, utf8proc_option_t>> forms = {
      {"NFC", utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE)},
      {"NFKC", utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT)},
      {"NFD", utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE)},
      {"NFKD", utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT)}};
  for (const auto& [name, opts] : forms) {
    Normalizer n = Normalizer::from_json(nlohmann::json{{"type", name}}, "test");
    for (int trial = 0; trial < 3000; ++trial) {
      std::string s;
      size_t len = 1 + rng() % 12;
      for (size_t i = 0; i < len; ++i) append_utf8(s, pool[rng() % pool.size()]);
      ASSERT_EQ(n.apply(s), reference(s, opts)) << name << " of " << s;
    }
  }
}

}  // namespace
}  // namespace keel::tokenizer
