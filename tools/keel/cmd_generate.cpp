// `keel generate`: prompt in, streamed continuation out (or one JSON object with
// --json). Works on any backend; the default is the fp32 reference forward pass.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "model_source.h"
#include "core/error.h"
#include "program/rules.h"
#include "engine/text_stream.h"

namespace keel::cli {

namespace {
struct GenerateArgs {
  std::string model, prompt, prompt_ids;
  int32_t max_tokens = 256;
  bool json = false, no_eos = false;
  std::vector<std::string> stops;
  SamplingFlags sampling;
  BackendOptions backend;
};

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
  auto* p = c->add_option("--prompt", a->prompt, "Prompt text");
  auto* pi = c->add_option("--prompt-ids", a->prompt_ids, "Prompt as token ids, e.g. 1,2,3");
  p->excludes(pi);
  c->add_option("--max-tokens", a->max_tokens, "Tokens to generate at most")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  c->add_option("--stop", a->stops, "Stop when this text appears (repeatable; \\n, \\t, \\r, \\\\ escapes)");
  c->add_flag("--ignore-eos", a->no_eos, "Do not stop at EOS tokens");
  c->add_flag("--json", a->json, "Print one JSON object (prompt_ids, output_ids, text, timing) instead of streaming");
  add_sampling_flags(*c, a->sampling);
  add_backend_flags(*c, a->backend);
  return {c, [a] {
            if (a->prompt.empty() && a->prompt_ids.empty()) fail("generate: give --prompt TEXT or --prompt-ids 1,2,3");
            return run_generate(*a);
          }};
}

}  // namespace keel::cli
