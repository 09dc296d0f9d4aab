// Runs the keel binary as a user would and checks what it prints: --help on
// every command, clear errors and non-zero exits on bad flags or bad input, the
// golden greedy tokens through `generate --json`, `score` against the golden
// prefill logits, tokenization of a tokenizer-only folder, and the Lily story.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/mapped_file.h"
#include "model/safetensors.h"

namespace {

const std::string kShared = KEEL_SHARED_DIR;
const std::string kKeel = std::string(KEEL_BINARY_DIR) + "/keel";

struct CmdResult {
  int code;
  std::string out, err;
};

std::string tmp_path(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("keel_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

CmdResult run(const std::string& args, const std::string& stdin_text = "") {
  std::string err_file = tmp_path("stderr.txt");
  std::string in_file = tmp_path("stdin.txt");
  {
    std::ofstream(in_file) << stdin_text;
  }
  std::string cmd = kKeel + " " + args + " <" + in_file + " 2>" + err_file;
  FILE* p = ::popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  CmdResult r{WIFEXITED(status) ? WEXITSTATUS(status) : 128, out, keel::read_text_file(err_file)};
  return r;
}

nlohmann::json golden(const std::string& fixture) {
  return nlohmann::json::parse(keel::read_text_file(kShared + "/fixtures/" + fixture + "/golden.json"));
}

std::string model_dir(const std::string& fixture) {
  return fixture == "stories260K" ? kShared + "/models/stories260K" : kShared + "/fixtures/" + fixture;
}

std::string join_ids(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

const char* kFixtures[] = {"tiny-llama3", "tiny-qwen2", "tiny-qwen3", "stories260K"};

}  // namespace

TEST(Cli, HelpOnEveryCommand) {
  for (const char* c : {"generate", "chat", "score", "perplexity", "tokenize", "info", "compile", "bench"}) {
    CmdResult r = run(std::string(c) + " --help");
    EXPECT_EQ(r.code, 0) << c;
    EXPECT_NE(r.out.find("--"), std::string::npos) << c;
  }
}

TEST(Cli, BadFlagsFailClearly) {
  CmdResult r = run("generate --model " + model_dir("tiny-qwen2") + " --prompt-ids 1 --no-such-flag");
  EXPECT_NE(r.code, 0);
  EXPECT_NE((r.out + r.err).find("--no-such-flag"), std::string::npos) << r.err;

  r = run("generate --model " + model_dir("tiny-qwen2") + " --prompt-ids 1,x,3");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("'x'"), std::string::npos) << r.err;

  r = run("generate --model " + model_dir("tiny-qwen2") + " --prompt-ids 1,99999");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("99999"), std::string::npos) << r.err;

  r = run("generate --model /nonexistent/dir --prompt-ids 1");
  EXPECT_NE(r.code, 0);
  EXPECT_NE((r.out + r.err).find("/nonexistent/dir"), std::string::npos) << r.err;

  r = run("generate --model " + model_dir("tiny-qwen2") + " --prompt-ids 1 --temperature -3");
  EXPECT_NE(r.code, 0);

  r = run("");
  EXPECT_NE(r.code, 0);
}

TEST(Cli, PromptLongerThanContextIsAnError) {
  std::vector<int> ids(40, 5);
  CmdResult r = run("generate --model " + model_dir("tiny-qwen2") + " --context 16 --prompt-ids " + join_ids(ids));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("40 tokens"), std::string::npos) << r.err;
}

// Greedy tokens through the CLI equal the golden ones up to the first step whose
// golden margin (top-1 minus top-2 logit) is under 1e-3: there a correct
// implementation may legitimately pick the other token.
TEST(Cli, GenerateJsonReproducesGoldenGreedy) {
  for (const char* f : kFixtures) {
    auto g = golden(f);
    for (const auto& p : g["prompts"]) {
      auto ids = p["ids"].get<std::vector<int>>();
      auto greedy = p["greedy"].get<std::vector<int>>();
      auto margins = p["margins"].get<std::vector<double>>();
      CmdResult r = run("generate --model " + model_dir(f) + " --prompt-ids " + join_ids(ids) +
                  " --max-tokens 24 --temperature 0 --ignore-eos --json");
      ASSERT_EQ(r.code, 0) << f << ": " << r.err;
      auto j = nlohmann::json::parse(r.out);
      auto out = j["output_ids"].get<std::vector<int>>();
      ASSERT_EQ(out.size(), 24u) << f;
      for (size_t i = 0; i < 24; ++i) {
        if (margins[i] < 1e-3) break;
        ASSERT_EQ(out[i], greedy[i]) << f << " step " << i;
      }
      EXPECT_TRUE(j["timing"].contains("prefill_ms"));
      EXPECT_TRUE(j["timing"].contains("ms_per_token"));
    }
  }
}

