// Error checking for CUDA runtime calls inside keel_exec_cuda: every call goes
// through KEEL_CUDA_CHECK, and every launch is followed by KEEL_CUDA_CHECK_LAUNCH,
// both of which throw keel::Error naming the call, the file and the line.
// Internal to the CUDA executor (it includes the CUDA runtime header).
#pragma once

#include <cuda_runtime_api.h>

#include "core/error.h"

#define KEEL_CUDA_CHECK(expr)                                                       \
  do {                                                                              \
    cudaError_t keel_err_ = (expr);                                                 \
    if (keel_err_ != cudaSuccess) {                                                 \
      ::keel::fail("CUDA error ", cudaGetErrorName(keel_err_), " (",                \
                   cudaGetErrorString(keel_err_), ") in ", #expr, " at ", __FILE__, \
                   ":", __LINE__);                                                  \
    }                                                                               \
  } while (0)

#define KEEL_CUDA_CHECK_LAUNCH(what) KEEL_CUDA_CHECK(cudaGetLastError())
