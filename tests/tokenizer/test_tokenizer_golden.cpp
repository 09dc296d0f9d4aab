// Golden tests: every encoding and decoding in fixtures/tokenizer_golden.json
// (Qwen3 via Hugging Face tokenizers, Llama-3 via tiktoken) and the stories260K
// encodings must be reproduced exactly; streaming decode must equal batch
// decode on all of them; vocab.json + merges.txt must give the same ids as
// Qwen3's tokenizer.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace keel::tokenizer {
namespace {

using testing::load_json;
using testing::shared_path;
using Ids = std::vector<int32_t>;

std::string stream_decode(const Tokenizer& tok, const Ids& ids, bool skip_special) {
  StreamDecoder dec(tok, skip_special);
  std::string out;
  for (int32_t id : ids) out += dec.push(id);
  return out + dec.flush();
}

void check_golden(const Tokenizer& tok, const char* family) {
  nlohmann::json g = load_json("fixtures/tokenizer_golden.json");
  ASSERT_TRUE(g.contains(family));
  ASSERT_GT(g[family].size(), 0u);
  for (const auto& c : g[family]) {
    std::string text = c["text"];
    Ids want = c["ids"].get<Ids>();
    std::string decoded = c["decoded"];
    SCOPED_TRACE(text);
    EXPECT_EQ(tok.encode(text, /*add_special=*/false), want);
    EXPECT_EQ(tok.decode(want, /*skip_special=*/false), decoded);
    EXPECT_EQ(stream_decode(tok, want, false), tok.decode(want, false));
    EXPECT_EQ(stream_decode(tok, want, true), tok.decode(want, true));
  }
}

TEST(TokenizerGolden, Qwen3) { check_golden(testing::qwen3(), "qwen3"); }

TEST(TokenizerGolden, Llama3) { check_golden(testing::llama3(), "llama3"); }

TEST(TokenizerGolden, Llama3PatternIsTheOneInTokenizerJson) {
  nlohmann::json g = load_json("fixtures/tokenizer_golden.json");
  nlohmann::json tj = load_json("models/llama3-tokenizer/tokenizer.json");
  EXPECT_EQ(tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"], g["llama3_pattern"]);
}

TEST(TokenizerGolden, Stories260K) {
  const Tokenizer& tok = testing::stories();
  nlohmann::json g = load_json("fixtures/stories260K/golden.json");
  size_t checked = 0;
  for (const auto& p : g["prompts"]) {
    std::string text = p["text"];
    Ids ids = p["ids"].get<Ids>();
    SCOPED_TRACE(text);
    EXPECT_EQ(tok.encode(text, /*add_special=*/true), ids);
    EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), text);
    EXPECT_EQ(stream_decode(tok, ids, true), tok.decode(ids, true));
    EXPECT_EQ(stream_decode(tok, ids, false), tok.decode(ids, false));
    Ids greedy = p["greedy"].get<Ids>();
    EXPECT_EQ(tok.decode(greedy, true), p["greedy_text"].get<std::string>());
    EXPECT_EQ(stream_decode(tok, greedy, true), p["greedy_text"].get<std::string>());
    for (const auto& [s, want] : p["encodings"].items()) {
      SCOPED_TRACE(s);
      Ids w = want.get<Ids>();
      EXPECT_EQ(tok.encode(s, true), w);
      EXPECT_EQ(stream_decode(tok, w, true), tok.decode(w, true));
      EXPECT_EQ(stream_decode(tok, w, false), tok.decode(w, false));
      ++checked;
    }
  }
  EXPECT_GT(checked, 0u);
}

TEST(TokenizerGolden, Stories260KDecodesByteFallbackBackToText) {
  // "ünïcödé" needs byte-fallback tokens (<0xC3><0xBC> ...): decoding must
  // reassemble the characters, and streaming must hold back the first byte.
  const Tokenizer& tok = testing::stories();
  std::string text = "ünïcödé";
  Ids ids = tok.encode(text, false);
  EXPECT_EQ(tok.decode(ids), text);
  StreamDecoder dec(tok);
  bool held_back = false;
  std::string out;
  for (int32_t id : ids) {
    std::string piece = dec.push(id);
    if (piece.empty()) held_back = true;
    out += piece;
  }
  EXPECT_TRUE(held_back);
  EXPECT_EQ(out + dec.flush(), text);
}

// vocab.json + merges.txt (+ tokenizer_config.json) only: must behave like tokenizer.json.
TEST(TokenizerGolden, VocabAndMergesMatchTokenizerJson) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("keel_tok_vm_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json"})
    fs::create_symlink(shared_path(std::string("models/qwen3-tokenizer/") + f), dir / f);
  Tokenizer vm = Tokenizer::load(dir.string());
  fs::remove_all(dir);

  const Tokenizer& tj = testing::qwen3();
  EXPECT_EQ(vm.kind(), Kind::ByteLevelBpe);
  EXPECT_EQ(vm.vocab_size(), tj.vocab_size());
  EXPECT_EQ(vm.eos_ids(), tj.eos_ids());
  EXPECT_EQ(vm.bos_id(), tj.bos_id());
  EXPECT_EQ(vm.chat_format(), tj.chat_format());
  nlohmann::json g = load_json("fixtures/tokenizer_golden.json");
  std::string all;
  for (const auto& c : g["qwen3"]) {
    std::string text = c["text"];
    all += text;
    SCOPED_TRACE(text);
    EXPECT_EQ(vm.encode(text, false), c["ids"].get<Ids>());
    EXPECT_EQ(vm.encode(text, true), tj.encode(text, true));
  }
  EXPECT_EQ(vm.encode(all), tj.encode(all));
  EXPECT_EQ(vm.decode(tj.encode(all)), all);
}

}  // namespace
}  // namespace keel::tokenizer