// --logprobs: output_logprobs in the JSON, one per output id, the same on
// the cpu and reference backends up to bf16 roundings (test_backends);
// without --json it is an error.
TEST(Cli, GenerateLogprobs) {
  const std::string m = std::string(KEEL_SHARED_DIR) + "/models/stories260K";
  const std::string common = "generate --model " + m + " --prompt \"Once upon a time\" --max-tokens 12 --json --logprobs";
  CmdResult cpu = run(common + " --backend cpu"), ref = run(common + " --backend reference");
  ASSERT_EQ(cpu.code, 0) << cpu.err;
  ASSERT_EQ(ref.code, 0) << ref.err;
  const auto a = nlohmann::json::parse(cpu.out), b = nlohmann::json::parse(ref.out);
  ASSERT_EQ(a["output_ids"], b["output_ids"]);
  ASSERT_EQ(a["output_logprobs"].size(), a["output_ids"].size());
  for (size_t i = 0; i < a["output_logprobs"].size(); ++i) {
    EXPECT_LE(a["output_logprobs"][i].get<double>(), 0.0);
    EXPECT_NEAR(a["output_logprobs"][i].get<double>(), b["output_logprobs"][i].get<double>(), 0.1) << i;
  }
  EXPECT_NE(run("generate --model " + m + " --prompt x --logprobs").code, 0);
}

// Several prompts (--prompt repeated and --prompts-file with a JSON line) run
// as one batch on the cpu backend: each continuation equals the one prompt's
// alone, in order, one JSON line each.
TEST(Cli, GenerateSeveralPromptsAsOneBatch) {
  const std::string m = std::string(KEEL_SHARED_DIR) + "/models/stories260K";
  const std::string file = ::testing::TempDir() + "/keel_prompts.txt";
  {
    std::ofstream f(file);
    f << "Once upon a time\n\n{\"prompt\": \"The cat\"}\nLily\n";
  }
  for (const std::string& how : {std::string(" --prompt \"Once upon a time\" --prompt \"The cat\" --prompt Lily"),
                                 std::string(" --prompts-file ") + file}) {
    CmdResult r = run("generate --model " + m + how + " --max-tokens 16 --backend cpu --json");
    ASSERT_EQ(r.code, 0) << how << ": " << r.err;
    std::istringstream lines(r.out);
    std::string line;
    const char* texts[3] = {"Once upon a time", "The cat", "Lily"};
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(std::getline(lines, line)) << how;
      const auto j = nlohmann::json::parse(line);
      EXPECT_EQ(j["index"], i);
      EXPECT_EQ(j["batch"], 3);
      CmdResult alone = run("generate --model " + m + " --prompt \"" + texts[i] + "\" --max-tokens 16 --backend cpu --json");
      ASSERT_EQ(alone.code, 0) << alone.err;
      EXPECT_EQ(j["output_ids"], nlohmann::json::parse(alone.out)["output_ids"]) << how << " prompt " << i;
    }
  }
  // A JSON line without a prompt is a clear error naming the line.
  {
    std::ofstream f(file);
    f << "fine\n{\"text\": 1}\n";
  }
  CmdResult bad = run("generate --model " + m + " --prompts-file " + file + " --backend cpu");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("line 2"), std::string::npos) << bad.err;
}

// Teacher-forced logits from `keel score` match transformers' fp32 logits to
// 1e-4 relative error (the reference pass is fp32 too: what remains is
// summation order, ~1e-6).
TEST(Cli, ScoreMatchesGoldenPrefillLogits) {
  for (const char* f : kFixtures) {
    auto g = golden(f);
    auto gold = keel::model::WeightStore::open_files({kShared + "/fixtures/" + f + "/golden.safetensors"});
    for (size_t i = 0; i < g["prompts"].size(); ++i) {
      auto ids = g["prompts"][i]["ids"].get<std::vector<int>>();
      std::string out = tmp_path(std::string(f) + "_logits.safetensors");
      CmdResult r = run("score --model " + model_dir(f) + " --ids " + join_ids(ids) + " --out " + out);
      ASSERT_EQ(r.code, 0) << r.err;
      auto got = keel::model::WeightStore::open_files({out});
      const auto& a = got.get("logits");
      const auto& b = gold.get("prompt" + std::to_string(i) + ".prefill_logits");
      ASSERT_EQ(a.shape, b.shape);
      double num = 0, den = 0;
      for (int64_t k = 0; k < a.numel(); ++k) {
        double d = double(a.at(size_t(k))) - b.at(size_t(k));
        num += d * d;
        den += double(b.at(size_t(k))) * b.at(size_t(k));
      }
      double rel = std::sqrt(num / den);
      EXPECT_LE(rel, 1e-4) << f << " prompt " << i;
      std::printf("[ score ] %s prompt %zu: relative error %.3g\n", f, i, rel);
    }
  }
}

