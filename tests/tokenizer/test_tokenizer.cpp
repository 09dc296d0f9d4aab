// Behaviour tests for keel::tokenizer beyond the goldens: special tokens inside
// text, BOS/EOS rules, chat rendering per format, streaming decode edge cases,
// loading errors, and a tokenizer built from a hand-written tokenizer.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <unistd.h>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_fixtures.h"

namespace keel::tokenizer {
namespace {

using Ids = std::vector<int32_t>;
namespace fs = std::filesystem;

// A scratch folder removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / ("keel_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string path() const { return path_.string(); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path_ / name) << text; }
  void link(const std::string& name, const std::string& target) const { fs::create_symlink(target, path_ / name); }

 private:
  fs::path path_;
};

std::string error_of(const std::string& dir) {
  try {
    Tokenizer::load(dir);
  } catch (const keel::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Tokenizer, KindsAndSizes) {
  EXPECT_EQ(testing::qwen3().kind(), Kind::ByteLevelBpe);
  EXPECT_EQ(testing::qwen3().vocab_size(), 151669);
  EXPECT_EQ(testing::llama3().kind(), Kind::ByteLevelBpe);
  EXPECT_EQ(testing::llama3().vocab_size(), 128256);
  EXPECT_EQ(testing::stories().kind(), Kind::SentencePieceBpe);
  EXPECT_EQ(testing::stories().vocab_size(), 512);
  EXPECT_EQ(testing::stories().kind_name(), "SentencePiece BPE");
}

TEST(Tokenizer, SpecialIds) {
  const Tokenizer& q = testing::qwen3();
  EXPECT_EQ(q.bos_id(), std::nullopt);
  EXPECT_EQ(q.eos_ids(), (Ids{151645, 151643}));  // <|im_end|> (config), <|endoftext|>
  EXPECT_EQ(q.token_id("<|im_start|>"), 151644);
  EXPECT_EQ(q.token_id("Hello"), 9707);
  EXPECT_EQ(q.token_id("Ġworld"), 1879);
  EXPECT_EQ(q.token_id("no-such-token-xyz"), std::nullopt);
  EXPECT_EQ(q.token_text(1879), "Ġworld");
  EXPECT_TRUE(q.is_special(151644));
  EXPECT_FALSE(q.is_special(1879));
  EXPECT_THROW(q.token_text(-1), keel::Error);
  EXPECT_THROW(q.token_text(151669), keel::Error);

  const Tokenizer& l = testing::llama3();
  EXPECT_EQ(l.bos_id(), 128000);
  EXPECT_EQ(l.eos_ids(), (Ids{128001, 128009}));  // <|end_of_text|> (config), <|eot_id|>

  const Tokenizer& s = testing::stories();
  EXPECT_EQ(s.bos_id(), 1);
  EXPECT_EQ(s.eos_ids(), (Ids{2}));
  EXPECT_EQ(s.token_text(3), "<0x00>");
}

TEST(Tokenizer, AddSpecialFollowsTemplateAndConfig) {
  EXPECT_EQ(testing::qwen3().encode("Hello world", true), (Ids{9707, 1879}));      // add_bos_token false
  EXPECT_EQ(testing::llama3().encode("Hello world", true), (Ids{128000, 9906, 1917}));  // BOS named, no template
  EXPECT_EQ(testing::stories().encode("Hello world", false), (Ids{346, 306, 414, 263, 304, 341}));
  EXPECT_EQ(testing::qwen3().encode("", true), Ids{});
  EXPECT_EQ(testing::llama3().encode("", true), Ids{128000});
}

TEST(Tokenizer, SpecialTokensInsideText) {
  const Tokenizer& q = testing::qwen3();
  Ids hello = q.encode("Hello", false), world = q.encode(" world", false);
  Ids ids = q.encode("Hello<|im_end|> world<think>x", false);
  Ids want = hello;
  want.push_back(151645);
  want.insert(want.end(), world.begin(), world.end());
  want.push_back(151667);
  Ids x = q.encode("x", false);
  want.insert(want.end(), x.begin(), x.end());
  EXPECT_EQ(ids, want);
  EXPECT_EQ(q.decode(ids), "Hello<|im_end|> world<think>x");
  EXPECT_EQ(q.decode(ids, /*skip_special=*/true), "Hello world" "x");
  // A partial special token is ordinary text.
  Ids partial = q.encode("<|im_en", false);
  EXPECT_EQ(q.decode(partial), "<|im_en");
  EXPECT_EQ(std::count(partial.begin(), partial.end(), 151645), 0);

  // Llama-3's specials come from tokenizer_config.json's added_tokens_decoder.
  const Tokenizer& l = testing::llama3();
  Ids lids = l.encode("a<|eot_id|><|start_header_id|>b", false);
  EXPECT_EQ(lids, (Ids{64, 128009, 128006, 65}));

  // SentencePiece: each plain segment between special tokens gets its own "▁".
  const Tokenizer& s = testing::stories();
  Ids sids = s.encode("Hello</s>world", false);
  Ids a = s.encode("Hello", false), b = s.encode("world", false);
  Ids swant = a;
  swant.push_back(2);
  swant.insert(swant.end(), b.begin(), b.end());
  EXPECT_EQ(sids, swant);
}

TEST(Tokenizer, StreamingHoldsBackPartialCharacters) {
  const Tokenizer& q = testing::qwen3();
  // Byte-level tokens of an emoji split the 4-byte character across tokens.
  std::string text = "ZWJ 👨‍👩‍👧 😀 done";
  Ids ids = q.encode(text, false);
  StreamDecoder dec(q);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = dec.push(id);
    // Every piece on its own is valid UTF-8: re-decoding it changes nothing.
    Ids again = q.encode(piece, false);
    EXPECT_EQ(q.decode(again), piece);
    out += piece;
  }
  EXPECT_EQ(out + dec.flush(), text);
}

TEST(Tokenizer, DecodeReplacesInvalidUtf8) {
  const Tokenizer& q = testing::qwen3();
  // "ð" is byte 0xF0 in the byte-level alphabet: the lead byte of a 4-byte
  // character that never completes.
  std::optional<int32_t> lead = q.token_id("ð");
  ASSERT_TRUE(lead.has_value());
  EXPECT_EQ(q.decode({*lead}), "\xef\xbf\xbd");
  EXPECT_EQ(q.decode({*lead, 9707}), "\xef\xbf\xbdHello");
  StreamDecoder dec(q);
  EXPECT_EQ(dec.push(*lead), "");
  EXPECT_EQ(dec.push(9707), "\xef\xbf\xbdHello");
  EXPECT_EQ(dec.push(*lead), "");
  EXPECT_EQ(dec.flush(), "\xef\xbf\xbd");
  // Unknown ids decode to nothing.
  EXPECT_EQ(q.decode({9707, 999999, -5, 1879}), "Hello world");
}

TEST(Tokenizer, EncodeAcceptsInvalidUtf8) {
  const Tokenizer& q = testing::qwen3();
  Ids ids = q.encode(std::string("ab\xff" "cd"), false);
  EXPECT_EQ(q.decode(ids), "ab\xef\xbf\xbd" "cd");
}

TEST(Tokenizer, ChatML) {
  const Tokenizer& q = testing::qwen3();
  ASSERT_EQ(q.chat_format(), ChatFormat::ChatML);
  std::vector<ChatMessage> msgs{{"system", "Be brief."}, {"user", "hi"}};
  EXPECT_EQ(q.render_chat(msgs, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(q.render_chat({{"user", "hi"}}, false), "<|im_start|>user\nhi<|im_end|>\n");
  EXPECT_EQ(q.encode(q.render_chat({{"user", "hi"}}, true), false),
            (Ids{151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198}));
}

TEST(Tokenizer, Llama3Chat) {
  const Tokenizer& l = testing::llama3();
  ASSERT_EQ(l.chat_format(), ChatFormat::Llama3);
  std::vector<ChatMessage> msgs{{"system", "Be brief."}, {"user", " hi \n"}};
  std::string text = l.render_chat(msgs, true);
  EXPECT_EQ(text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  Ids ids = l.encode(text, false);
  EXPECT_EQ(ids.front(), 128000);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128000), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128009), 2);
  EXPECT_EQ(l.decode(ids), text);
}

TEST(Tokenizer, NoChatFormat) {
  const Tokenizer& s = testing::stories();
  EXPECT_EQ(s.chat_format(), ChatFormat::None);
  EXPECT_EQ(s.render_chat({{"user", "Once upon"}, {"assistant", " a time"}}, true), "Once upon a time");
}

TEST(TokenizerErrors, MissingFiles) {
  TempDir d;
  std::string e = error_of(d.path());
  EXPECT_NE(e.find(d.path()), std::string::npos) << e;
  EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
  // vocab.json alone is not enough.
  d.link("vocab.json", testing::shared_path("models/qwen3-tokenizer/vocab.json"));
  EXPECT_NE(error_of(d.path()).find("merges.txt"), std::string::npos);
  EXPECT_NE(error_of(d.path() + "/does-not-exist").find("does-not-exist"), std::string::npos);
}

TEST(TokenizerErrors, BadJson) {
  TempDir d;
  d.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", ");
  std::string e = error_of(d.path());
  EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
  EXPECT_NE(e.find("invalid JSON"), std::string::npos) << e;

