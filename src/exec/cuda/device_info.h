// What the host needs to know about the GPUs (for `keel info`, for sizing the
// megakernel's grid and shared-memory ring) and a streaming-read bandwidth probe
// (for `keel bench`, which reports every decode figure as a share of the
// bandwidth measured in the same run). Plain host header: no CUDA includes, so
// the CLI can include it and call list_gpus() whether or not a driver exists.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace keel::exec::cuda {

struct GpuInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  uint64_t total_memory = 0;        // total global memory (bytes)
  uint64_t memory_free_bytes = 0;   // free at the time of the query
  int l2_bytes = 0;
  int smem_per_block_optin = 0;     // max dynamic shared memory a block may opt in to
  int smem_per_sm = 0;
  int clock_khz = 0;                // SM clock
  int memory_clock_khz = 0;
  int memory_bus_bits = 0;
  /// Theoretical peak DRAM bandwidth from clock and bus width (GB/s), 0 if unknown.
  double peak_bandwidth_gbs() const;
};

/// Every visible GPU; empty when there is no driver or no device (never throws).
std::vector<GpuInfo> list_gpus();

/// True when at least one CUDA device can be used.
bool have_gpu();

/// Streaming read bandwidth of device `device` in GB/s: the median of `repeats`
/// passes of a 16-byte-per-thread read kernel over a buffer of at least
/// max(4 x L2, min_bytes) bytes (so the L2 cannot serve it). Throws keel::Error
/// on a CUDA failure.
double measure_read_bandwidth(int device = 0, uint64_t min_bytes = 1ull << 30, int repeats = 20);

}  // namespace keel::exec::cuda