// --ids @FILE reads the ids from a file (commas or white space): the same
// logits as on the command line; a missing file is named.
TEST(Cli, ScoreReadsIdsFromAFile) {
  const std::string f = tmp_path("ids.txt");
  std::ofstream(f) << "1 403\n407,261\n 378\n";
  const std::string a = tmp_path("a.safetensors"), b = tmp_path("b.safetensors");
  CmdResult r1 = run("score --model " + model_dir("stories260K") + " --ids @" + f + " --out " + a);
  ASSERT_EQ(r1.code, 0) << r1.err;
  CmdResult r2 = run("score --model " + model_dir("stories260K") + " --ids 1,403,407,261,378 --out " + b);
  ASSERT_EQ(r2.code, 0) << r2.err;
  auto ga = keel::model::WeightStore::open_files({a}), gb = keel::model::WeightStore::open_files({b});
  ASSERT_EQ(ga.get("logits").shape, gb.get("logits").shape);
  EXPECT_EQ(ga.get("logits").shape[0], 5);
  for (int64_t k = 0; k < ga.get("logits").numel(); ++k)
    ASSERT_EQ(ga.get("logits").at(size_t(k)), gb.get("logits").at(size_t(k)));
  CmdResult r3 = run("score --model " + model_dir("stories260K") + " --ids @" + tmp_path("none.txt") + " --out " + a);
  EXPECT_NE(r3.code, 0);
  EXPECT_NE(r3.err.find("none.txt"), std::string::npos) << r3.err;
}

TEST(Cli, StoriesTellsTheLilyStory) {
  CmdResult r = run("generate --model " + model_dir("stories260K") + " --prompt \"Once upon a time\" --max-tokens 40");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", 0), 0u)
      << r.out;
}

TEST(Cli, TokenizeWorksOnTokenizerOnlyFolder) {
  CmdResult r = run("tokenize --model " + kShared + "/models/qwen3-tokenizer --text \"Hello, world\"");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "9707,11,1879\n");
  r = run("tokenize --model " + kShared + "/models/qwen3-tokenizer --decode 9707,11,1879");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello, world\n");
}

