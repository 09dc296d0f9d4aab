// CpuBackend: maps engine requests onto CpuExecutor runs. score() feeds the ids
// as a prompt and captures the logits of every position (prefill steps).
#include "engine/cpu_backend.h"

#include <algorithm>

#include "compiler/compiler.h"
#include "core/error.h"
#include "engine/program_backend.h"
#include "engine/paged_launch.h"

namespace keel::engine {

CpuBackend::CpuBackend(const model::Model& m, const CpuBackendOptions& opt) : model_(m), opt_(opt) {
  compiler::CompileOptions co;
  co.workers = opt.workers;
  co.batch = std::max(1, opt.batch);
  co.max_context = int(opt.max_context);
  // No k-slices: the CPU executor adds a matvec's k-slices into the fp32
  // residual in the order its threads finish them, so the same prompt could
  // decode to other greedy tokens run to run (fp32 addition is not
  // associative). The workers have rows enough without them.
  co.o_split_k = 1;
  co.down_split_k = 1;
  // (and a page for a launch's idle lanes, so a sequence of a whole context always fits)
  co.kv_pages = opt.kv_tokens > 0 ? kv_pages_of_tokens(opt.kv_tokens, co.page_size) + (co.batch > 1 ? 1 : 0) : 0;
  program_ = compiler::compile(m.config, co);
  KEEL_CHECK(opt.kv_tokens == 0 || opt.kv_tokens >= program_.h.max_context, "cpu backend: a KV cache of ",
             opt.kv_tokens, " tokens holds less than one context of ", program_.h.max_context);
  exec_ = std::make_unique<exec::cpu::CpuExecutor>(program_, m);
  pages_ = std::make_unique<KvPagePool>(program_.h.n_pages, program_.h.page_size, program_.h.pages_per_seq);
  prefix_reuse_ = opt.prefix_reuse;
  // Decode Programs of fewer sequences or positions on the same cache (decode_variants).
  for (program::Program& q : decode_variants(m.config, program_, co, opt.small_batches)) {
    small_programs_.push_back(std::make_unique<program::Program>(std::move(q)));
    small_.push_back(std::make_unique<exec::cpu::CpuExecutor>(*small_programs_.back(), m, exec_.get()));
    small_ptrs_.push_back(small_.back().get());
  }
  if (std::min<int64_t>(opt.prefill_chunk, program_.h.max_context - 1) > 1) {
    co.kv_pages = program_.h.n_pages;  // the decode Program's cache, shared
    co.batch = 1;
    co.prefill_chunk = int(std::min<int64_t>(opt.prefill_chunk, program_.h.max_context - 1));
    prefill_program_ = compiler::compile(m.config, co);
    prefill_ = std::make_unique<exec::cpu::CpuExecutor>(prefill_program_, m, exec_.get());
    const int lanes = opt.mixed_prefill >= 0 ? opt.mixed_prefill
                                             : compiler::mixed_prefill_lanes(program_.h.batch, co.prefill_chunk);
    if (lanes > 1 && program_.h.batch > 1) {
      co.decode_lanes = program_.h.batch;
      co.prefill_chunk = int(std::min<int64_t>(lanes, program_.h.max_context - 1));
      mixed_program_ = compiler::compile(m.config, co);
      mixed_ = std::make_unique<exec::cpu::CpuExecutor>(mixed_program_, m, exec_.get());
    }
  }
}

exec::RunResult CpuBackend::run(std::vector<exec::Sequence>& seqs, const exec::RunOptions& ro) {
  exec::RunOptions o = ro;
  o.threads = opt_.threads;
  o.shuffle = opt_.shuffle;
  o.shuffle_seed = opt_.shuffle_seed;
  return run_paged<exec::cpu::CpuExecutor>(*exec_, prefill_.get(), mixed_.get(), small_ptrs_, *pages_, prefix_reuse_,
                                          seqs, o);
}

std::vector<int> CpuBackend::small_batches() const {
  std::vector<int> b;
  for (const auto& p : small_programs_)
    if (p->h.batch < program_.h.batch && std::find(b.begin(), b.end(), p->h.batch) == b.end()) b.push_back(p->h.batch);
  return b;
}

std::vector<Backend::DecodeProgram> CpuBackend::decode_programs() const {
  std::vector<DecodeProgram> d;
  for (const auto& p : small_programs_) d.push_back({p->h.batch, p->h.max_context});
  d.push_back({program_.h.batch, program_.h.max_context});
  return d;
}

}  // namespace keel::engine