  TempDir c;
  c.link("tokenizer.json", testing::shared_path("models/stories260K/tokenizer.json"));
  c.write("tokenizer_config.json", "[1, 2");
  e = error_of(c.path());
  EXPECT_NE(e.find("tokenizer_config.json"), std::string::npos) << e;
}

TEST(TokenizerErrors, UnsupportedModelTypes) {
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    TempDir d;
    d.write("tokenizer.json", std::string(R"({"model": {"type": ")") + type + R"(", "vocab": {"a": 0}}})");
    std::string e = error_of(d.path());
    EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
    EXPECT_NE(e.find("model.type"), std::string::npos) << e;
    EXPECT_NE(e.find(type), std::string::npos) << e;
  }
}

TEST(TokenizerErrors, BadFields) {
  TempDir d;
  d.write("tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})");
  std::string e = error_of(d.path());
  EXPECT_NE(e.find("merge 0"), std::string::npos) << e;

  TempDir n;
  n.write("tokenizer.json",
          R"({"normalizer": {"type": "Precompiled"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  e = error_of(n.path());
  EXPECT_NE(e.find("normalizer"), std::string::npos) << e;
  EXPECT_NE(e.find("Precompiled"), std::string::npos) << e;

  TempDir m;
  m.write("tokenizer.json", R"({"model": {"type": "BPE", "merges": []}})");
  e = error_of(m.path());
  EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
  EXPECT_NE(e.find("vocab"), std::string::npos) << e;
}

// A hand-written SentencePiece-style tokenizer: Metaspace pre-tokenizer,
// merges as [a, b] pairs, byte fallback, fuse_unk, added tokens with lstrip/rstrip.
// A hand-written byte-level tokenizer: GPT-2 style ByteLevel pre-tokenizer
// with its own regex, ignore_merges, and a template adding BOS and EOS.
nlohmann::json byte_level_tokenizer(bool ignore_merges) {
  nlohmann::json vocab = nlohmann::json::object();
  auto piece = [](std::string_view bytes) {
    std::string s;
    for (unsigned char b : bytes) append_utf8(s, byte_level_char(b));
    return s;
  };
  for (int b = 0; b < 256; ++b) vocab[piece(std::string(1, char(b)))] = b;
  vocab[piece(" a")] = 256;
  vocab[piece(" ab")] = 257;
  vocab[piece("ab")] = 258;
  return {
      {"added_tokens",
       {{{"id", 259}, {"content", "<s>"}, {"special", true}},
        {{"id", 260}, {"content", "</s>"}, {"special", true}},
        {{"id", 261}, {"content", "zz"}, {"special", false}, {"normalized", false}, {"single_word", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}, {{"SpecialToken", {{"id", "</s>"}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {259}}}}, {"</s>", {{"id", "</s>"}, {"ids", {260}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"ignore_merges", ignore_merges},
        {"vocab", vocab},
        {"merges", {piece(" ") + " a", piece(" a") + " b"}}}}};
}

TEST(Tokenizer, HandWrittenByteLevelTokenizer) {
  for (bool ignore_merges : {false, true}) {
    TempDir d;
    d.write("tokenizer.json", byte_level_tokenizer(ignore_merges).dump());
    Tokenizer t = Tokenizer::load(d.path());
    SCOPED_TRACE(ignore_merges);
    EXPECT_EQ(t.kind(), Kind::ByteLevelBpe);
    // "ab" has no merge path (no "a b" merge) but is in the vocab as a whole.
    Ids ab = ignore_merges ? Ids{258} : Ids{'a', 'b'};
    Ids want = {259};
    want.insert(want.end(), ab.begin(), ab.end());
    want.insert(want.end(), {257, 256, 260});
    EXPECT_EQ(t.encode("ab ab a", true), want);
    EXPECT_EQ(t.decode(want), "<s>ab ab a</s>");
    EXPECT_EQ(t.decode(want, true), "ab ab a");
    EXPECT_EQ(t.bos_id(), 259);
    EXPECT_TRUE(t.is_special(260));
    // single_word: "zz" is the added token only when not glued to a word.
    EXPECT_EQ(t.encode("zz a", false), (Ids{261, 256}));
    EXPECT_EQ(t.encode("azz", false), (Ids{'a', 'z', 'z'}));
    EXPECT_FALSE(t.is_special(261));
    EXPECT_EQ(t.decode({261}, /*skip_special=*/true), "zz");
  }
}

// A template id outside the vocabulary is a load error naming the field (it
// used to load, then became the BOS id and indexed past the piece table).
TEST(TokenizerErrors, TemplateIdOutsideVocab) {
  TempDir d;
  nlohmann::json j = byte_level_tokenizer(false);
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {99999};
  d.write("tokenizer.json", j.dump());
  std::string e = error_of(d.path());
  EXPECT_NE(e.find("post_processor"), std::string::npos) << e;
  EXPECT_NE(e.find("99999"), std::string::npos) << e;
}

// A normalized added token is matched on normalized text, and its content is
// normalized too (here it gains the SentencePiece "▁"), as in Hugging Face.
TEST(Tokenizer, NormalizedAddedToken) {
  TempDir d;
  d.write("tokenizer.json", R"({
    "added_tokens": [{"id": 6, "content": "foo", "special": false, "normalized": true}],
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": null,
    "decoder": null,
    "model": {"type": "BPE", "unk_token": "<unk>",
      "vocab": {"<unk>": 0, "▁": 1, "a": 2, "f": 3, "o": 4, "▁a": 5},
      "merges": ["▁ a"]}})");
  Tokenizer t = Tokenizer::load(d.path());
  EXPECT_EQ(t.encode("a foo", false), (Ids{5, 6}));
  EXPECT_EQ(t.encode("afoo", false), (Ids{5, 3, 4, 4}));
}

TEST(Tokenizer, HandWrittenMetaspaceTokenizer) {
  TempDir d;
  d.write("tokenizer.json", R"({
    "added_tokens": [
      {"id": 0, "content": "<unk>", "special": true, "lstrip": false, "rstrip": false, "normalized": false, "single_word": false},
      {"id": 9, "content": "[M]", "special": true, "lstrip": true, "rstrip": true, "normalized": false, "single_word": false}],
    "normalizer": null,
    "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
    "post_processor": null,
    "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
    "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": false,
      "vocab": {"<unk>": 0, "▁": 1, "a": 2, "b": 3, "▁a": 4, "▁ab": 5, "ab": 6, "[M]": 9},
      "merges": [["▁", "a"], ["▁a", "b"], ["a", "b"]]}})");
  Tokenizer t = Tokenizer::load(d.path());
  EXPECT_EQ(t.kind(), Kind::SentencePieceBpe);
  EXPECT_EQ(t.encode("ab ab", true), (Ids{5, 5}));
  EXPECT_EQ(t.encode("abxyab", true), (Ids{5, 0, 6}));  // "xy" fuses into one <unk>
  EXPECT_EQ(t.encode("ab  [M]  ab", true), (Ids{5, 9, 6}));  // lstrip/rstrip eat the spaces
  EXPECT_EQ(t.decode({5, 5}), "ab ab");
  EXPECT_EQ(t.bos_id(), std::nullopt);
  EXPECT_EQ(t.vocab_size(), 10);
}

}  // namespace
}  // namespace keel::tokenizer