TEST(Cli, StopStringEndsGeneration) {
  CmdResult r = run("generate --model " + model_dir("stories260K") +
              " --prompt \"Once upon a time\" --max-tokens 48 --stop Lily --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["text"], ", there was a little girl named ");
  EXPECT_EQ(j["stop_reason"], "stop_string");
}

TEST(Cli, ChatPlainContinuationEndsAtEndOfInput) {
  CmdResult r = run("chat --model " + model_dir("stories260K") + " --max-tokens 8", "Once upon a time\n");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
}

TEST(Cli, InfoDescribesTheModel) {
  CmdResult r = run("info --model " + model_dir("tiny-qwen3") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "qwen3");
  EXPECT_EQ(j["layers"], 2);
  EXPECT_GT(j["bytes_per_token"].get<double>(), 0);
  EXPECT_TRUE(j["gpus"].is_array());
}

// Issue acceptance: Qwen3-8B at 132 workers compiles (shapes only) and every
// worker streams within 5% of the mean bytes.
TEST(Cli, CompileQwen3_8BIsBalanced) {
  CmdResult r = run("compile --config " + kShared + "/models/qwen3-tokenizer/Qwen3-8B/config.json --workers 132 --batch 1 --report");
  ASSERT_EQ(r.code, 0) << r.err;
  auto at = r.out.find("max/mean ");
  ASSERT_NE(at, std::string::npos) << r.out;
  double ratio = std::stod(r.out.substr(at + 9));
  EXPECT_LE(ratio, 1.05) << r.out;
  EXPECT_NE(r.out.find("ms/token"), std::string::npos);
}

TEST(Cli, CompileSavesCheckableProgramAndRejectsMalformedOnes) {
  std::string out = tmp_path("stories.keel");
  CmdResult r = run("compile --model " + model_dir("stories260K") + " --workers 7 --batch 3 --check --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  r = run("compile --program " + out + " --check --report");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("loaded"), std::string::npos);
  // Truncate the file: a clear error naming it.
  std::string bytes = keel::read_text_file(out);
  std::string cut = tmp_path("cut.keel");
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  r = run("compile --program " + cut + " --report");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(cut), std::string::npos) << r.err;
}

// Issue 11: `keel compile --target <the device> --report` names the Program's
// hash (the one `keel bench --json` prints for the same flags: GPU test
// ProgramGpu.BenchRunsTheProgramItsOptionsCompile), its target, ring and tiles.
TEST(Cli, CompileForATargetPrintsTheProgramHash) {
  const std::string cfg = kShared + "/models/qwen3-tokenizer/Qwen3-8B/config.json";
  auto hash_of = [](const std::string& out) {
    const auto at = out.find("program hash ");
    return at == std::string::npos ? std::string() : out.substr(at + 13, 16);
  };
  CmdResult a = run("compile --config " + cfg + " --target h200 --dtype bf16 --report");
  ASSERT_EQ(a.code, 0) << a.err;
  const std::string h = hash_of(a.out);
  ASSERT_EQ(h.size(), 16u) << a.out;
  EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos) << h;
  EXPECT_NE(a.out.find("target h200: 132 SMs"), std::string::npos) << a.out;
  // The model's full context (40960): attention's K/V staging buffer takes
  // the third 64 KiB ring stage (program::attn_may_stream).
  EXPECT_NE(a.out.find("ring 2 x 64 KiB"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("rows/stage"), std::string::npos) << a.out;
  // The same flags name the same Program; the flags the report prints rebuild it.
  EXPECT_EQ(hash_of(run("compile --config " + cfg + " --target h200 --dtype bf16 --report").out), h);
  const auto flags_at = a.out.find("(keel compile ");
  ASSERT_NE(flags_at, std::string::npos);
  const std::string flags = a.out.substr(flags_at + 14, a.out.find(')', flags_at) - flags_at - 14);
  EXPECT_EQ(hash_of(run("compile --config " + cfg + " " + flags + " --report").out), h) << flags;
  // Another target or ring: another Program.
  EXPECT_NE(hash_of(run("compile --config " + cfg + " --target h100 --dtype bf16 --report").out), h);
  EXPECT_NE(hash_of(run("compile --config " + cfg + " --target h200 --stage-kib 32 --dtype bf16 --report").out), h);
  // --row-align: fewer, longer tasks, another Program; the printed flags carry it.
  CmdResult r = run("compile --config " + cfg + " --target h200 --dtype bf16 --row-align 32 --report");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(hash_of(r.out), h);
  const auto r_at = r.out.find("(keel compile ");
  ASSERT_NE(r_at, std::string::npos);
  const std::string r_flags = r.out.substr(r_at + 14, r.out.find(')', r_at) - r_at - 14);
  EXPECT_NE(r_flags.find("--row-align 32"), std::string::npos) << r_flags;
  EXPECT_EQ(hash_of(run("compile --config " + cfg + " " + r_flags + " --report").out), hash_of(r.out)) << r_flags;
  EXPECT_EQ(flags.find("--row-align"), std::string::npos) << "the default is not printed: " << flags;
  // auto asks the GPU: without one (or without CUDA) a clear error naming the flag.
  CmdResult e = run("compile --config " + cfg + " --target auto --dtype bf16 --report");
  if (e.code != 0) {
    EXPECT_EQ(e.code, 1);
    EXPECT_NE(e.err.find("--target auto"), std::string::npos) << e.err;
  } else {
    EXPECT_EQ(hash_of(e.out).size(), 16u) << e.out;
  }
}

// A prefill Program (--prefill-chunk, --kv-sequences): its report prints the
// flags that rebuild it (the same hash), the wide batch ring and no LM head.
TEST(Cli, CompileAPrefillProgram) {
  const std::string cfg = kShared + "/models/qwen3-tokenizer/Qwen3-8B/config.json";
  auto hash_of = [](const std::string& out) {
    const auto at = out.find("program hash ");
    return at == std::string::npos ? std::string() : out.substr(at + 13, 16);
  };
  CmdResult a = run("compile --config " + cfg +
                    " --target h200 --dtype bf16 --context 4096 --prefill-chunk 64 --kv-sequences 8 --report");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.out.find("batch 64"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("0 LM-head tiles"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("x 64 KiB"), std::string::npos) << a.out;  // the wide batch ring
  EXPECT_NE(a.out.find("at most 256 columns"), std::string::npos) << a.out;
  const auto flags_at = a.out.find("(keel compile ");
  ASSERT_NE(flags_at, std::string::npos);
  const std::string flags = a.out.substr(flags_at + 14, a.out.find(')', flags_at) - flags_at - 14);
  EXPECT_NE(flags.find("--prefill-chunk 64 --kv-sequences 8"), std::string::npos) << flags;
  EXPECT_EQ(hash_of(run("compile --config " + cfg + " " + flags + " --report").out), hash_of(a.out)) << flags;
  EXPECT_NE(flags.find("--mm-cols 256"), std::string::npos) << flags;
  {  // the old plan (128 columns a stage) is another Program, and its flags name it
    CmdResult o = run("compile --config " + cfg +
                      " --target h200 --dtype bf16 --context 4096 --prefill-chunk 64 --kv-sequences 8 --mm-cols 0 --report");
    ASSERT_EQ(o.code, 0) << o.err;
    EXPECT_NE(hash_of(o.out), hash_of(a.out));
    const auto at = o.out.find("(keel compile ");
    ASSERT_NE(at, std::string::npos);
    const std::string oflags = o.out.substr(at + 14, o.out.find(')', at) - at - 14);
    EXPECT_NE(oflags.find("--mm-cols 0"), std::string::npos) << oflags;
    EXPECT_EQ(hash_of(run("compile --config " + cfg + " " + oflags + " --report").out), hash_of(o.out)) << oflags;
  }
  CmdResult bad = run("compile --config " + cfg + " --dtype bf16 --context 4096 --prefill-chunk 64 --batch 3 --report");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("prefill Program"), std::string::npos) << bad.err;
}

// A mixed Program (--decode-lanes beside --prefill-chunk): the report names
// its lanes, it has an LM head (for the decode lanes), and its flags rebuild
// it; decode lanes without prefill lanes are an error.
TEST(Cli, CompileAMixedProgram) {
  const std::string cfg = kShared + "/models/qwen3-tokenizer/Qwen3-8B/config.json";
  auto hash_of = [](const std::string& out) {
    const auto at = out.find("program hash ");
    return at == std::string::npos ? std::string() : out.substr(at + 13, 16);
  };
  CmdResult a = run("compile --config " + cfg +
                    " --target h200 --dtype bf16 --context 4096 --prefill-chunk 48 --decode-lanes 16 --kv-pages 700 "
                    "--report");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_NE(a.out.find("batch 64 (16 decode lanes, 48 prefill lanes in groups of 48)"), std::string::npos) << a.out;
  EXPECT_EQ(a.out.find(" 0 LM-head tiles"), std::string::npos) << a.out;
  const auto flags_at = a.out.find("(keel compile ");
  ASSERT_NE(flags_at, std::string::npos);
  const std::string flags = a.out.substr(flags_at + 14, a.out.find(')', flags_at) - flags_at - 14);
  EXPECT_NE(flags.find("--prefill-chunk 48 --decode-lanes 16 --kv-pages 700"), std::string::npos) << flags;
  EXPECT_EQ(hash_of(run("compile --config " + cfg + " " + flags + " --report").out), hash_of(a.out)) << flags;
  CmdResult bad = run("compile --config " + cfg + " --dtype bf16 --context 4096 --decode-lanes 16 --report");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("decode_lanes"), std::string::npos) << bad.err;
}

