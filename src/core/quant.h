// The ggml/GGUF weight block formats keel reads: one table of element types
// (id as GGUF numbers them, name, elements per block, bytes per block) and one
// decode function per block format that writes the block's floats. The decode
// functions are plain arithmetic on bytes (KEEL_HD), so a kernel that reads
// quantized weights directly can include this header and reuse them; the host
// loader (src/model/dequant.cpp) uses them to dequantize at load time.
//
// Layouts follow ggml-common.h. Blocks of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
// hold an f16 scale (and an f16 minimum for the _1 kinds) and packed integers;
// K-quant superblocks of 256 (Q4_K, Q5_K, Q6_K) hold 8 or 16 sub-blocks with
// 6- or 8-bit sub-scales. Every field is read byte by byte (little-endian), so
// a block needs no alignment.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/dtype.h"

namespace keel::quant {

/// GGUF tensor element types (ggml_type numbers). Only the ones listed in
/// kTypes are readable; the others are named so errors can say what a file has.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct TypeInfo {
  GgmlType type;
  std::string_view name;
  uint32_t block_elems;  // elements per block (1 for plain floats)
  uint32_t block_bytes;  // bytes per block
  bool supported;        // keel can decode it
};

// clang-format off
inline constexpr TypeInfo kTypes[] = {
    {GgmlType::F32,  "F32",  1,   4,   true},
    {GgmlType::F16,  "F16",  1,   2,   true},
    {GgmlType::BF16, "BF16", 1,   2,   true},
    {GgmlType::Q4_0, "Q4_0", 32,  18,  true},
    {GgmlType::Q4_1, "Q4_1", 32,  20,  true},
    {GgmlType::Q5_0, "Q5_0", 32,  22,  true},
    {GgmlType::Q5_1, "Q5_1", 32,  24,  true},
    {GgmlType::Q8_0, "Q8_0", 32,  34,  true},
    {GgmlType::Q4_K, "Q4_K", 256, 144, true},
    {GgmlType::Q5_K, "Q5_K", 256, 176, true},
    {GgmlType::Q6_K, "Q6_K", 256, 210, true},
    {GgmlType::Q8_1, "Q8_1", 32,  36,  false},
    {GgmlType::Q2_K, "Q2_K", 256, 84,  false},
    {GgmlType::Q3_K, "Q3_K", 256, 110, false},
    {GgmlType::Q8_K, "Q8_K", 256, 292, false},
    {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66, false},
    {GgmlType::IQ2_XS, "IQ2_XS", 256, 74, false},
    {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98, false},
    {GgmlType::IQ1_S, "IQ1_S", 256, 50, false},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18, false},
    {GgmlType::IQ3_S, "IQ3_S", 256, 110, false},
    {GgmlType::IQ2_S, "IQ2_S", 256, 82, false},
    {GgmlType::IQ4_XS, "IQ4_XS", 256, 136, false},
    {GgmlType::I8,  "I8",  1, 1, false},
    {GgmlType::I16, "I16", 1, 2, false},
    {GgmlType::I32, "I32", 1, 4, false},
    {GgmlType::I64, "I64", 1, 8, false},
    {GgmlType::F64, "F64", 1, 8, false},
    {GgmlType::IQ1_M, "IQ1_M", 256, 56, false},
    {GgmlType::TQ1_0, "TQ1_0", 256, 54, false},
    {GgmlType::TQ2_0, "TQ2_0", 256, 66, false},
    {GgmlType::MXFP4, "MXFP4", 32, 17, false},
};
// clang-format on

/// The table row for a GGUF type number, or null when the number is unknown.
constexpr const TypeInfo* type_info(uint32_t type) {
  for (const TypeInfo& t : kTypes)
    if (uint32_t(t.type) == type) return &t;
  return nullptr;
}

namespace detail {
KEEL_HD uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
KEEL_HD float f16(const uint8_t* p) { return f16_to_f32(u16(p)); }
KEEL_HD uint32_t u32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
/// K-quant 6-bit scale and minimum of sub-block j (ggml's get_scale_min_k4).
KEEL_HD void scale_min_k4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}
}  // namespace detail

/// Q4_0: f16 d, 16 bytes of nibbles; x = (q - 8) * d. Low nibbles are
/// elements 0..15, high nibbles 16..31.
KEEL_HD void decode_q4_0(const uint8_t* b, float* y) {
  const float d = detail::f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(int(qs[j] & 0xF) - 8) * d;
    y[j + 16] = float(int(qs[j] >> 4) - 8) * d;
  }
}

