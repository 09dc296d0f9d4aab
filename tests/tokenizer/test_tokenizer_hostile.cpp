// Tokenizer files written by a hostile user (issue 16): components nested
// 50,000 levels deep, token ids that are fractions, exponents or beyond 32
// bits, an id of 2^31 - 1 in a tiny file, keys of added_tokens_decoder that are
// not numbers, and a tokenizer.json that is a directory. Each gives a one-line
// keel::Error naming the file and field, or the right result; none crashes,
// truncates an id or allocates gigabytes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace keel::tokenizer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / ("keel_tokh_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path_ / name) << text; }

 private:
  fs::path path_;
};

/// A small SentencePiece-style tokenizer.json: pieces a, b, ab and <unk>, a
/// template adding <s> (id 4).
json small_tokenizer() {
  return json::parse(R"({
    "added_tokens": [{"id": 4, "content": "<s>", "special": true}],
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [4], "tokens": ["<s>"]}}},
    "decoder": null,
    "model": {"type": "BPE", "unk_token": "<unk>",
      "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3}, "merges": ["a b"]}})");
}

std::string error_of(const TempDir& d) {
  try {
    Tokenizer::load(d.path());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string error_of(const json& tokenizer_json) {
  TempDir d;
  d.write("tokenizer.json", tokenizer_json.dump());
  return error_of(d);
}

TEST(TokenizerHostile, SmallTokenizerWorks) {
  TempDir d;
  d.write("tokenizer.json", small_tokenizer().dump());
  Tokenizer t = Tokenizer::load(d.path());
  EXPECT_EQ(t.encode("ab", true), (std::vector<int32_t>{4, 3}));
}

// Each component nested 50,000 levels deep (about 200 KB): this overflowed
// the stack (recursive type walk, deep copies); under ASan 10,000 levels did.
TEST(TokenizerHostile, DeeplyNestedComponentsAreRefused) {
  const size_t depth = 50000;
  const std::string text = small_tokenizer().dump();
  struct Case { const char* field; const char* list; };
  for (const Case& c : {Case{"decoder", "decoders"}, Case{"normalizer", "normalizers"},
                        Case{"pre_tokenizer", "pretokenizers"}, Case{"post_processor", "processors"}}) {
    std::string nested;
    nested.reserve(depth * 40);
    for (size_t i = 0; i < depth; ++i) nested += std::string(R"({"type":"Sequence",")") + c.list + "\":[";
    nested += std::string(R"({"type":"Sequence",")") + c.list + "\":[]}";
    for (size_t i = 0; i < depth; ++i) nested += "]}";
    json j = small_tokenizer();
    j.erase(c.field);
    std::string doc = j.dump();
    nested.insert(0, std::string(1, '"').append(c.field).append("\":"));
    doc.insert(1, nested.append(","));
    TempDir d;
    d.write("tokenizer.json", doc);
    std::string e = error_of(d);
    EXPECT_NE(e.find(d.file("tokenizer.json")), std::string::npos) << c.field << ": " << e.substr(0, 300);
    EXPECT_NE(e.find("nested deeper than"), std::string::npos) << c.field << ": " << e.substr(0, 300);
  }
  // tokenizer_config.json too.
  TempDir d;
  d.write("tokenizer.json", text);
  d.write("tokenizer_config.json", "{\"chat_template\":" + std::string(depth, '[') + std::string(depth, ']') + "}");
  EXPECT_NE(error_of(d).find("tokenizer_config.json: JSON nested deeper than"), std::string::npos) << error_of(d);
}

// Ids beyond 32 bits were truncated (a BOS id of 2^40 became 0, so every
// prompt started with <unk>); 3.7 became 3; 1e21 was undefined behaviour.
TEST(TokenizerHostile, TokenIdsAreIntegersNeverTruncated) {
  for (const char* bad : {"1099511627776", "3.7", "1e21", "-1", "\"4\"", "2147483648"}) {
    json j = small_tokenizer();
    j["post_processor"]["special_tokens"]["<s>"]["ids"] = json::parse(std::string("[") + bad + "]");
    std::string e = error_of(j);
    EXPECT_NE(e.find("post_processor.special_tokens[\"<s>\"].ids[0]"), std::string::npos) << bad << ": " << e;

    j = small_tokenizer();
    j["model"]["vocab"]["ab"] = json::parse(bad);
    e = error_of(j);
    EXPECT_NE(e.find("model.vocab[\"ab\"]"), std::string::npos) << bad << ": " << e;

    j = small_tokenizer();
    j["added_tokens"][0]["id"] = json::parse(bad);
    e = error_of(j);
    EXPECT_NE(e.find("added_tokens[0].id"), std::string::npos) << bad << ": " << e;
  }
}

// One id of 2^31 - 1 in a file of a few hundred bytes allocated 64 GiB
// (bad_alloc): the id tables may not outgrow what the file holds.
TEST(TokenizerHostile, HugeIdDoesNotAllocateTheRange) {
  json j = small_tokenizer();
  j["model"]["vocab"]["ab"] = 2147483647;
  std::string e = error_of(j);
  EXPECT_NE(e.find("model.vocab"), std::string::npos) << e;
  EXPECT_NE(e.find("2147483647"), std::string::npos) << e;

  j = small_tokenizer();
  j["added_tokens"][0]["id"] = 2147483647;
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {2147483647};
  e = error_of(j);
  EXPECT_NE(e.find("added token id 2147483647"), std::string::npos) << e;

  TempDir d;
  d.write("tokenizer.json", small_tokenizer().dump());
  d.write("tokenizer_config.json", R"({"added_tokens_decoder": {"2147483647": {"content": "<x>", "special": true}}})");
  e = error_of(d);
  EXPECT_NE(e.find("2147483647"), std::string::npos) << e;

  // A few unused ids are fine (real vocabularies have holes).
  j = small_tokenizer();
  j["model"]["vocab"]["ab"] = 1000;
  TempDir ok;
  ok.write("tokenizer.json", j.dump());
  EXPECT_EQ(Tokenizer::load(ok.path()).encode("ab", false), (std::vector<int32_t>{1000}));
}

// A 100 KB piece with a bad id is named by its first 64 bytes, not echoed whole.
TEST(TokenizerHostile, LongPiecesAreClippedInErrors) {
  json j = small_tokenizer();
  j["model"]["vocab"][std::string(100000, 'x')] = 1.5;
  const std::string e = error_of(j);
  EXPECT_NE(e.find(std::string(64, 'x') + "... (100000 bytes)"), std::string::npos) << e.substr(0, 300);
  EXPECT_LT(e.size(), 400u);
}

// A key that is not a number was reported as "added_tokens_decoder: stoi".
TEST(TokenizerHostile, AddedTokensDecoderKeysAreNamed) {
  for (const char* key : {"abc", "12x", "-5", "99999999999", ""}) {
    TempDir d;
    d.write("tokenizer.json", small_tokenizer().dump());
    d.write("tokenizer_config.json", json{{"added_tokens_decoder", {{key, {{"content", "<x>"}}}}}}.dump());
    std::string e = error_of(d);
    EXPECT_NE(e.find("tokenizer_config.json: added_tokens_decoder: key \"" + std::string(key) + "\""),
              std::string::npos)
        << key << ": " << e;
  }
  TempDir d;
  d.write("tokenizer.json", small_tokenizer().dump());
  d.write("tokenizer_config.json", R"({"added_tokens_decoder": {"5": {"content": "<x>", "special": true}}})");
  EXPECT_EQ(Tokenizer::load(d.path()).token_id("<x>"), 5);
}

// A tokenizer.json that is a directory was reported as missing.
TEST(TokenizerHostile, DirectoryInPlaceOfAFileIsNamed) {
  TempDir d;
  fs::create_directories(d.file("tokenizer.json"));
  EXPECT_EQ(error_of(d), d.file("tokenizer.json") + ": is a directory, not a regular file");
}

}  // namespace
}  // namespace keel::tokenizer