TEST(Cli, UnknownCommandIsNamed) {
  CmdResult r = run("frobnicate --model x");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("generate"), std::string::npos) << r.err;  // lists the real ones
}

namespace {

/// A model folder in the temp dir: `config` plus one-layer llama weights (f32,
/// tied embeddings, small deterministic values) and symlinks to the tokenizer
/// files of `tokenizer_dir`, so a real chat template drives a model whose
/// vocabulary matches the tokenizer's.
std::string make_chat_model(const std::string& name, const std::string& tokenizer_dir, int64_t vocab) {
  namespace fs = std::filesystem;
  fs::path dir = tmp_path(name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const int64_t H = 8, I = 16, heads = 2, kv = 1, hd = 4;
  nlohmann::json cfg = {{"model_type", "llama"}, {"hidden_size", H}, {"intermediate_size", I},
                        {"num_hidden_layers", 1}, {"num_attention_heads", heads},
                        {"num_key_value_heads", kv}, {"head_dim", hd}, {"vocab_size", vocab},
                        {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-5},
                        {"tie_word_embeddings", true}, {"torch_dtype", "float32"}};
  std::ofstream(dir / "config.json") << cfg.dump();
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"model.embed_tokens.weight", {vocab, H}}, {"model.norm.weight", {H}},
      {"model.layers.0.input_layernorm.weight", {H}}, {"model.layers.0.post_attention_layernorm.weight", {H}},
      {"model.layers.0.self_attn.q_proj.weight", {heads * hd, H}},
      {"model.layers.0.self_attn.k_proj.weight", {kv * hd, H}},
      {"model.layers.0.self_attn.v_proj.weight", {kv * hd, H}},
      {"model.layers.0.self_attn.o_proj.weight", {H, heads * hd}},
      {"model.layers.0.mlp.gate_proj.weight", {I, H}}, {"model.layers.0.mlp.up_proj.weight", {I, H}},
      {"model.layers.0.mlp.down_proj.weight", {H, I}}};
  std::vector<std::vector<float>> data;
  std::vector<const float*> ptrs;
  uint32_t state = 12345;
  for (const auto& [tensor, shape] : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(size_t(n), 1.0f);  // norms stay 1
    if (shape.size() == 2)
      for (float& x : v) x = float(int((state = state * 1664525u + 1013904223u) >> 24) - 128) / 256.0f;
    data.push_back(std::move(v));
  }
  for (const auto& v : data) ptrs.push_back(v.data());
  keel::model::write_safetensors_f32((dir / "model.safetensors").string(), shapes, ptrs);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::create_symlink(fs::path(tokenizer_dir) / f, dir / f);
  return dir.string();
}

}  // namespace

