// CpuBackend: maps engine requests onto CpuExecutor runs. score() feeds the ids
// as a prompt and captures the logits of every position (prefill steps).
#include "exec/cpu/cpu_backend.h"

#include "core/error.h"

namespace keel::exec::cpu {

CpuBackend::CpuBackend(const model::Model& m, const CpuBackendOptions& opt) : model_(m), opt_(opt) {
  compiler::CompileOptions co;
  co.workers = opt.workers;
  co.batch = 1;
  co.max_context = int(opt.max_context);
  program_ = compiler::compile(m.config, co);
  exec_ = std::make_unique<CpuExecutor>(program_, m);
}

Sequence sequence_for(const engine::GenerateRequest& req, int64_t max_context, const char* who) {
  KEEL_CHECK(!req.prompt.empty(), who, ": empty prompt");
  KEEL_CHECK(int64_t(req.prompt.size()) <= max_context, who, ": prompt of ", req.prompt.size(),
             " tokens exceeds the context of ", max_context);
  KEEL_CHECK(req.max_tokens >= 1, who, ": max_tokens must be >= 1");
  KEEL_CHECK(req.eos_ids.size() <= size_t(program::kMaxEos), who, ": at most ", program::kMaxEos, " eos ids");
  Sequence s;
  s.prompt = req.prompt;
  s.max_new = req.max_tokens;
  s.sampling = req.sampling;
  return s;
}

engine::GenerateResult result_of(const RunResult& r, bool stopped) {
  engine::GenerateResult g;
  g.output = r.seqs[0].tokens;
  g.prefill_ms = r.first_token_ms;
  const size_t n = g.output.size();
  g.decode_ms_per_token = n > 1 ? (r.ms - r.first_token_ms) / double(n - 1) : 0;
  switch (r.seqs[0].stop) {
    case program::StopReason::Eos: g.stop_reason = "eos"; break;
    case program::StopReason::Context: g.stop_reason = "context"; break;
    case program::StopReason::Stopped: g.stop_reason = "stopped"; break;
    default: g.stop_reason = stopped ? "stopped" : "max_tokens";
  }
  return g;
}

RunOptions run_options_for(const engine::GenerateRequest& req, const engine::TokenCallback& on_token, bool* stopped) {
  RunOptions ro;
  ro.eos_ids = req.eos_ids;
  if (on_token)
    ro.on_token = [on_token, stopped](int, int32_t tok) {
      if (!on_token(tok)) *stopped = true;
      return !*stopped;
    };
  return ro;
}

engine::GenerateResult CpuBackend::generate(const engine::GenerateRequest& req, const engine::TokenCallback& on_token) {
  const Sequence s = sequence_for(req, max_context(), "cpu backend");
  bool stopped = false;
  RunOptions ro = run_options_for(req, on_token, &stopped);
  ro.threads = opt_.threads;
  ro.shuffle = opt_.shuffle;
  ro.shuffle_seed = opt_.shuffle_seed;
  return result_of(exec_->run({s}, ro), stopped);
}

std::vector<float> CpuBackend::score(std::span<const int32_t> ids) {
  KEEL_CHECK(!ids.empty(), "cpu backend: score needs at least one token");
  KEEL_CHECK(int64_t(ids.size()) <= max_context(), "cpu backend: ", ids.size(), " tokens exceed the context of ",
             max_context());
  Sequence s;
  s.prompt.assign(ids.begin(), ids.end());
  s.max_new = 1;
  RunOptions ro;
  ro.threads = opt_.threads;
  ro.shuffle = opt_.shuffle;
  ro.shuffle_seed = opt_.shuffle_seed;
  ro.capture_logits = true;
  RunResult r = exec_->run({s}, ro);
  KEEL_CHECK(r.seqs[0].logits.size() == ids.size() * size_t(program_.h.vocab),
             "cpu backend: captured ", r.seqs[0].logits.size() / size_t(program_.h.vocab), " logit rows for ", ids.size(),
             " tokens");
  return std::move(r.seqs[0].logits);
}

}  // namespace keel::exec::cpu
