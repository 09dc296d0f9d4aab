// `keel generate`: prompt in, streamed continuation out (or one JSON object with
// --json). Several prompts (--prompt repeated, --prompts-file) run as one batch
// on the cpu and cuda backends and print each continuation when done. Works on
// any backend; the default is the fp32 reference forward pass.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "model_source.h"
#include "core/error.h"
#include "program/rules.h"
#include "engine/text_stream.h"

namespace keel::cli {

namespace {
struct GenerateArgs {
  std::string model, prompt, prompt_ids, prompts_file;
  std::vector<std::string> prompts;  // --prompt, repeatable
  int32_t max_tokens = 256;
  int batch = 0;  // sequences per launch (0: all the prompts, at most 64)
  bool json = false, no_eos = false, logprobs = false;
  std::vector<std::string> stops;
  SamplingFlags sampling;
  BackendOptions backend;
};

/// The prompts of --prompts-file: one per line, or JSON Lines objects with a
/// "prompt" string; blank lines are skipped.
std::vector<std::string> read_prompts_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("--prompts-file: cannot open '", path, "'");
  std::vector<std::string> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line.front() == '{') {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
        fail("--prompts-file ", path, " line ", n, ": a JSON line must be an object with a \"prompt\" string");
      out.push_back(j["prompt"].get<std::string>());
    } else {
      out.push_back(line);
    }
  }
  if (out.empty()) fail("--prompts-file ", path, ": no prompts");
  return out;
}