// Chat through real ChatML (Qwen3) and Llama-3 templates: two turns are
// rendered, encoded and answered, and end-of-input ends the session cleanly.
// The weights are random, so only the path is checked, not the words.
TEST(Cli, ChatTemplatesRenderAndEndAtEndOfInput) {
  struct Case { const char* name; const char* tokenizer; int64_t vocab; const char* format; };
  for (const Case& c : {Case{"chat_qwen3", "qwen3-tokenizer", 151936, "ChatML"},
                        Case{"chat_llama3", "llama3-tokenizer", 128256, "Llama-3"}}) {
    std::string dir = make_chat_model(c.name, kShared + "/models/" + c.tokenizer, c.vocab);
    CmdResult r = run("chat --model " + dir + " --max-tokens 3 --temperature 0", "Hello there\n\nAnd again?\n");
    EXPECT_EQ(r.code, 0) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.format), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("the checkpoint's chat template"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2) << c.name << ": one line per turn: " << r.out;
    r = run("chat --model " + dir, "");  // Ctrl-D at once
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

// A tokenizer whose ids the model cannot embed (its files belong to another
// checkpoint) is named as the culprit in chat, perplexity and generate --prompt,
// instead of an anonymous out-of-vocabulary id from the backend.
TEST(Cli, TokenizerOfAnotherCheckpointIsNamed) {
  namespace fs = std::filesystem;
  fs::path dir = tmp_path("mismatch");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(model_dir("tiny-qwen3")))
    if (e.path().filename() != "golden.json") fs::copy_file(e.path(), dir / e.path().filename());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::create_symlink(fs::path(kShared) / "models/qwen3-tokenizer" / f, dir / f);
  std::string text_file = tmp_path("mismatch.txt");
  std::ofstream(text_file) << "Hello there, general Kenobi";
  for (const std::string& cmd : {"chat --model " + dir.string(), "perplexity --model " + dir.string() + " --file " + text_file,
                                 "generate --model " + dir.string() + " --prompt Hello"}) {
    CmdResult r = run(cmd, "Hello\n");
    EXPECT_EQ(r.code, 1) << cmd;
    EXPECT_NE(r.err.find("the tokenizer in " + dir.string()), std::string::npos) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find("512"), std::string::npos) << r.err;  // the model's vocabulary
  }
}

