// mm_sources.h: TMA tensor maps of the matmul tiles.
#include "exec/cuda/mm_sources.h"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>

#include <map>
#include <utility>

#include "core/error.h"
#include "exec/cuda/cuda_check.h"
#include "program/smem_plan.h"

namespace keel::exec::cuda {

namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    KEEL_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
    KEEL_CHECK(q == cudaDriverEntryPointSuccess && f, "CUDA driver: cuTensorMapEncodeTiled is not available (",
               int(q), "); the batch kernel's matmul tiles need a CUDA 12+ driver");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

/// A map over the bf16 matrix of buffer `b` (rows x cols) at `base`, boxes of
/// kMmBoxCols columns x box_rows rows, 128-byte swizzle, zeros past the end.
CUtensorMap encode(const program::BufferDesc& b, const uint8_t* base, uint32_t box_rows) {
  const int64_t cols = b.cols, rows = b.rows > 0 ? b.rows : int64_t(b.count) / std::max<int64_t>(b.cols, 1);
  CUtensorMap m{};
  const cuuint64_t dims[2] = {cuuint64_t(cols), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(cols) * 2};
  const cuuint32_t box[2] = {cuuint32_t(program::kMmBoxCols), box_rows};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r = encode_fn()(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<uint8_t*>(base), dims, strides,
                                 box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  KEEL_CHECK(r == CUDA_SUCCESS, "CUDA driver: cuTensorMapEncodeTiled refused weight '", b.name_view(), "' (",
             rows, " x ", cols, " bf16, box ", program::kMmBoxCols, " x ", box_rows, "): error ", int(r));
  return m;
}

}  // namespace

const prog::MmSource* upload_mm_sources(const program::Program& p, const std::vector<uint8_t*>& ptr,
                                        std::vector<void*>& owned) {
  const size_t n = p.worker_tasks.size();
  std::vector<prog::MmSource> src(std::max<size_t>(n, 1));
  std::vector<CUtensorMap> maps;
  std::map<std::pair<int32_t, uint32_t>, size_t> index;  // (buffer, box rows) -> map
  std::vector<std::pair<size_t, int>> uses;              // (entry, slot 0..3) -> map index, patched after upload
  std::vector<size_t> use_map;
  auto map_of = [&](int32_t buf, uint32_t box_rows) {
    const auto key = std::make_pair(buf, box_rows);
    auto it = index.find(key);
    if (it != index.end()) return it->second;
    maps.push_back(encode(p.buffers[size_t(buf)], ptr[size_t(buf)], box_rows));
    return index[key] = maps.size() - 1;
  };
  for (size_t e = 0; e < n; ++e) {
    const program::TaskDesc& t = p.tasks[p.worker_tasks[e]];
    if (program::stage_cols(t) == 0) continue;
    const program::TileSource s = program::tile_source(p, t);
    KEEL_CHECK(s.m0 >= 0, "program: task ", p.worker_tasks[e], " has column chunks but no weight matrix");
    const uint32_t cap = program::stage_rows(t);
    for (int m = 0; m < 2; ++m) {
      const int32_t buf = m == 0 ? s.m0 : s.m1;
      if (buf < 0) continue;
      uses.emplace_back(e, m);
      use_map.push_back(map_of(buf, cap));
      uses.emplace_back(e, 2 + m);
      use_map.push_back(map_of(buf, 16));
    }
    src[e].row0 = int32_t(s.first);
    src[e].col0 = int32_t(s.k0);
  }
  if (maps.empty()) return nullptr;
  void* d = nullptr;
  KEEL_CUDA_CHECK(cudaMalloc(&d, maps.size() * sizeof(CUtensorMap)));  // 256-byte aligned (a map needs 64)
  owned.push_back(d);
  KEEL_CUDA_CHECK(cudaMemcpy(d, maps.data(), maps.size() * sizeof(CUtensorMap), cudaMemcpyHostToDevice));
  const auto* dm = static_cast<const CUtensorMap*>(d);
  for (size_t u = 0; u < uses.size(); ++u) {
    prog::MmSource& s = src[uses[u].first];
    const int slot = uses[u].second;
    (slot < 2 ? s.full[slot] : s.part[slot - 2]) = dm + use_map[u];
  }
  void* ds = nullptr;
  KEEL_CUDA_CHECK(cudaMalloc(&ds, src.size() * sizeof(prog::MmSource)));
  owned.push_back(ds);
  KEEL_CUDA_CHECK(cudaMemcpy(ds, src.data(), src.size() * sizeof(prog::MmSource), cudaMemcpyHostToDevice));
  return static_cast<const prog::MmSource*>(ds);
}

}  // namespace keel::exec::cuda