namespace keel::tokenizer {
namespace {

TEST(Tokenizer, ConcurrentEncodeAgrees) {
  // encode() is const and shared between threads: the word cache is taken by
  // at most one caller at a time, the others run uncached.
  const Tokenizer& q = testing::qwen3();
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Thread " + std::to_string(i) + " says 你好, café 😀 and x += " + std::to_string(i * 7) + ";\n";
  Ids want = q.encode(text);
  std::vector<Ids> got(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) got[t] = q.encode(text);
    });
  for (auto& th : threads) th.join();
  for (const Ids& g : got) EXPECT_EQ(g, want);
}

TEST(Tokenizer, LongInputs) {
  // Long runs stress the regex JIT stack (whitespace lookahead) and, for
  // SentencePiece (no pre-tokenizer: the whole text is one word), the
  // O(n log n) merge loop.
  const Tokenizer& q = testing::qwen3();
  std::string spaces(200000, ' ');
  EXPECT_EQ(q.decode(q.encode(spaces + "x" + spaces)), spaces + "x" + spaces);
  const Tokenizer& s = testing::stories();
  std::string story;
  while (story.size() < 300000) story += "Once upon a time, there was a little girl named Lily. ";
  Ids ids = s.encode(story, false);
  EXPECT_EQ(s.decode(ids), story);
  EXPECT_LT(ids.size(), story.size() / 2);
}

}  // namespace
}  // namespace keel::tokenizer