// The README's `--stop "\n\n"`: the shell passes a backslash and an n, which
// keel must read as a newline (before, it waited for a literal backslash-n and
// ran to --max-tokens). The story's first paragraph ends in a newline.
TEST(Cli, StopStringEscapesMeanNewlines) {
  CmdResult r = run("generate --model " + model_dir("stories260K") +
                    " --prompt \"Once upon a time\" --max-tokens 200 --stop '\\n' --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["stop_reason"], "stop_string");
  std::string text = j["text"];
  EXPECT_EQ(text.find('\n'), std::string::npos) << text;
  EXPECT_FALSE(text.empty());
}

// Issue acceptance (compiler): the compiled Program on CPU workers, in shuffle
// mode, tells the same story as the reference.
TEST(Cli, CpuBackendTellsTheLilyStory) {
  CmdResult r = run("generate --model " + model_dir("stories260K") +
                    " --prompt \"Once upon a time\" --max-tokens 40 --backend cpu --workers 132 --shuffle 3");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", 0), 0u)
      << r.out;
}

// Every numeric flag rejects garbage with a usage error, never a crash (a
// custom --top-p validator once aborted on "abc"), and --top-p 0 is refused up
// front rather than failing later inside the sampler.
TEST(Cli, NumericFlagsRejectGarbage) {
  for (const char* flag : {"--temperature", "--top-k", "--top-p", "--min-p", "--repetition-penalty", "--seed",
                           "--max-tokens", "--context", "--workers", "--shuffle"}) {
    CmdResult r = run("generate --model " + model_dir("stories260K") + " --prompt hi " + flag + " abc");
    EXPECT_GT(r.code, 0) << flag;
    EXPECT_LT(r.code, 128) << flag << " crashed: " << r.err;
    EXPECT_NE(r.err.find(flag), std::string::npos) << flag << ": " << r.err;
  }
  CmdResult r = run("generate --model " + model_dir("stories260K") + " --prompt hi --top-p 0");
  EXPECT_GT(r.code, 0);
  EXPECT_NE(r.err.find("(0, 1]"), std::string::npos) << r.err;
}

// --- issue 16: hostile or odd flags and folders -------------------------------------

// NaN passed CLI11's range checks and was then taken as "unset"; 1e-40 was
// accepted and overflowed the logits. Each is refused naming the flag.
TEST(Cli, SamplingFlagsRefuseNanAndTinyValues) {
  for (const char* bad : {"--temperature nan", "--temperature 1e-40", "--min-p nan", "--repetition-penalty nan",
                          "--temperature inf", "--repetition-penalty -nan"}) {
    CmdResult r = run("generate --model " + model_dir("stories260K") + " --prompt-ids 1 --max-tokens 2 " + bad);
    EXPECT_GT(r.code, 0) << bad << ": " << r.err;  // 1 (keel's check) or CLI11's usage error code
    EXPECT_LT(r.code, 128) << bad << " crashed: " << r.err;
    EXPECT_EQ(r.out, "") << bad;
    const std::string flag = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_NE(r.err.find(flag), std::string::npos) << bad << ": " << r.err;
  }
}

// --top-k 4294967301 acted as 5 (truncated to 32 bits); a k beyond the
// vocabulary keeps every token, so it samples exactly as --top-k 0 does.
TEST(Cli, HugeTopKIsNotTruncated) {
  auto tokens = [](const std::string& k) {
    CmdResult r = run("generate --model " + model_dir("stories260K") +
                      " --prompt-ids 1 --max-tokens 24 --temperature 1.5 --seed 11 --json --top-k " + k);
    EXPECT_EQ(r.code, 0) << r.err;
    return r.code == 0 ? nlohmann::json::parse(r.out)["output_ids"] : nlohmann::json();
  };
  const nlohmann::json all = tokens("0"), huge = tokens("4294967301"), five = tokens("5");
  EXPECT_EQ(huge, all);
  EXPECT_NE(huge, five);  // 24 tokens at temperature 1.5: top-5 sampling differs somewhere
}

// perplexity --context 1 printed nan (no token is predicted in a 1-token window).
TEST(Cli, PerplexityNeedsTwoTokenWindows) {
  std::string text_file = tmp_path("ppl.txt");
  std::ofstream(text_file) << "Once upon a time, there was a little girl named Lily.";
  CmdResult r = run("perplexity --model " + model_dir("stories260K") + " --file " + text_file + " --context 1");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.err.find("--context"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("nan"), std::string::npos) << r.out;
  r = run("perplexity --model " + model_dir("stories260K") + " --file " + text_file + " --context 2");
  EXPECT_EQ(r.code, 0) << r.err;
}

// --decode ",," succeeded and printed an empty line.
TEST(Cli, DecodeOfNoIdsIsAnError) {
  CmdResult r = run("tokenize --model " + model_dir("stories260K") + " --decode ,,");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--decode"), std::string::npos) << r.err;
}

// With --prompt-ids, a tokenizer of another checkpoint went unnoticed (the ids
// came from the flag) and decoded the output with the wrong vocabulary.
TEST(Cli, ForeignTokenizerIsCaughtAtLoad) {
  namespace fs = std::filesystem;
  fs::path dir = tmp_path("foreign");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(model_dir("tiny-qwen3")))
    if (e.path().filename() != "golden.json") fs::copy_file(e.path(), dir / e.path().filename());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::create_symlink(fs::path(kShared) / "models/qwen3-tokenizer" / f, dir / f);
  CmdResult r = run("generate --model " + dir.string() + " --prompt-ids 1,2 --max-tokens 2");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("the tokenizer in " + dir.string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("151669"), std::string::npos) << r.err;  // the tokenizer's size
}