/// Several prompts as one batch: each continuation printed when the batch is done.
int run_generate_many(const GenerateArgs& a, const std::vector<std::string>& texts) {
  auto tok = try_load_tokenizer(a.model);
  if (!tok) fail("generate: several prompts need a tokenizer in the model folder");
  model::Model m = model::Model::load(a.model, gguf_dtype(a.backend.backend));
  check_tokenizer_fits_model(*tok, m, a.model);
  BackendOptions bo = a.backend;
  bo.batch = a.batch > 0 ? a.batch : std::min<int>(int(texts.size()), 64);
  auto backend = make_backend(m, bo);
  std::vector<std::string> stops;
  for (const std::string& s : a.stops) stops.push_back(unescape(s));
  std::vector<engine::GenerateRequest> reqs(texts.size());
  std::vector<std::unique_ptr<engine::TextStream>> streams;
  const engine::SamplingParams sampling = resolve_sampling(a.sampling, m.generation);
  const std::vector<int32_t> eos = a.no_eos ? std::vector<int32_t>{} : eos_ids(m, tok.get());
  for (size_t i = 0; i < texts.size(); ++i) {
    reqs[i].prompt = tok->encode(texts[i]);
    if (reqs[i].prompt.empty()) fail("generate: prompt ", i + 1, " encodes to no tokens");
    check_ids_fit_model(reqs[i].prompt, m, a.model);
    program::check_prompt_fits(int64_t(reqs[i].prompt.size()), backend->max_context(), "generate");
    if (int64_t(reqs[i].prompt.size()) + a.max_tokens > backend->max_context())
      fail("generate: prompt ", i + 1, " (", reqs[i].prompt.size(), " tokens) + --max-tokens ", a.max_tokens,
           " do not fit the context of ", backend->max_context(), " tokens; lower --max-tokens or raise --context");
    reqs[i].max_tokens = a.max_tokens;
    reqs[i].sampling = sampling;
    reqs[i].eos_ids = eos;
    reqs[i].logprobs = a.logprobs;
    streams.push_back(std::make_unique<engine::TextStream>(*tok, stops, reqs[i].prompt));
  }
  // A sequence that hit a stop string keeps decoding with the others (its
  // text is cut there); the batch ends when every sequence has stopped.
  std::vector<bool> cut(texts.size(), false);
  auto results = backend->generate_batch(reqs, [&](int i, int32_t t) {
    if (!cut[size_t(i)]) {
      streams[size_t(i)]->push(t);
      if (streams[size_t(i)]->stopped()) cut[size_t(i)] = true;
    }
    return true;
  });
  for (size_t i = 0; i < texts.size(); ++i) {
    streams[i]->finish();
    const std::string reason = cut[i] ? "stop_string" : results[i].stop_reason;
    if (a.json) {
      nlohmann::json j;
      j["index"] = i;
      j["prompt_ids"] = reqs[i].prompt;
      j["output_ids"] = results[i].output;
      if (a.logprobs) j["output_logprobs"] = results[i].logprobs;
      j["text"] = streams[i]->text();
      j["stop_reason"] = reason;
      j["backend"] = std::string(backend->name());
      j["batch"] = backend->max_batch();
      j["timing"] = {{"prefill_ms", results[i].prefill_ms}, {"ms_per_token", results[i].decode_ms_per_token},
                     {"tokens", results[i].output.size()}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("--- [%zu] %s%s\n", i + 1, texts[i].c_str(), streams[i]->text().c_str());
      std::fprintf(stderr, "[%zu: %zu tokens, %s]\n", i + 1, results[i].output.size(), reason.c_str());
    }
  }
  if (!a.json && !results.empty())
    std::fprintf(stderr, "[%zu prompts, %d per launch on %s, %.2f ms/step]\n", texts.size(), backend->max_batch(),
                 std::string(backend->name()).c_str(), results[0].decode_ms_per_token);
  std::fflush(stdout);
  return 0;
}

int run_generate(const GenerateArgs& a) {
  auto tok = try_load_tokenizer(a.model);
  std::vector<int32_t> ids = prompt_ids(a.prompt, a.prompt_ids, tok.get());
  model::Model m = model::Model::load(a.model, gguf_dtype(a.backend.backend));
  if (tok) check_tokenizer_fits_model(*tok, m, a.model);
  check_ids_fit_model(ids, m, a.prompt_ids.empty() ? a.model : std::string("--prompt-ids"));
  auto backend = make_backend(m, a.backend);
  program::check_prompt_fits(int64_t(ids.size()), backend->max_context(), "generate");
  // The whole request must fit before anything runs (a sequence holds at most
  // max_context tokens: program::context_full).
  if (int64_t(ids.size()) + a.max_tokens > backend->max_context())
    fail("generate: the prompt (", ids.size(), " tokens) + --max-tokens ", a.max_tokens, " = ",
         int64_t(ids.size()) + a.max_tokens, " tokens do not fit the context of ", backend->max_context(),
         " tokens; lower --max-tokens or raise --context (at most max_position_embeddings = ", m.config.max_position,
         ")");
  if (!a.stops.empty() && !tok) fail("--stop needs a tokenizer in the model folder");

  engine::GenerateRequest req;
  req.prompt = ids;
  req.max_tokens = a.max_tokens;
  req.sampling = resolve_sampling(a.sampling, m.generation);
  if (!a.no_eos) req.eos_ids = eos_ids(m, tok.get());
  req.logprobs = a.logprobs;

  std::unique_ptr<engine::TextStream> stream;
  std::vector<std::string> stops;
  for (const std::string& s : a.stops) stops.push_back(unescape(s));
  if (tok) stream = std::make_unique<engine::TextStream>(*tok, stops, ids);
  bool stream_out = !a.json && tok;
  if (stream_out) {
    std::fputs(a.prompt_ids.empty() ? a.prompt.c_str() : tok->decode(ids, true).c_str(), stdout);
    std::fflush(stdout);
  }
  bool hit_stop = false;
  auto result = backend->generate(req, [&](int32_t t) {
    if (!stream) return true;
    std::string piece = stream->push(t);
    if (stream_out && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    if (stream->stopped()) hit_stop = true;
    return !stream->stopped();
  });
  std::string tail = stream ? stream->finish() : std::string();
  if (stream_out) {
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  std::string reason = hit_stop ? "stop_string" : result.stop_reason;
  if (a.json) {
    nlohmann::json j;
    j["prompt_ids"] = ids;
    j["output_ids"] = result.output;
    if (a.logprobs) j["output_logprobs"] = result.logprobs;
    j["text"] = stream ? stream->text() : std::string();
    j["stop_reason"] = reason;
    j["backend"] = std::string(backend->name());
    j["timing"] = {{"prefill_ms", result.prefill_ms}, {"ms_per_token", result.decode_ms_per_token},
                   {"tokens", result.output.size()}};
    std::printf("%s\n", j.dump().c_str());
  } else if (!tok) {
    // No tokenizer: print the ids.
    for (size_t i = 0; i < result.output.size(); ++i)
      std::printf("%s%d", i ? "," : "", result.output[i]);
    std::printf("\n");
  } else {
    std::fprintf(stderr, "[%zu tokens, prefill %.1f ms, %.2f ms/token, %s, %s]\n", result.output.size(),
                 result.prefill_ms, result.decode_ms_per_token, std::string(backend->name()).c_str(),
                 reason.c_str());
  }
  return 0;
}
}  // namespace

Command register_generate(CLI::App& root) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* c = root.add_subcommand("generate", "Generate a continuation of a prompt, streaming the text");
  c->add_option("--model", a->model, "Checkpoint folder (config.json, *.safetensors, tokenizer), GGUF file, or ollama:NAME[:TAG]")->required()->transform(model_source());
  auto* p = c->add_option("--prompt", a->prompts, "Prompt text (repeat for several prompts: they run as one batch)")
                ->allow_extra_args(false);
  auto* pi = c->add_option("--prompt-ids", a->prompt_ids, "Prompt as token ids, e.g. 1,2,3, or @FILE (ids separated by commas or white space)");
  auto* pf = c->add_option("--prompts-file", a->prompts_file,
                           "Prompts, one per line or JSON Lines {\"prompt\": ...}, run as one batch")
                 ->check(CLI::ExistingFile);
  p->excludes(pi);
  pf->excludes(pi);
  c->add_option("--batch", a->batch, "cpu/cuda: sequences per launch with several prompts (default: all of them, at most 64)")
      ->check(CLI::Range(1, 1024));
  c->add_option("--max-tokens", a->max_tokens, "Tokens to generate at most")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  c->add_option("--stop", a->stops, "Stop when this text appears (repeatable; \\n, \\t, \\r, \\\\ escapes)");
  c->add_flag("--ignore-eos", a->no_eos, "Do not stop at EOS tokens");
  c->add_flag("--json", a->json, "Print one JSON object (prompt_ids, output_ids, text, timing) instead of streaming");
  c->add_flag("--logprobs", a->logprobs,
              "With --json: output_logprobs, each generated token's log-probability (over the logits it was drawn "
              "from: after the repetition penalty and temperature, before top-k/top-p/min-p)")
      ->needs("--json");
  add_sampling_flags(*c, a->sampling);
  add_backend_flags(*c, a->backend);
  return {c, [a] {
            std::vector<std::string> texts = a->prompts;
            if (!a->prompts_file.empty())
              for (std::string& t : read_prompts_file(a->prompts_file)) texts.push_back(std::move(t));
            if (texts.empty() && a->prompt_ids.empty())
              fail("generate: give --prompt TEXT (repeatable), --prompts-file FILE or --prompt-ids 1,2,3");
            if (texts.size() > 1) return run_generate_many(*a, texts);
            GenerateArgs one = *a;
            if (!texts.empty()) one.prompt = texts[0];
            return run_generate(one);
          }};
}

}  // namespace keel::cli
