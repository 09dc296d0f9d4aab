// Implementation of the shared CLI helpers (see cli_common.h).
#include "cli_common.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "core/mapped_file.h"
#include "engine/backends.h"

namespace keel::cli {

std::vector<int32_t> parse_ids(const std::string& given, const std::string& flag) {
  // @FILE: the ids from a file (one argument holds at most 128 KiB on Linux:
  // ~30K ids; a long-context check needs more).
  std::string text = given;
  if (!given.empty() && given[0] == '@') {
    std::ifstream f(given.substr(1), std::ios::binary);
    if (!f) fail(flag, ": cannot read '", given.substr(1), "'");
    text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    if (text.empty()) fail(flag, ": '", given.substr(1), "' is empty");
  }
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (std::isspace(static_cast<unsigned char>(text[i])) || text[i] == ','))
      ++i;
    if (i >= text.size()) break;
    size_t j = i;
    while (j < text.size() && text[j] != ',' && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    int64_t v = 0;
    auto [p, ec] = std::from_chars(text.data() + i, text.data() + j, v);
    if (ec != std::errc() || p != text.data() + j || v < 0 || v > INT32_MAX)
      fail(flag, ": '", text.substr(i, j - i), "' is not a token id (expected comma-separated integers)");
    ids.push_back(int32_t(v));
    i = j;
  }
  return ids;
}

std::vector<std::string> available_backends() { return engine::backend_names(); }

void add_backend_flags(CLI::App& cmd, BackendOptions& o) {
  std::string help = "Executor, one of the backends built in:";
  for (const engine::BackendEntry& e : engine::backend_registry())
    help += cat(" ", e.name, " (", e.description, ")", &e == &engine::backend_registry().back() ? "" : ",");
  cmd.add_option("--backend", o.backend, help)
      ->check(CLI::IsMember(available_backends()))
      ->capture_default_str();
  cmd.add_option("--workers", o.workers, "cpu backend: number of logical workers the Program is compiled for (default: 8)")
      ->check(CLI::Range(1, 4096));
  cmd.add_option("--shuffle", o.shuffle_seed, "cpu backend: randomize worker scheduling with this seed (exposes missing dependencies)")
      ->check(CLI::Range(int64_t(0), INT64_MAX));
  cmd.add_option("--context", o.context, "KV-cache capacity in tokens (default: the model's max_position_embeddings, bounded by the memory "
                 "for the KV cache: cuda, free GPU memory after the weights; cpu and reference, a quarter of RAM)")
      ->check(kContextRange);
  cmd.add_option("--target", o.target, "cuda backend: device to compile for (h100, h200, auto = this GPU); a "
                 "Program that does not fit the GPU is recompiled for it, said on stderr")
      ->check(CLI::IsMember({"h100", "h200", "auto"}))->capture_default_str();
  cmd.add_option("--prefill-chunk", o.prefill_chunk,
                 "cpu, cuda: prompt positions per prefill step: a prompt of more than 16 tokens runs through a "
                 "Program of this many lanes (tensor-core tiles, each weight streamed once a step), then decodes "
                 "from its last token; 0 = every position a decode step (default: cuda 256, cpu 16)")
      ->check(CLI::Range(0, 4096));
  cmd.add_option("--mixed-prefill", o.mixed_prefill,
                 "cpu, cuda with --batch > 1: prompt positions per step when a prompt is prefilled while other "
                 "sequences decode (one step carries their tokens and this many prompt positions), so a joining "
                 "prompt does not stall them; 0 = they wait for its prefill (default: the prefill chunk less the "
                 "batch, if that leaves a quarter of it: cuda batches up to 48, cpu up to 12; off without a prefill chunk)")
      ->check(CLI::Range(0, 4096));
  cmd.add_option("--kv-tokens", o.kv_tokens,
                 "cpu, cuda: KV cache size in tokens, shared by the sequences of a launch: each takes the pages of "
                 "its prompt and max_tokens, not a whole context (default: --context x the batch); at least --context")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  cmd.add_flag("--no-prefix-reuse", o.no_prefix_reuse,
               "Compute every prompt whole: by default the positions of a prompt that the last request left in the "
               "KV cache (the same tokens from the start: a chat's earlier turns, a shared system prompt) are kept");
  cmd.add_flag("--fixed-batch", o.fixed_batch,
               "cpu, cuda with a batch > 1: run every launch on the Program of the whole batch; by default the "
               "backend also holds Programs of 1, 2, 4, ... sequences (same weights and KV cache) and a launch of "
               "fewer sequences decodes on the smallest that holds them, so a lone request runs at batch 1's speed");
}

