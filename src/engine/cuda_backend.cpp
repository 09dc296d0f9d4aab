// CudaBackend (see cuda_backend.h): compile for the device, then one
// megakernel launch per request.
#include "engine/cuda_backend.h"

#include <algorithm>
#include <cstdio>

#include "compiler/compiler.h"
#include "core/error.h"
#include "engine/program_backend.h"
#include "engine/paged_launch.h"
#include "exec/cuda/device_info.h"
#include "exec/cuda/plan_check.h"
#include "program/smem_plan.h"

namespace keel::engine {

using exec::cuda::ProgramExecutor;
using exec::cuda::ProgramExecutorOptions;

CudaBackend::CudaBackend(const model::Model& m, const CudaBackendOptions& opt) {
  const auto gpus = exec::cuda::list_gpus();
  KEEL_CHECK(opt.device >= 0 && size_t(opt.device) < gpus.size(), "cuda backend: no CUDA device ", opt.device,
             " (", gpus.size(), " found)");
  model::ModelConfig cfg = m.config;
  cfg.dtype = m.weight_dtype;  // plan the tiles for the stored weights (config.json may declare another dtype)
  compiler::CompileOptions co;
  co.target = opt.target ? *opt.target : exec::cuda::device_target(opt.device);
  co.batch = std::max(1, opt.batch);
  co.max_context = int(opt.max_context);
  // (and a page for a launch's idle lanes, so a sequence of a whole context always fits)
  co.kv_pages = opt.kv_tokens > 0 ? kv_pages_of_tokens(opt.kv_tokens, co.page_size) + (co.batch > 1 ? 1 : 0) : 0;
  program::Program p = compiler::compile(cfg, co);
  KEEL_CHECK(opt.kv_tokens == 0 || opt.kv_tokens >= p.h.max_context, "cuda backend: a KV cache of ", opt.kv_tokens,
             " tokens holds less than one context of ", p.h.max_context);
  const std::string why = exec::cuda::target_mismatch(p, exec::cuda::device_facts(opt.device));
  if (!why.empty()) {
    // Same options, this device's target (and its SM count as workers).
    compiler::CompileOptions again = compiler::options_of(p);
    again.target = exec::cuda::device_target(opt.device);
    again.workers = 0;
    std::fprintf(stderr, "cuda backend: %s; recompiling with the same options for target %s\n", why.c_str(),
                 again.target.name.c_str());
    p = compiler::compile(cfg, again);
    recompiled_ = true;
  }
  ProgramExecutorOptions eo;
  eo.device = opt.device;
  eo.watchdog_s = opt.watchdog_s;
  exec_ = std::make_unique<ProgramExecutor>(p, m, eo);
  pages_ = std::make_unique<KvPagePool>(p.h.n_pages, p.h.page_size, p.h.pages_per_seq);
  prefix_reuse_ = opt.prefix_reuse;
  // The target itself, not the decode Program's plan of it (its ring for its
  // batch): the other Programs plan their own.
  const compiler::Target target = recompiled_ ? exec::cuda::device_target(opt.device) : co.target;
  // Decode Programs of fewer sequences or positions on the same weights and
  // cache (decode_variants); one that does not fit the device is left out.
  {
    compiler::CompileOptions so = compiler::options_of(p);
    so.target = target;
    so.attn_chunks = 0;
    for (program::Program& q : decode_variants(cfg, p, so, opt.small_batches)) {
      const int b = q.h.batch;
      const int64_t ctx = q.h.max_context;
      try {
        small_.push_back(std::make_unique<ProgramExecutor>(std::move(q), *exec_, eo, true));
        small_ptrs_.push_back(small_.back().get());
      } catch (const Error& e) {
        std::fprintf(stderr, "cuda backend: no decode Program of %d sequences and %lld positions (%s); its launches "
                     "run on the next\n", b, (long long)ctx, e.what());
      }
    }
  }
  // The prefill Program: the same options, T lanes of one sequence (fewer
  // than the context holds), on the same weights and KV cache. Without it
  // (it does not compile or fit) prompts run as decode steps, said on stderr.
  const int chunk = std::min<int>(opt.prefill_chunk, p.h.max_context - 1);
  if (chunk > 1) {
    compiler::CompileOptions po = compiler::options_of(p);
    po.target = target;  // (the prefill Program takes the target's wide batch ring)
    po.batch = 1;
    po.prefill_chunk = chunk;
    po.attn_chunks = 0;
    po.kv_sequences = 0;
    po.kv_pages = p.h.n_pages;  // the decode Program's cache, shared
    try {
      prefill_ = std::make_unique<ProgramExecutor>(compiler::compile(cfg, po), *exec_, eo, true);
    } catch (const Error& e) {
      std::fprintf(stderr, "cuda backend: no prefill Program of %d lanes (%s); prompts run one position a step\n",
                   chunk, e.what());
    }
    // The mixed Program: the decode Program's lanes beside a prefill group,
    // so a prompt joining a running batch is prefilled while the others
    // decode (engine/paged_launch.h). Without it the others wait.
    const int lanes = std::min<int>(opt.mixed_prefill >= 0 ? opt.mixed_prefill
                                                           : compiler::mixed_prefill_lanes(
                                                                 p.h.batch, std::min(chunk, opt.kMixedStepLanes)),
                                    p.h.max_context - 1);
    if (prefill_ && lanes > 1 && p.h.batch > 1) {
      po.decode_lanes = p.h.batch;
      po.prefill_chunk = lanes;
      try {
        mixed_ = std::make_unique<ProgramExecutor>(compiler::compile(cfg, po), *exec_, eo, true);
      } catch (const Error& e) {
        std::fprintf(stderr, "cuda backend: no mixed Program of %d decode and %d prefill lanes (%s); a prompt "
                     "joining a batch is prefilled while the others wait\n", p.h.batch, lanes, e.what());
      }
    }
  }
}

CudaBackend::~CudaBackend() = default;

int64_t CudaBackend::max_context() const { return exec_->program().h.max_context; }

exec::RunResult CudaBackend::run(std::vector<exec::Sequence>& seqs, const exec::RunOptions& ro) {
  return run_paged<ProgramExecutor>(*exec_, prefill_.get(), mixed_.get(), small_ptrs_, *pages_, prefix_reuse_, seqs,
                                   ro);
}

std::vector<int> CudaBackend::small_batches() const {
  std::vector<int> b;
  for (const auto& e : small_)
    if (e->program().h.batch < max_batch() && std::find(b.begin(), b.end(), e->program().h.batch) == b.end())
      b.push_back(e->program().h.batch);
  return b;
}

std::vector<Backend::DecodeProgram> CudaBackend::decode_programs() const {
  std::vector<DecodeProgram> d;
  for (const auto& e : small_) d.push_back({e->program().h.batch, e->program().h.max_context});
  d.push_back({max_batch(), max_context()});
  return d;
}

int64_t CudaBackend::vocab() const { return exec_->program().h.vocab; }

int CudaBackend::max_batch() const { return exec_->program().h.batch; }

}  // namespace keel::engine
