// rope.h: RoPE inverse frequencies.
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>

namespace keel::model {

namespace {

/// YaRN's ramp over the rotary pairs (transformers' find_correction_range and
/// linear_ramp_factor): 0 for pairs that rotate more than beta_fast times over
/// the original context (kept as they are), 1 for those rotating fewer than
/// beta_slow times (interpolated: divided by factor), linear between.
double yarn_ramp(const ModelConfig& c, int64_t i) {
  const RopeConfig& r = c.rope;
  const double dim = double(c.head_dim);
  auto correction_dim = [&](double rotations) {
    return dim * std::log(double(r.original_max_position) / (rotations * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(r.theta));
  };
  double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
  if (r.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1);
  if (low == high) high += 0.001;  // as transformers: no division by zero
  return std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
}

}  // namespace

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  const RopeConfig& r = c.rope;
  std::vector<float> out(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(r.theta, double(2 * i) / double(c.head_dim));
    switch (r.type) {
      case RopeType::Default:
      case RopeType::Dynamic:
        // Dynamic NTK changes the base only past max_position_embeddings, which
        // no keel context reaches (the compiler and the reference refuse it).
        break;
      case RopeType::Yarn: {
        // interpolation (f / factor) weighted by the ramp, extrapolation (f) by 1 - ramp
        const double ramp = yarn_ramp(c, i);
        f = f / r.factor * ramp + f * (1.0 - ramp);
        break;
      }
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

std::string rope_summary(const ModelConfig& c) {
  const RopeConfig& r = c.rope;
  static constexpr const char* kNames[] = {"default", "linear", "llama3", "yarn", "dynamic"};
  std::ostringstream o;
  o << kNames[int(r.type)] << ", theta " << r.theta;
  if (r.type != RopeType::Default) o << ", factor " << r.factor;
  if (r.type == RopeType::Llama3)
    o << ", low/high freq factor " << r.low_freq_factor << "/" << r.high_freq_factor << ", original context "
      << r.original_max_position;
  if (r.type == RopeType::Yarn)
    o << ", original context " << r.original_max_position << ", beta fast/slow " << r.beta_fast << "/" << r.beta_slow
      << ", attention factor " << r.attention_factor;
  return o.str();
}

std::string attention_summary(const ModelConfig& c) {
  if (c.sliding_window <= 0) return "full attention in every layer";
  std::ostringstream o;
  int64_t n = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) n += c.window(l) > 0;
  if (n == c.n_layers) {
    o << "sliding window " << c.sliding_window << " in every layer";
    return o.str();
  }
  o << "sliding window " << c.sliding_window << " in layers ";
  bool first = true;
  for (int64_t l = 0; l < c.n_layers;) {
    if (!c.window(l)) {
      ++l;
      continue;
    }
    int64_t e = l;
    while (e + 1 < c.n_layers && c.window(e + 1)) ++e;
    o << (first ? "" : ", ") << l;
    if (e > l) o << "-" << e;
    first = false;
    l = e + 1;
  }
  o << " (others full)";
  return o.str();
}

}  // namespace keel::model
