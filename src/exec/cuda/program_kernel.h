// The interface between the ProgramExecutor's host code (program_executor.cpp)
// and its persistent kernel (program_kernel.cu): the kernel parameter block
// DevProgram (device addresses of the uploaded Program arrays and arenas), the
// status records the kernel leaves for the host, and the launchers. Host
// header (CUDA runtime API only, no device code).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "program/program.h"
#include "program/smem_plan.h"

namespace keel::exec::cuda::prog {

inline constexpr int kThreads = 256;          // compute threads per CTA (8 warps); every task runs on these
// + a third warpgroup: the loader warp (8), the signaller warp (9) and two idle
// warps; that warpgroup gives its registers to the compute warpgroups (setmaxnreg)
inline constexpr int kBlockThreads = kThreads + 128;
inline constexpr int kMaxHeadDim = 256;       // attention keeps head_dim/32 floats per lane in registers
inline constexpr int kMaxRingStages = 8;
inline constexpr int kTraceWords = 8;

/// Device-side errors (DevStatus::error); the host turns them into keel::Error.
enum DevError : int32_t {
  kErrNone = 0,
  kErrTimeout = 1,    // a wait saw no progress for the watchdog deadline
  kErrBadPage = 2,    // page table entry out of range
  kErrBadToken = 3,   // a Step chose a token outside the vocabulary
  kErrBadOpcode = 4,
  kErrHeadDim = 5,    // head_dim > kMaxHeadDim
  kErrSmemAlign = 6,  // the ring does not start 1024-byte aligned (batch kernel's TMA boxes)
  kErrMmTile = 7,     // a matmul tile taller than kMmRows reached the mma.sync engine (a kernel variant without wgmma), or a wide tile the fragment epilogue cannot serve
};

/// Per-CTA state, written when the CTA stops (normally or not), for the
/// watchdog report.
struct CtaState {
  int32_t step = 0, list_pos = 0, task = -1;
  int32_t reason = 0;          // 0 running, 1 finished, 2 timed out waiting, 3 left on abort, 4 task error
  uint32_t counter = 0, target = 0, value = 0;
  int32_t reserved = 0;
};

struct DevStatus {
  int32_t error = 0;           // DevError, first one wins
  int32_t task = -1;           // task that raised it
  int32_t detail = 0;          // e.g. the bad page or token
  int32_t cta = -1;
};

/// The weight bytes a matvec task streams through the ring (program_tasks.cuh
/// weight_tile()): rows [row0, row1) of one matrix (two for GateUp: gate then up
/// in each stage), each row a segment of `seg` bytes `stride` bytes after the
/// previous; cap rows per ring stage (the Program's program::stage_rows()), 0
/// when the task does not use the ring. A matmul tile (the Program's
/// program::stage_cols() > 0; batch kernel) has `seg` = one column chunk of a
/// row and streams each block of cap rows as DevProgram::tile_chunks[entry]
/// chunks, each stage in TMA panels (program/smem_plan.h). (The chunk count is kept out of this record:
/// a bit field here cost the decode kernel registers.) One per worker-list entry,
/// computed on the device at setup, so neither the loader nor the compute warps
/// chase descriptor and buffer-table pointers between tasks. (A matmul tile's
/// stage layout is program/smem_plan.h's; its copies are MmSource's.)
struct alignas(16) TileDesc {
  const uint8_t* base[2];  // row row0's first streamed byte in each matrix
  uint32_t stride;
  uint32_t seg;
  int32_t rows;
  int16_t cap;
  uint8_t nmat;
  uint8_t dt;              // DType of the weights
};
static_assert(sizeof(TileDesc) == 32);

/// Where the batch kernel's loader copies a matmul tile from (one per
/// worker-list entry with column chunks): TMA tensor maps (CUtensorMap, in
/// global memory, made on the host by the executor) over each matrix, with
/// boxes of program::kMmBoxCols columns x the tile's stage_rows() rows (a full
/// row block) or x 16 rows (the last, shorter block, in pieces of 16 rows),
/// and the tile's first row and column in the matrices.
struct alignas(16) MmSource {
  const void* full[2] = {nullptr, nullptr};
  const void* part[2] = {nullptr, nullptr};
  int32_t row0 = 0, col0 = 0;
  int32_t reserved[2] = {0, 0};
};
static_assert(sizeof(MmSource) == 48);

/// Everything a task and the kernel need, passed by value as the kernel parameter.
struct DevProgram {
  program::ProgramHeader h;
  const program::TaskDesc* tasks = nullptr;
  const program::WaitDesc* waits = nullptr;
  const uint32_t* signals = nullptr;
  const uint32_t* worker_offsets = nullptr;
  const uint32_t* worker_tasks = nullptr;
  uint8_t* const* ptr = nullptr;     // per buffer id: device address (weights: the uploaded tensor)
  const uint8_t* dtype = nullptr;    // per buffer id: DType (weights: the stored dtype)
  const int64_t* cols = nullptr;     // per buffer id: BufferDesc::cols
  uint32_t* counters = nullptr;
  DevStatus* status = nullptr;
  CtaState* cta = nullptr;           // [n_workers]
  uint32_t* abort = nullptr;         // non-zero: every CTA leaves
  int32_t* host_ring = nullptr;      // mapped pinned [B * ring_len]: tokens as produced
  int32_t* host_count = nullptr;     // mapped pinned [B]: tokens published per sequence
  float* host_logprob = nullptr;     // mapped pinned [B * ring_len]: the tokens' log-probabilities (SeqState::want_logprob)
  float* capture = nullptr;          // optional [B, max_context, V]: logits per processed position
  int32_t* capture_rows = nullptr;   // [B]: rows captured
  uint64_t timeout_ns = 0;
  // Weight ring (DESIGN invariant 6): the loader warp streams every weight tile of the
  // CTA's tasks into n_stages stages of stage_bytes (0 stages: tasks read weights from
  // global memory directly).
  // All five are the Program's (ProgramHeader::target).
  int32_t n_stages = 0;
  uint32_t stage_bytes = 0;
  uint32_t work_bytes = 0;           // dynamic shared memory after the ring (activations, attention)
  int32_t l2_hint = 1;               // weights stream with an L2 evict-first hint
  uint32_t max_inflight = 0;         // the loader keeps at most this many stages in flight (0: n_stages)
  int32_t loader_hold = 0;           // 1: the loader holds (hold_done / hold_pending); 0: never
  // Per worker-list entry (same index as worker_tasks): the task's first two waits,
  // derived from the Program at upload so the next task's waits are prefetched.
  const uint4* wait_pre = nullptr;   // [n_worker_entries][2]: (counter, expected, offset, n_waits)
  // Per worker and operator: (first position in the worker's list, count) of
  // that operator's tasks, contiguous in the list (per-op launches).
  const uint2* op_range = nullptr;   // [n_workers][n_ops]
  const TileDesc* tiles = nullptr;   // [n_worker_entries] (null until built)
  // [n_worker_entries] batch kernel: column chunks per row block of a matmul
  // tile ((k1 - k0) / stage_cols), 0 for whole row segments.
  const uint8_t* tile_chunks = nullptr;
  // Optional timing (bench, --trace).
  uint64_t* step_ns = nullptr;       // [max steps]: CTA 0's globaltimer when step s passes its gate
  int32_t step_ns_cap = 0;
  // [n_workers][trace_cap][kTraceWords]: (list_pos | step << 32, start, waited, prep, first, end, ran, last stage landed):
  // prep = the task's input vector is ready, first = its first ring stage has landed
  // (attention: q epilogue done, positions done; 0 for other tasks without a ring tile).
  uint64_t* trace = nullptr;
  int32_t trace_cap = 0;
  // [n_worker_entries] batch kernel: the TMA sources of each matmul tile
  // (entries without column chunks: zeros). Last, so the decode kernel's
  // parameter offsets stay what they were.
  const MmSource* mm_src = nullptr;
  // Run the long-context variant of the kernel (its attention streams the
  // positions past the prefetch; set per launch by the executor from
  // ops::Attention::streams). Last, like mm_src.
  int32_t attn_stream = 0;
};



// The persistent kernel is compiled four times from one source
// (program_kernel.cu): the decode variant (tasks of one sequence: matvecs) and
// the batch variant (program_kernel_batch.cu: also the tensor-core matmul
// tiles and the rms_norm opcode of Programs with several sequences), each also
// as a long-context variant with attention's streaming path, attn_stream
// (program_kernel_long.cu, program_kernel_batch_long.cu). A Program of batch 1
// runs on a decode variant, any other on a batch variant; the long-context one
// when the launch reaches positions where an attention chunk holds more than
// its prefetch (DevProgram::attn_stream, from ops::Attention::streams): the
// streaming path's registers change the whole kernel's allocation, which costs
// short contexts 1-4%, so it is compiled in only where it runs. A variant and
// its long-context twin compute the same values where the prefetch holds every
// position. The functions below pick by the DevProgram (kernel_variant); each
// variant's own are in its namespace.
#define KEEL_KERNEL_VARIANT_API                                                  \
  size_t static_smem_bytes();                                                  \
  int max_coresident_ctas(int device, size_t smem);                            \
  void launch_program(const DevProgram& P, size_t smem, cudaStream_t stream);  \
  void build_tile_table(const DevProgram& P, TileDesc* tiles, cudaStream_t stream); \
  void launch_op(const DevProgram& P, int op, size_t smem, cudaStream_t stream); \
  void launch_single_task(const DevProgram& P, uint32_t task, size_t smem, cudaStream_t stream);
namespace decode_kernel {
KEEL_KERNEL_VARIANT_API
}
namespace decode_long_kernel {
KEEL_KERNEL_VARIANT_API
}
namespace batch_kernel {
KEEL_KERNEL_VARIANT_API
}
namespace batch_long_kernel {
KEEL_KERNEL_VARIANT_API
}
namespace wide_kernel {
KEEL_KERNEL_VARIANT_API
}
#undef KEEL_KERNEL_VARIANT_API

/// Whether a Program runs on the batch variant of the kernel (several sequences).
inline bool batch_variant(const program::ProgramHeader& h) { return h.batch > 1; }

/// The fifth variant, wide (program_kernel_wide.cu): the long batch variant
/// with the wide matmul tiles of Programs whose tasks multiply a stage by more
/// than 64 tokens (program::mm_wide): larger wgmma accumulators, which the
/// other variants' register allocation does not carry.
enum class KernelVariant { Decode, DecodeLong, Batch, BatchLong, Wide };
inline KernelVariant kernel_variant(bool batch, bool long_context, bool wide = false) {
  return wide    ? KernelVariant::Wide
         : batch ? (long_context ? KernelVariant::BatchLong : KernelVariant::Batch)
                 : (long_context ? KernelVariant::DecodeLong : KernelVariant::Decode);
}
inline KernelVariant kernel_variant(const DevProgram& P) {
  return kernel_variant(batch_variant(P.h), P.attn_stream, program::mm_wide(P.h));
}
inline const char* kernel_variant_name(KernelVariant v) {
  switch (v) {
    case KernelVariant::Decode: return "decode";
    case KernelVariant::DecodeLong: return "decode_long";
    case KernelVariant::Batch: return "batch";
    case KernelVariant::Wide: return "wide";
    default: return "batch_long";
  }
}

#define KEEL_KERNEL_DISPATCH(v, call)                                \
  switch (v) {                                                       \
    case KernelVariant::Decode: return decode_kernel::call;          \
    case KernelVariant::DecodeLong: return decode_long_kernel::call; \
    case KernelVariant::Batch: return batch_kernel::call;            \
    case KernelVariant::Wide: return wide_kernel::call;              \
    default: return batch_long_kernel::call;                         \
  }

/// Static shared memory of the persistent kernel variant (checked against the
/// Program's TargetDesc::static_smem; the work area's need is
/// program::kernel_work_bytes).
inline size_t static_smem_bytes(KernelVariant v) { KEEL_KERNEL_DISPATCH(v, static_smem_bytes()) }

/// Sets the variant's shared-memory attribute and returns how many CTAs of it
/// can be co-resident on `device` (blocks per SM x SMs).
inline int max_coresident_ctas(int device, size_t smem, KernelVariant v) {
  KEEL_KERNEL_DISPATCH(v, max_coresident_ctas(device, smem))
}

/// The persistent launch: grid = h.n_workers CTAs, cooperative (so the driver
/// refuses a grid that cannot be co-resident instead of hanging).
inline void launch_program(const DevProgram& P, size_t smem, cudaStream_t stream) {
  KEEL_KERNEL_DISPATCH(kernel_variant(P), launch_program(P, smem, stream))
}
/// Fills tiles[e] for every worker-list entry e (P.n_stages / stage_bytes set).
inline void build_tile_table(const DevProgram& P, TileDesc* tiles, cudaStream_t stream) {
  KEEL_KERNEL_DISPATCH(kernel_variant(P), build_tile_table(P, tiles, stream))
}
/// One operator of one step on every CTA (per-op ablation; capturable in a CUDA graph).
inline void launch_op(const DevProgram& P, int op, size_t smem, cudaStream_t stream) {
  KEEL_KERNEL_DISPATCH(kernel_variant(P), launch_op(P, op, smem, stream))
}

/// Test hook: task `task` once on one CTA, no waits, no signals.
inline void launch_single_task(const DevProgram& P, uint32_t task, size_t smem, cudaStream_t stream) {
  KEEL_KERNEL_DISPATCH(kernel_variant(P), launch_single_task(P, task, smem, stream))
}
#undef KEEL_KERNEL_DISPATCH

}  // namespace keel::exec::cuda::prog
