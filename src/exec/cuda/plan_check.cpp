// plan_check.h: does a Program's device plan fit this device?
#include "exec/cuda/plan_check.h"

#include "core/error.h"

namespace keel::exec::cuda {

std::string target_mismatch(const program::Program& p, const DeviceFacts& d, bool allow_fewer_workers) {
  const program::ProgramHeader& h = p.h;
  const program::TargetDesc& t = h.target;
  const std::string target = cat("target ", program::target_name(h), " (", t.sms, " SMs, ", t.smem_per_block,
                                 " bytes of shared memory per block)");
  if (h.n_workers != d.sms && !(allow_fewer_workers && h.n_workers < d.sms))
    return cat("the Program has ", h.n_workers, " workers (", target, ") but ", d.name, " has ", d.sms, " SMs");
  if (d.static_smem > t.static_smem)
    return cat("the kernel's static shared memory (", d.static_smem, " bytes) exceeds the ", t.static_smem,
               " bytes the Program reserves for it (", target, ")");
  const uint64_t need = uint64_t(t.static_smem) + t.dynamic_smem;
  if (need > d.smem_per_block)
    return cat("the Program's shared-memory layout needs ", need, " bytes per block (", t.n_stages, " x ",
               t.stage_bytes, " ring + ", t.work_bytes, " work area + ", t.static_smem, " static; ", target,
               ") but ", d.name, " allows ", d.smem_per_block);
  if (d.max_ctas > 0 && h.n_workers > d.max_ctas)
    return cat("the Program has ", h.n_workers, " workers but only ", d.max_ctas, " CTAs can be co-resident on ",
               d.name, " (", d.sms, " SMs)");
  return {};
}

void check_program_fits(const program::Program& p, const DeviceFacts& d, bool allow_fewer_workers,
                        const program::DTypeOf& stored) {
  const std::string why = target_mismatch(p, d, allow_fewer_workers);
  KEEL_CHECK(why.empty(), "cuda program executor: ", why,
             "; recompile the Program for this device (keel compile --target auto, or the device's preset)");
  try {
    program::check_plan(p, stored);
  } catch (const Error& e) {
    fail("cuda program executor: ", e.what());
  }
}

}  // namespace keel::exec::cuda