std::unique_ptr<engine::Backend> make_backend(const model::Model& m, const BackendOptions& o) {
  if (o.context > m.config.max_position)
    fail("--context ", o.context, " exceeds the model's context length (max_position_embeddings = ",
         m.config.max_position, ")");
  int64_t ctx = o.context, kv_tokens = o.kv_tokens;
  if (ctx <= 0) {
    const engine::ContextChoice choice = engine::default_context(o.backend, m);
    std::fprintf(stderr, "%s\n", choice.why.c_str());
    ctx = choice.tokens;
    // A batch whose contexts do not all fit the memory shares what does
    // (each sequence leases the pages of its prompt and max_tokens).
    if (o.batch > 1 && kv_tokens <= 0 && ctx * o.batch > choice.budget_tokens) {
      kv_tokens = choice.budget_tokens;
      std::fprintf(stderr, "KV cache of %lld tokens shared by the %d sequences of a batch (%d x %lld would not fit; "
                   "--kv-tokens to choose)\n", (long long)kv_tokens, o.batch, o.batch, (long long)ctx);
    }
  }
  engine::BackendConfig cfg;
  cfg.max_context = ctx;
  cfg.workers = o.workers;
  cfg.shuffle_seed = o.shuffle_seed;
  cfg.target = o.target;
  cfg.batch = o.batch;
  cfg.prefill_chunk = o.prefill_chunk;
  cfg.mixed_prefill = o.mixed_prefill;
  cfg.prefix_reuse = !o.no_prefix_reuse;
  cfg.small_batches = !o.fixed_batch;
  if (kv_tokens > 0 && kv_tokens < ctx)
    fail("--kv-tokens ", kv_tokens, " is less than the context of ", ctx, " tokens: the KV cache must hold one "
         "whole sequence (raise it, or lower --context)");
  cfg.kv_tokens = kv_tokens;
  return engine::make_backend(o.backend, m, cfg);
}

void add_sampling_flags(CLI::App& cmd, SamplingFlags& f) {
  cmd.add_option("--temperature", f.temperature, "Sampling temperature; 0 = greedy (default: generation_config.json, else greedy)")
      ->check(CLI::Range(0.0, 100.0));
  cmd.add_option("--top-k", f.top_k, "Keep the k most likely tokens (0 = off)")->check(CLI::Range(int64_t(0), INT64_MAX));
  cmd.add_option("--top-p", f.top_p, "Nucleus sampling: keep the smallest set with probability >= p")
      ->check(CLI::Validator(
          [](std::string& v) {
            char* end = nullptr;
            double d = std::strtod(v.c_str(), &end);
            bool ok = end != v.c_str() && *end == 0 && d > 0 && d <= 1;
            return ok ? std::string() : std::string("must be a number in (0, 1], got '" + v + "'");
          },
          "(0, 1]"));
  cmd.add_option("--min-p", f.min_p, "Drop tokens below min_p x the top probability")->check(CLI::Range(0.0, 1.0));
  cmd.add_option("--repetition-penalty", f.repetition_penalty, "Penalize tokens already seen (1 = off)")
      ->check(CLI::Range(0.01, 100.0));
  cmd.add_option("--seed", f.seed, "Random seed (same seed, same output)")->capture_default_str();
}

std::vector<int32_t> eos_ids(const model::Model& m, const tokenizer::Tokenizer* tok) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t v) {
    if (v >= 0 && v < m.config.vocab && std::find(ids.begin(), ids.end(), int32_t(v)) == ids.end())
      ids.push_back(int32_t(v));
  };
  for (auto v : m.generation.eos_ids) add(v);
  for (auto v : m.config.eos_ids) add(v);
  if (tok)
    for (auto v : tok->eos_ids()) add(v);
  return ids;
}

std::unique_ptr<tokenizer::Tokenizer> try_load_tokenizer(const std::string& dir) {
  // A file (a GGUF, or an Ollama blob) carries its tokenizer in its metadata.
  if (is_regular_file(dir)) return std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(dir));
  if (!file_exists(path_join(dir, "tokenizer.json")) && !file_exists(path_join(dir, "vocab.json")))
    return nullptr;
  return std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(dir));
}

void check_ids_fit_model(const std::vector<int32_t>& ids, const model::Model& m, const std::string& source) {
  for (int32_t id : ids) {
    if (id >= 0 && id < m.config.vocab) continue;
    if (source.rfind("--", 0) == 0)
      fail(source, ": token id ", id, " is outside the vocabulary (", m.config.vocab, " tokens)");
    fail("the tokenizer in ", source, " produced token id ", id, " but the model's vocabulary has ",
         m.config.vocab, " tokens: the tokenizer files do not belong to this checkpoint");
  }
}

void check_tokenizer_fits_model(const tokenizer::Tokenizer& tok, const model::Model& m, const std::string& dir) {
  if (tok.vocab_size() > m.config.vocab)
    fail("the tokenizer in ", dir, " has ", tok.vocab_size(), " tokens but the model's vocabulary (config.json ",
         "vocab_size) has ", m.config.vocab, ": the tokenizer files do not belong to this checkpoint");
}

std::string unescape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      char n = text[i + 1];
      char r = n == 'n' ? '\n' : n == 't' ? '\t' : n == 'r' ? '\r' : n == '\\' ? '\\' : 0;
      if (r) {
        out.push_back(r);
        ++i;
        continue;
      }
    }
    out.push_back(c);
  }
  return out;
}

std::vector<int32_t> prompt_ids(const std::string& text, const std::string& ids_text,
                                const tokenizer::Tokenizer* tok) {
  std::vector<int32_t> ids;
  if (!ids_text.empty()) {
    ids = parse_ids(ids_text, "--prompt-ids");
  } else {
    if (!tok) fail("--prompt needs a tokenizer (tokenizer.json or vocab.json + merges.txt) in the model folder; use --prompt-ids instead");
    ids = tok->encode(text, true);
  }
  if (ids.empty()) fail("the prompt is empty: give --prompt TEXT or --prompt-ids 1,2,3");
  return ids;
}

}  // namespace keel::cli
