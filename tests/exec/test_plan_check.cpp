// The CUDA executor's check that a Program's device plan fits the device
// (exec/cuda/plan_check.h), without a GPU: facts of an H200-like device
// against Programs for that device, another SM count, a larger layout, a
// kernel whose static shared memory outgrew the reserve, too many CTAs, and
// weights stored in another dtype than the tiles were planned for.
#include <gtest/gtest.h>

#include <string>

#include "common/tiny_config.h"
#include "compiler/compiler.h"
#include "core/error.h"
#include "exec/cuda/plan_check.h"

namespace keel::exec::cuda {
namespace {

DeviceFacts h200() {
  DeviceFacts d;
  d.name = "NVIDIA H200 (device 0)";
  d.sms = 132;
  d.smem_per_block = 232448;
  d.static_smem = 5400;  // about what the kernel has today; the Program reserves 8 KiB
  d.max_ctas = 132;
  return d;
}

program::Program compile_for(const compiler::Target& t, int workers = 0) {
  compiler::CompileOptions o;
  o.target = t;
  o.workers = workers;
  o.max_context = 256;
  return compiler::compile(testing::tiny_config(model::Arch::Llama), o);
}

std::string fits_error(const program::Program& p, const DeviceFacts& d, bool fewer = false,
                       const program::DTypeOf& stored = {}) {
  try {
    check_program_fits(p, d, fewer, stored);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

TEST(PlanCheck, TheDevicesOwnTargetFits) {
  const program::Program p = compile_for(compiler::target_preset("h200"));
  EXPECT_EQ(target_mismatch(p, h200()), "");
  EXPECT_EQ(fits_error(p, h200()), "");
}

TEST(PlanCheck, AnotherSmCountIsNamed) {
  DeviceFacts pcie = h200();
  pcie.name = "NVIDIA H100 PCIe (device 0)";
  pcie.sms = 114;
  pcie.max_ctas = 114;
  const program::Program p = compile_for(compiler::target_preset("h200"));
  const std::string e = fits_error(p, pcie);
  EXPECT_NE(e.find("132 workers"), std::string::npos) << e;
  EXPECT_NE(e.find("target h200"), std::string::npos) << e;
  EXPECT_NE(e.find("114 SMs"), std::string::npos) << e;
  EXPECT_NE(e.find("recompile"), std::string::npos) << e;
  // Fewer workers than SMs: only when the caller allows it (tests run W = 1, 3, 7).
  const program::Program seven = compile_for(compiler::target_preset("h200"), 7);
  EXPECT_NE(target_mismatch(seven, h200()), "");
  EXPECT_EQ(target_mismatch(seven, h200(), true), "");
  EXPECT_NE(target_mismatch(compile_for(compiler::target_preset("h200"), 200), h200(), true), "");
}

TEST(PlanCheck, SharedMemoryAndCoResidency) {
  DeviceFacts small = h200();
  small.smem_per_block = 164 * 1024;  // an A100's opt-in limit
  const program::Program p = compile_for(compiler::target_preset("h200"));
  EXPECT_NE(target_mismatch(p, small).find("shared-memory layout"), std::string::npos) << target_mismatch(p, small);
  DeviceFacts grown = h200();
  grown.static_smem = 9000;  // the kernel's static variables outgrew the 8 KiB reserve
  EXPECT_NE(target_mismatch(p, grown).find("static shared memory"), std::string::npos);
  DeviceFacts crowded = h200();
  crowded.max_ctas = 66;
  EXPECT_NE(target_mismatch(p, crowded).find("co-resident"), std::string::npos);
}

TEST(PlanCheck, TilesMustFitTheStoredDtype) {
  const program::Program p = compile_for(compiler::target_preset("h200"));  // bf16 declared (tiny_config)
  // f32 weights double every row segment: the recorded rows per stage no longer fit.
  const std::string e = fits_error(p, h200(), false, [](int32_t) { return DType::F32; });
  EXPECT_NE(e.find("rows per ring stage"), std::string::npos) << e;
  EXPECT_NE(e.find("stored dtypes"), std::string::npos) << e;
  EXPECT_EQ(fits_error(p, h200(), false, [](int32_t) { return DType::BF16; }), "");
}

}  // namespace
}  // namespace keel::exec::cuda
