// rope.h: RoPE inverse frequencies.
#include "model/rope.h"

#include <cmath>
#include <numbers>

namespace keel::model {

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  const RopeConfig& r = c.rope;
  std::vector<float> out(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(r.theta, double(2 * i) / double(c.head_dim));
    switch (r.type) {
      case RopeType::Default:
        break;
      case RopeType::Linear:
        // positions / factor, folded into the frequency
        f /= r.factor;
        break;
      case RopeType::Llama3: {
        // Llama 3.1 "frequency-dependent" scaling: wavelengths longer than
        // original_max / low_freq_factor are stretched by `factor`, those shorter
        // than original_max / high_freq_factor are kept, and the band between
        // interpolates linearly in (original_max / wavelength).
        const double old_ctx = double(r.original_max_position);
        const double low_wavelen = old_ctx / r.low_freq_factor;
        const double high_wavelen = old_ctx / r.high_freq_factor;
        const double wavelen = 2.0 * std::numbers::pi / f;
        if (wavelen > low_wavelen) {
          f = f / r.factor;
        } else if (wavelen >= high_wavelen) {
          const double smooth =
              (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
          f = (1.0 - smooth) * f / r.factor + smooth * f;
        }
        break;
      }
    }
    out[size_t(i)] = float(f);
  }
  return out;
}

}  // namespace keel::model