namespace keel::tokenizer {
namespace {

// Random strings over a pool of ASCII, whitespace runs, accented letters
// (already NFC), CJK, emoji and ZWJ: encode then decode must give the text
// back exactly (Qwen3/Llama-3: byte-level; stories260K: byte fallback, with
// the prepended "▁" stripped again), and streaming must agree with decode.
TEST(Tokenizer, RandomRoundTrips) {
  const std::vector<std::string> pool = {"a", "b", "Z", "0", "7", " ", "  ", "\n", "\t", "\r\n", "'s", ",", ".",
                                         "!", "#", "é", "ü", "ß", "中", "文", "日本", "😀", "👍🏽", "\u200d",
                                         "Ω", "й", "ع", "—", "x", "the", " of", "{", "}"};
  std::mt19937 rng(42);
  for (const Tokenizer* tok : {&testing::qwen3(), &testing::llama3(), &testing::stories()}) {
    for (int trial = 0; trial < 400; ++trial) {
      std::string s;
      size_t n = 1 + rng() % 24;
      for (size_t i = 0; i < n; ++i) s += pool[rng() % pool.size()];
      Ids ids = tok->encode(s, false);
      ASSERT_EQ(tok->decode(ids), s) << tok->kind_name();
      StreamDecoder dec(*tok, false);
      std::string streamed;
      for (int32_t id : ids) streamed += dec.push(id);
      ASSERT_EQ(streamed + dec.flush(), s) << tok->kind_name();
    }
  }
}

}  // namespace
}  // namespace keel::tokenizer
