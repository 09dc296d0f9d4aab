// The wide variant of the persistent kernel (program_kernel.h): the long
// batch variant's source with the wide matmul tiles (KEEL_MM_WIDE,
// mm_wgmma.cuh) compiled in, for Programs whose matmul tasks serve more than
// 64 tokens (program::mm_wide: a prefill step of more lanes, compiled with
// TargetDesc::mm_tokens). Their accumulators (up to 128 fp32 a thread) would
// change the other variants' register allocation, so only this one carries them.
#define KEEL_MM 1
#define KEEL_ATTN_STREAM 1
#define KEEL_MM_WIDE 128  // program::kMmWideMaxTokens
#define KEEL_KERNEL_VARIANT wide_kernel
#define KEEL_DEVICE_NS wide_device
#include "exec/cuda/program_kernel.cu"
