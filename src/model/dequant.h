// Dequantization of GGUF tensors at load time: any supported ggml element type
// (quant.h) to f32 or bf16, row by row on the host thread pool. Rows can be
// written in a permuted order (the Q/K row permutation llama.cpp applies to
// Llama checkpoints is undone this way, after decoding, since a quant block
// never spans two rows).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"

namespace keel::model {

/// Decodes `rows` rows of `cols` elements of `type` from `src` into `dst` as
/// `out` (F32 or BF16). Output row r comes from source row src_row(r) when
/// src_row is given, else from row r. `on_rows(n)` is called as rows finish
/// (from worker threads, so it must be thread-safe); it may be empty.
void dequantize_rows(quant::GgmlType type, const std::byte* src, int64_t rows, int64_t cols, DType out,
                     std::byte* dst, const std::function<int64_t(int64_t)>& src_row = {},
                     const std::function<void(int64_t)>& on_rows = {});

/// Bytes one row of `cols` elements of `type` takes in a GGUF file.
uint64_t row_bytes(quant::GgmlType type, int64_t cols);

/// The inverse of llama.cpp's convert_hf_to_gguf `permute` for a Q or K
/// projection with `heads` heads of `rows / heads` rows: llama.cpp stores the
/// rows of each head interleaved (pairs (i, i + d/2) adjacent), Hugging Face
/// keeps the two halves apart. Returns the GGUF row that holds HF row r.
int64_t unpermute_qk_row(int64_t r, int64_t rows, int64_t heads);

}  // namespace keel::model
