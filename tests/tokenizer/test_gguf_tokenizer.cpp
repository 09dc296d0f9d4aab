// Tokenizers read from GGUF metadata (tokenizer.ggml.*), on files written here:
// stories260K's SentencePiece-style vocabulary as llama.cpp stores it (token
// types, <0xNN> byte tokens, BOS added) must encode exactly as its Hugging Face
// folder does, both with the merges listed and with the merges derived from
// scores (what transformers does for files without merges); a byte-level
// vocabulary missing byte tokens drops those bytes as Hugging Face does; the
// chat template and its default system prompt come from tokenizer.chat_template.
// The real SmolLM2 GGUF is covered in tests/real_model.
//
// One known difference from the folder: stories260K's tokenizer.json is the
// legacy SentencePiece form (a Prepend normalizer), while transformers builds
// GGUF vocabularies with Metaspace(prepend_scheme "first"), which adds no "▁"
// to text that already starts with a space; keel follows transformers.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "model/gguf_writer.h"
#include "model/model_test_util.h"
#include "tokenizer/tokenizer.h"

namespace keel::tokenizer {
namespace {

using model::testing::GgufWriter;
using model::testing::TempDir;

const std::string kStories = std::string(KEEL_SHARED_DIR) + "/models/stories260K";

const char* const kTexts[] = {
    "Once upon a time, there was a little girl named Lily.",
    "numbers 12345 and punctuation!?",
    "unicode: café 😀 日本",
    "",
    "a",
};

std::string stories_as_gguf(const TempDir& dir, bool with_merges) {
  const auto tj = nlohmann::json::parse(read_text_file(kStories + "/tokenizer.json"));
  std::vector<std::string> tokens(tj["model"]["vocab"].size());
  for (auto it = tj["model"]["vocab"].begin(); it != tj["model"]["vocab"].end(); ++it)
    tokens[it.value().get<size_t>()] = it.key();
  std::vector<int32_t> types;
  std::vector<float> scores;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    types.push_back(i == 0 ? 2 : i < 3 ? 3 : (t.size() == 6 && t.rfind("<0x", 0) == 0) ? 6 : 1);
    scores.push_back(-float(i));  // SentencePiece BPE: earlier pieces were merged first
  }
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("tokenizer.ggml.model", "llama");
  w.add_strings("tokenizer.ggml.tokens", tokens);
  w.add_f32s("tokenizer.ggml.scores", scores);
  w.add_i32s("tokenizer.ggml.token_type", types);
  if (with_merges) {
    std::vector<std::string> merges;
    for (const auto& m : tj["model"]["merges"])
      merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
    w.add_strings("tokenizer.ggml.merges", merges);
  }
  w.add_u32("tokenizer.ggml.bos_token_id", 1);
  w.add_u32("tokenizer.ggml.eos_token_id", 2);
  w.add_u32("tokenizer.ggml.unknown_token_id", 0);
  return dir.write(with_merges ? "stories_merges.gguf" : "stories_scores.gguf", w.bytes());
}

TEST(GgufTokenizer, MetaspaceAddsNoPrefixBeforeALeadingSpace) {
  TempDir dir;
  const Tokenizer g = Tokenizer::load(stories_as_gguf(dir, true));
  const Tokenizer hf = Tokenizer::load(kStories);
  // "  two": "▁▁two" from the GGUF (as transformers), "▁▁▁two" from the legacy folder.
  auto a = g.encode("  two", false), b = hf.encode("  two", false);
  ASSERT_EQ(b.size(), a.size() + 1);
  EXPECT_EQ(std::vector<int32_t>(b.begin() + 1, b.end()), a);
}

TEST(GgufTokenizer, SentencePieceVocabularyEncodesAsTheHfFolder) {
  const Tokenizer hf = Tokenizer::load(kStories);
  TempDir dir;
  for (bool with_merges : {true, false}) {
    SCOPED_TRACE(with_merges ? "merges listed" : "merges derived from scores");
    const Tokenizer g = Tokenizer::load(stories_as_gguf(dir, with_merges));
    EXPECT_EQ(g.kind(), Kind::SentencePieceBpe);
    EXPECT_EQ(g.bos_id(), hf.bos_id());
    EXPECT_EQ(g.eos_ids(), hf.eos_ids());
    for (const char* text : kTexts) {
      EXPECT_EQ(g.encode(text, true), hf.encode(text, true)) << text;
      const auto ids = hf.encode(text, true);
      EXPECT_EQ(g.decode(ids, true), hf.decode(ids, true)) << text;
    }
  }
}

std::string byte_level_gguf(const TempDir& dir, const std::string& chat_template) {
  // A byte-level vocabulary of the printable bytes only: 'a'..'z', space as
  // 'Ġ', plus "ab" and two control tokens. Other bytes have no token.
  std::vector<std::string> tokens = {"<|im_start|>", "<|im_end|>"};
  for (char c = 'a'; c <= 'z'; ++c) tokens.push_back(std::string(1, c));
  tokens.push_back("\xc4\xa0");  // U+0120, the byte-level spelling of ' '
  tokens.push_back("ab");
  std::vector<int32_t> types(tokens.size(), 1);
  types[0] = types[1] = 3;
  GgufWriter w;
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "smollm");
  w.add_strings("tokenizer.ggml.tokens", tokens);
  w.add_i32s("tokenizer.ggml.token_type", types);
  w.add_strings("tokenizer.ggml.merges", {"a b"});
  w.add_u32("tokenizer.ggml.eos_token_id", 1);
  w.add_bool("tokenizer.ggml.add_bos_token", false);
  w.add_string("tokenizer.chat_template", chat_template);
  return dir.write("bytes.gguf", w.bytes());
}

TEST(GgufTokenizer, MissingByteTokensAreDroppedAsHuggingFaceDoes) {
  TempDir dir;
  const Tokenizer t = Tokenizer::load(byte_level_gguf(dir, ""));
  // '\x04' and '!' have no token: transformers drops them (BPE without unk).
  EXPECT_EQ(t.encode("ab\x04 c!", true), (std::vector<int32_t>{29, 28, 4}));
  EXPECT_EQ(t.encode("<|im_start|>ab<|im_end|>", true), (std::vector<int32_t>{0, 29, 1}));
  EXPECT_TRUE(t.is_special(1));
  EXPECT_EQ(t.eos_ids().front(), 1);
}

TEST(GgufTokenizer, ChatTemplateAndDefaultSystemPrompt) {
  TempDir dir;
  // SmolLM2's template, verbatim (a default system prompt when none is given).
  const std::string smol =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
      "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
      "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
      "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  const Tokenizer t = Tokenizer::load(byte_level_gguf(dir, smol));
  ASSERT_EQ(t.chat_format(), ChatFormat::ChatML);
  EXPECT_TRUE(t.has_chat_template()) << t.chat_template_error();  // rendered by the template itself
  EXPECT_EQ(t.render_chat({{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.render_chat({{"system", "Be terse."}, {"user", "Hi"}}, false),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  // A ChatML template that writes the system turn from a variable has no default.
  const Tokenizer q = Tokenizer::load(byte_level_gguf(
      dir, "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"));
  EXPECT_EQ(q.render_chat({{"user", "Hi"}}, false), "<|im_start|>user\nHi<|im_end|>\n");
}

}  // namespace
}  // namespace keel::tokenizer
