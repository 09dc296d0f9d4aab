// The long-context batch variant of the persistent kernel (program_kernel.h):
// the batch variant's source with attention's streaming path (attn_stream,
// src/ops/attention.cuh) compiled in, for launches of several sequences that
// reach positions past the attention prefetch (ops::Attention::streams).
#define KEEL_MM 1
#define KEEL_ATTN_STREAM 1
#define KEEL_KERNEL_VARIANT batch_long_kernel
#define KEEL_DEVICE_NS batch_long_device
#include "exec/cuda/program_kernel.cu"