// Range errors printed CLI11's bounds of a double, 300 digits long.
TEST(Cli, RangeErrorsAreShort) {
  for (const char* bad : {"--context 0", "--context -5", "--top-k -1", "--shuffle -1", "--workers 0"}) {
    CmdResult r = run("generate --model " + model_dir("stories260K") + " --prompt-ids 1 " + std::string(bad));
    EXPECT_GT(r.code, 0) << bad;
    const std::string flag = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_NE(r.err.find(flag), std::string::npos) << bad << ": " << r.err;
    EXPECT_LT(r.err.size(), 200u) << bad << ": " << r.err;
  }
}

// Chat used to exit 0 after "no longer fits the context; ending". Now the
// oldest turns are dropped so the conversation goes on; a message that does
// not fit even alone is an error.
TEST(Cli, ChatDropsTheOldestTurnsWhenTheContextIsFull) {
  std::string lines;
  for (int i = 0; i < 6; ++i) lines += "Once upon a time there was a girl named Lily and she\n";
  CmdResult r = run("chat --model " + model_dir("stories260K") + " --context 48 --max-tokens 8", lines);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("dropped the oldest turn"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 6) << "one reply per message: " << r.out;
  std::string huge;
  for (int i = 0; i < 20; ++i) huge += "Once upon a time there was a girl named Lily. ";
  r = run("chat --model " + model_dir("stories260K") + " --context 48 --max-tokens 8", huge + "\n");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("does not fit the context"), std::string::npos) << r.err;
}

// `keel info` crashed (stack overflow) on a header whose data_offsets nests
// 200,000 deep, and a model.safetensors that is a directory was "missing".
TEST(Cli, HostileCheckpointFilesGiveOneLineErrors) {
  namespace fs = std::filesystem;
  fs::path dir = tmp_path("hostile_ckpt");
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(model_dir("stories260K") + "/config.json", dir / "config.json");
  const size_t depth = 200000;
  std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":)" + std::string(depth, '[') +
                       std::string(depth, ']') + "}}";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char((uint64_t(header.size()) >> (8 * i)) & 0xff);
  std::ofstream(dir / "model.safetensors", std::ios::binary) << bytes << header;
  CmdResult r = run("info --model " + dir.string());
  EXPECT_EQ(r.code, 1) << r.err.substr(0, 300);
  EXPECT_NE(r.err.find("model.safetensors: JSON nested deeper than 64 levels"), std::string::npos) << r.err.substr(0, 300);
  EXPECT_LT(r.err.size(), 300u);

  fs::remove(dir / "model.safetensors");
  fs::create_directories(dir / "model.safetensors");
  r = run("info --model " + dir.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("model.safetensors: is a directory"), std::string::npos) << r.err;
}

namespace {
// --context defaults to max_position_embeddings (bounded by memory), said on
// stderr; a request whose prompt + --max-tokens does not fit is an error
// before anything runs.
TEST(Cli, DefaultContextIsTheModelsAndRequestsMustFit) {
  CmdResult r = run("generate --model " + model_dir("tiny-qwen2") + " --prompt-ids 1,2,3 --max-tokens 2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("context 2048 (the model's max_position_embeddings"), std::string::npos) << r.err;
  r = run("generate --model " + model_dir("tiny-qwen2") + " --context 16 --prompt-ids 1,2,3 --max-tokens 14");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("+ --max-tokens 14 = 17 tokens do not fit the context of 16"), std::string::npos) << r.err;
  r = run("generate --model " + model_dir("tiny-qwen2") + " --context 16 --prompt-ids 1,2,3 --max-tokens 13");
  EXPECT_EQ(r.code, 0) << r.err;
}
}  // namespace
