// The long-context decode variant of the persistent kernel (program_kernel.h):
// the decode variant's source with attention's streaming path (attn_stream,
// src/ops/attention.cuh) compiled in, for batch-1 launches that reach positions
// past the attention prefetch (ops::Attention::streams).
#define KEEL_ATTN_STREAM 1
#define KEEL_KERNEL_VARIANT decode_long_kernel
#define KEEL_DEVICE_NS decode_long_device
#include "exec/cuda/program_kernel.cu"
