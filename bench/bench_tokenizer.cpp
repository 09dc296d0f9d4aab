// Tokenizer encode throughput: the Qwen3 tokenizer (byte-level BPE, NFC, the
// Qwen2 split regex) on 1 MB of mixed text — English prose, code, CJK, emoji,
// numbers — built here by repeating a fixed set of snippets. Reports bytes/s
// (MB/s) through SetBytesProcessed, and bytes per token as a counter. The
// BPE word cache is warm after the first iteration, as it is in a server
// that has been running a while; BM_EncodeRandomWords1MB encodes made-up
// words that rarely repeat, to show the rate when most words miss the cache.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

using keel::tokenizer::Tokenizer;

const Tokenizer& qwen3() {
  static const Tokenizer t = Tokenizer::load(std::string(KEEL_SHARED_DIR) + "/models/qwen3-tokenizer");
  return t;
}

const std::vector<std::string>& snippets() {
  static const std::vector<std::string> s = {
      "Once upon a time, in a quiet village by the sea, there lived an old fisherman who told stories "
      "to anyone who would listen. ",
      "The committee's report, published on 12 March 2024, found that 73.4% of respondents preferred "
      "the new schedule; only 1,204 of 18,950 objected. ",
      "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n",
      "for (size_t i = 0; i < n; ++i) {\n  sum += a[i] * b[i];  // dot product\n}\n",
      "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。東京は日本の首都です。",
      "Emoji time 😀🎉👍🏽 and families 👨‍👩‍👧 in the middle of text 🚀✨. ",
      "Ünïcödé façade naïve café — “quotes” and ‘single’ … ",
      "3.14159 2.71828 1234567890 0xDEADBEEF 42 1e-9 ",
      "Привет, мир! Γειά σου κόσμε! مرحبا بالعالم ",
      "    indented line\twith\ttabs\r\n\n",
  };
  return s;
}

std::string mixed_text(size_t bytes) {
  std::string text;
  for (size_t i = 0; text.size() < bytes; ++i) text += snippets()[i % snippets().size()];
  text.resize(bytes);
  // Cutting at a byte count may split a character; drop the partial tail.
  while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xc0) == 0x80) text.pop_back();
  if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xc0) text.pop_back();
  return text;
}

void BM_EncodeMixed1MB(benchmark::State& state) {
  const Tokenizer& tok = qwen3();
  std::string text = mixed_text(1 << 20);
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = tok.encode(text, false);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["tokens"] = double(tokens);
  state.counters["bytes/token"] = double(text.size()) / double(tokens);
}
BENCHMARK(BM_EncodeMixed1MB)->Unit(benchmark::kMillisecond);

// About 1 MB of random syllable words and numbers: most words are new.
std::string random_words(size_t bytes) {
  static const char* const syllables[] = {"ka", "lo", "mi", "tran", "ster", "qu", "ix", "pho", "zen", "dra",
                                          "ul", "bre", "ost", "nym", "vek", "ha", "scri", "ju", "er", "on"};
  std::mt19937 rng(7);
  std::string text;
  while (text.size() < bytes) {
    int n = 1 + int(rng() % 4);
    for (int i = 0; i < n; ++i) text += syllables[rng() % 20];
    if (rng() % 9 == 0) {
      text += ", ";
    } else if (rng() % 13 == 0) {
      text += ' ';
      text += std::to_string(rng() % 100000);
      text += ' ';
    } else {
      text += ' ';
    }
  }
  text.resize(bytes);
  return text;
}

void BM_EncodeRandomWords1MB(benchmark::State& state) {
  const Tokenizer& tok = qwen3();
  std::string text = random_words(1 << 20);
  for (auto _ : state) {
    auto ids = tok.encode(text, false);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_EncodeRandomWords1MB)->Unit(benchmark::kMillisecond);

void BM_DecodeMixed1MB(benchmark::State& state) {
  const Tokenizer& tok = qwen3();
  std::string text = mixed_text(1 << 20);
  auto ids = tok.encode(text, false);
  for (auto _ : state) {
    std::string out = tok.decode(ids);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_DecodeMixed1MB)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
