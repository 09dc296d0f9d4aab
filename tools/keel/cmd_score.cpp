// `keel score` (teacher-forced logits of a token sequence, saved as one F32
// safetensors tensor `logits` [T, V]) and `keel perplexity` (mean negative
// log-likelihood of a text file under the model, in context-sized windows).
#include <cmath>
#include <cstdio>

#include "cli_common.h"
#include "model_source.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "model/safetensors.h"
#include "program/rules.h"

namespace keel::cli {

namespace {
struct ScoreArgs {
  std::string model, ids, out;
  BackendOptions backend;
};

int run_score(const ScoreArgs& a) {
  std::vector<int32_t> ids = parse_ids(a.ids, "--ids");
  KEEL_CHECK(!ids.empty(), "--ids: no token ids given");
  model::Model m = model::Model::load(a.model, gguf_dtype(a.backend.backend));
  for (int32_t id : ids)
    KEEL_CHECK(id < m.config.vocab, "--ids: token id ", id, " is outside the vocabulary (", m.config.vocab, ")");
  auto backend = make_backend(m, a.backend);
  program::check_prompt_fits(int64_t(ids.size()), backend->max_context(), "--ids");
  std::vector<float> logits = backend->score(ids);
  int64_t T = int64_t(ids.size()), V = m.config.vocab;
  KEEL_CHECK(int64_t(logits.size()) == T * V, "backend returned ", logits.size(), " logits, expected ", T * V);
  model::write_safetensors_f32(a.out, {{"logits", {T, V}}}, {logits.data()});
  std::fprintf(stderr, "wrote logits [%lld, %lld] to %s\n", (long long)T, (long long)V, a.out.c_str());
  return 0;
}

struct PplArgs {
  std::string model, file;
  BackendOptions backend;
};

int run_perplexity(const PplArgs& a) {
  auto tok = try_load_tokenizer(a.model);
  if (!tok) fail("perplexity needs a tokenizer in ", a.model);
  std::string text = read_text_file(a.file);
  std::vector<int32_t> ids = tok->encode(text, true);
  KEEL_CHECK(ids.size() >= 2, a.file, ": too little text to score (", ids.size(), " tokens)");
  model::Model m = model::Model::load(a.model, gguf_dtype(a.backend.backend));
  check_tokenizer_fits_model(*tok, m, a.model);
  check_ids_fit_model(ids, m, a.model);
  auto backend = make_backend(m, a.backend);
  const size_t window = size_t(backend->max_context());
  // A window of one token predicts nothing: the mean would be 0 / 0.
  KEEL_CHECK(window >= 2, "--context: perplexity needs windows of at least 2 tokens, got ", window);
  const int64_t V = m.config.vocab;
  double nll = 0;
  size_t counted = 0;
  // Non-overlapping windows: each token after a window's first is predicted
  // from the tokens before it in that window.
  for (size_t start = 0; start + 1 < ids.size(); start += window) {
    size_t end = std::min(ids.size(), start + window);
    std::span<const int32_t> chunk(ids.data() + start, end - start);
    std::vector<float> logits = backend->score(chunk);
    for (size_t t = 0; t + 1 < chunk.size(); ++t) {
      const float* row = logits.data() + t * V;
      float mx = row[0];
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, row[v]);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
      nll += (std::log(sum) + mx) - row[chunk[t + 1]];
      ++counted;
    }
    std::fprintf(stderr, "\rscored %zu / %zu tokens", end, ids.size());
  }
  std::fprintf(stderr, "\n");
  double mean = nll / double(counted);
  std::printf("tokens %zu  mean NLL %.4f nats  perplexity %.3f\n", counted, mean, std::exp(mean));
  return 0;
}
}  // namespace

Command register_score(CLI::App& root) {
  auto a = std::make_shared<ScoreArgs>();
  CLI::App* c = root.add_subcommand("score", "Teacher-forced logits for a token sequence, saved as safetensors");
  c->add_option("--model", a->model, "Checkpoint folder or GGUF file (or ollama:NAME[:TAG])")->required()->transform(model_source());
  c->add_option("--ids", a->ids, "Token ids, e.g. 1,2,3, or @FILE (ids separated by commas or white space)")->required();
  c->add_option("--out", a->out, "Output .safetensors file (tensor `logits`, F32 [T, V])")->required();
  add_backend_flags(*c, a->backend);
  return {c, [a] { return run_score(*a); }};
}

Command register_perplexity(CLI::App& root) {
  auto a = std::make_shared<PplArgs>();
  CLI::App* c = root.add_subcommand("perplexity", "Perplexity of a text file under the model");
  c->add_option("--model", a->model, "Checkpoint folder or GGUF file (or ollama:NAME[:TAG])")->required()->transform(model_source());
  c->add_option("--file", a->file, "Text file")->required()->check(CLI::ExistingFile);
  add_backend_flags(*c, a->backend);
  return {c, [a] { return run_perplexity(*a); }};
}

}  // namespace keel::cli