/// Q4_1: f16 d, f16 m, 16 bytes of nibbles; x = q * d + m.
KEEL_HD void decode_q4_1(const uint8_t* b, float* y) {
  const float d = detail::f16(b), m = detail::f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(qs[j] & 0xF) * d + m;
    y[j + 16] = float(qs[j] >> 4) * d + m;
  }
}

/// Q5_0: f16 d, 32 high bits, 16 bytes of nibbles; x = (q - 16) * d.
KEEL_HD void decode_q5_0(const uint8_t* b, float* y) {
  const float d = detail::f16(b);
  const uint32_t qh = detail::u32(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int h0 = int(((qh >> j) << 4) & 0x10), h1 = int((qh >> (j + 12)) & 0x10);
    y[j] = float((int(qs[j] & 0xF) | h0) - 16) * d;
    y[j + 16] = float((int(qs[j] >> 4) | h1) - 16) * d;
  }
}

/// Q5_1: f16 d, f16 m, 32 high bits, 16 bytes of nibbles; x = q * d + m.
KEEL_HD void decode_q5_1(const uint8_t* b, float* y) {
  const float d = detail::f16(b), m = detail::f16(b + 2);
  const uint32_t qh = detail::u32(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int h0 = int(((qh >> j) << 4) & 0x10), h1 = int((qh >> (j + 12)) & 0x10);
    y[j] = float(int(qs[j] & 0xF) | h0) * d + m;
    y[j + 16] = float(int(qs[j] >> 4) | h1) * d + m;
  }
}

/// Q8_0: f16 d, 32 signed bytes; x = q * d.
KEEL_HD void decode_q8_0(const uint8_t* b, float* y) {
  const float d = detail::f16(b);
  for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
}

/// Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins for 8 sub-blocks of
/// 32, 128 bytes of nibbles; x = d*sc * q - dmin*m.
KEEL_HD void decode_q4_k(const uint8_t* b, float* y) {
  const float d = detail::f16(b), dmin = detail::f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
    uint8_t sc, m;
    detail::scale_min_k4(is, scales, sc, m);
    const float d1 = d * sc, m1 = dmin * m;
    detail::scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) y[j + l] = d1 * float(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) y[j + 32 + l] = d2 * float(q[l] >> 4) - m2;
  }
}

/// Q5_K: as Q4_K with a fifth bit per element from 32 bytes of high bits.
KEEL_HD void decode_q5_k(const uint8_t* b, float* y) {
  const float d = detail::f16(b), dmin = detail::f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32, u1 = uint8_t(u1 << 2), u2 = uint8_t(u2 << 2)) {
    uint8_t sc, m;
    detail::scale_min_k4(is, scales, sc, m);
    const float d1 = d * sc, m1 = dmin * m;
    detail::scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) y[j + l] = d1 * float((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) y[j + 32 + l] = d2 * float((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
  }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales,
/// f16 d; x = d * scale * (q - 32).
KEEL_HD void decode_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = detail::f16(b + 208);
  for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = int((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[n + l] = d * float(sc[is]) * float(q1);
      y[n + l + 32] = d * float(sc[is + 2]) * float(q2);
      y[n + l + 64] = d * float(sc[is + 4]) * float(q3);
      y[n + l + 96] = d * float(sc[is + 6]) * float(q4);
    }
  }
}

/// Decodes one block of `type` (a supported one) into type_info(type)->block_elems
/// floats. Plain float types decode one element.
KEEL_HD void decode_block(GgmlType type, const uint8_t* b, float* y) {
  switch (type) {
    case GgmlType::F32: y[0] = bits_f32(detail::u32(b)); break;
    case GgmlType::F16: y[0] = f16_to_f32(detail::u16(b)); break;
    case GgmlType::BF16: y[0] = bf16_to_f32(detail::u16(b)); break;
    case GgmlType::Q4_0: decode_q4_0(b, y); break;
    case GgmlType::Q4_1: decode_q4_1(b, y); break;
    case GgmlType::Q5_0: decode_q5_0(b, y); break;
    case GgmlType::Q5_1: decode_q5_1(b, y); break;
    case GgmlType::Q8_0: decode_q8_0(b, y); break;
    case GgmlType::Q4_K: decode_q4_k(b, y); break;
    case GgmlType::Q5_K: decode_q5_k(b, y); break;
    case GgmlType::Q6_K: decode_q6_k(b, y); break;
    default: break;
  }
}

}  // namespace keel::quant
