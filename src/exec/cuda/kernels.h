// Host-callable launchers for the CUDA executor's kernels (implemented in
// megakernel.cu and random_weights.cu). Plain host header: streams are passed
// as void* (a cudaStream_t), so executor.cpp needs no device code. Every
// launcher checks the launch and throws keel::Error on failure.
#pragma once

#include <cstddef>
#include <cstdint>

#include "exec/cuda/layout.h"

namespace keel::exec::cuda {

/// Static shared memory the kernel uses besides the dynamic ring + act buffer.
constexpr size_t kStaticSmemReserve = 2048;
constexpr int kKernelThreads = 288;  // 8 compute warps + 1 loader warp
constexpr int kMaxRingStages = 16;

/// Enables the dynamic shared memory size on both kernels and returns how many
/// blocks of the persistent kernel fit per SM at that size.
int prepare_kernels(size_t dyn_smem);

/// The persistent megakernel (cooperative launch: all CTAs co-resident).
void launch_megakernel(const Params& p, int grid, size_t dyn_smem, void* stream);
/// One stage of one step (per-op mode): runs the CTAs' tasks with task.stage == stage.
void launch_stage(const Params& p, int grid, size_t dyn_smem, int stage, void* stream);
/// x = embedding(token) (fp32).
void launch_embed(const DevModel& m, float* x, int token, void* stream);

/// Fills a matrix [rows x ld] of bf16 with uniform values in [-scale, scale)
/// (columns >= k zero), from a counter-based hash of (seed, index).
void fill_random_bf16(uint16_t* p, size_t rows, size_t ld, size_t k, float scale, uint64_t seed,
                      void* stream);
/// Fills n floats with center + uniform[-scale, scale).
void fill_random_f32(float* p, size_t n, float center, float scale, uint64_t seed, void* stream);

}  // namespace keel::exec::cuda
