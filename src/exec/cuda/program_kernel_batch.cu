// The batch variant of the persistent kernel (program_kernel.h): the same
// kernel source with the matmul tiles (mm.cuh), the loader's column-chunk path
// and the rms_norm opcode compiled in, for Programs of several sequences. The
// decode variant (program_kernel.cu) leaves them out so that batch-1 decode
// runs exactly the code it was tuned on.
#define KEEL_MM 1
#define KEEL_KERNEL_VARIANT batch_kernel
#define KEEL_DEVICE_NS batch_device
#include "exec/cuda/program_kernel.cu"
