// Row-parallel dequantization (see dequant.h). Each row is decoded block by
// block into a small float buffer with quant.h's decoders, then stored as f32
// or rounded to bf16 (nearest even, as the rest of keel rounds).
#include "model/dequant.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"

namespace keel::model {

uint64_t row_bytes(quant::GgmlType type, int64_t cols) {
  const quant::TypeInfo* t = quant::type_info(uint32_t(type));
  KEEL_CHECK(t && t->supported, "dequantize: unsupported element type ", uint32_t(type));
  return uint64_t(cols) / t->block_elems * t->block_bytes;
}

int64_t unpermute_qk_row(int64_t r, int64_t rows, int64_t heads) {
  const int64_t hd = rows / heads, half = hd / 2;
  const int64_t h = r / hd, rem = r % hd;
  const int64_t p = rem / half, i = rem % half;
  return h * hd + 2 * i + p;
}

void dequantize_rows(quant::GgmlType type, const std::byte* src, int64_t rows, int64_t cols, DType out,
                     std::byte* dst, const std::function<int64_t(int64_t)>& src_row,
                     const std::function<void(int64_t)>& on_rows) {
  const quant::TypeInfo* t = quant::type_info(uint32_t(type));
  KEEL_CHECK(t && t->supported, "dequantize: unsupported element type ", uint32_t(type));
  KEEL_CHECK(out == DType::F32 || out == DType::BF16, "dequantize: output must be F32 or BF16");
  KEEL_CHECK(cols % t->block_elems == 0, "dequantize: row length ", cols, " is not a multiple of the ", t->name,
             " block");
  const uint64_t in_row = row_bytes(type, cols);
  const size_t out_elem = dtype_size(out);
  // Rows per chunk: about 1 MB of output, so the pool gets many chunks.
  const size_t grain = std::max<size_t>(1, (size_t(1) << 20) / (size_t(cols) * out_elem + 1));
  parallel_for(
      size_t(rows),
      [&](size_t begin, size_t end) {
        float block[256];
        std::vector<float> row(size_t(cols), 0.0f);
        for (size_t r = begin; r < end; ++r) {
          const int64_t s = src_row ? src_row(int64_t(r)) : int64_t(r);
          const uint8_t* in = reinterpret_cast<const uint8_t*>(src) + uint64_t(s) * in_row;
          for (int64_t c = 0; c < cols; c += t->block_elems, in += t->block_bytes) {
            quant::decode_block(t->type, in, block);
            std::memcpy(row.data() + c, block, t->block_elems * sizeof(float));
          }
          std::byte* o = dst + r * size_t(cols) * out_elem;
          if (out == DType::F32) {
            std::memcpy(o, row.data(), size_t(cols) * sizeof(float));
          } else {
            uint16_t* b = reinterpret_cast<uint16_t*>(o);
            for (int64_t c = 0; c < cols; ++c) b[c] = f32_to_bf16(row[size_t(c)]);
          }
          if (on_rows && (r + 1 - begin) % 64 == 0) on_rows(64);
        }
        if (on_rows && (end - begin) % 64) on_rows(int64_t((end - begin) % 64));
      },
      grain);
}

}  // namespace keel::model
