// Element types keel reads from checkpoints (F32, F16, BF16) and the scalar
// conversions between them. The conversions are plain bit manipulation, usable
// from host and device code, and round to nearest even like the hardware does,
// so the CPU executor rounds exactly where the GPU does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__CUDACC__)
#define KEEL_HD __host__ __device__ __forceinline__
#else
#define KEEL_HD inline
#endif

namespace keel {

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2 };

constexpr size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "?";
}

/// Bit-level float <-> uint32 (no aliasing UB).
KEEL_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
KEEL_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

/// bfloat16 bits -> float (exact).
KEEL_HD float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

/// float -> bfloat16 bits, round to nearest even; NaN stays NaN.
KEEL_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

/// Rounds a float to the nearest bfloat16 value (what storing bf16 does).
KEEL_HD float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

/// IEEE half bits -> float (exact, handles subnormals, inf, NaN).
KEEL_HD float f16_to_f32(uint16_t h) {
#if defined(__CUDA_ARCH__)
  float f;  // the hardware conversion: exact, one instruction (the code below is ~30)
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#else
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    // subnormal: value = man * 2^-24
    float v = float(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
#endif
}

/// float -> IEEE half bits, round to nearest even.
KEEL_HD uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);        // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);       // overflow -> inf
  if (a < 0x38800000u) {                                       // subnormal or zero
    if (a < 0x33000000u) return uint16_t(sign);                // < 2^-25 rounds to 0
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;                                 // 14..24
    uint32_t half = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);                  // round mantissa to 10 bits
  return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

/// Reads element i of a buffer of the given dtype as float.
KEEL_HD float load_as_f32(const void* p, DType t, size_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  }
  return 0.0f;
}

}  // namespace keel
