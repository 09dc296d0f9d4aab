// The Step task's sampler (host). The CUDA twin is src/exec/cuda/sampler.cuh.
#pragma once

#include <cstdint>

#include "program/program.h"

namespace keel::exec::cpu {

/// The Step task's token choice when sampling (temperature > 0): repetition
/// penalty over `history`, temperature, top-k, top-p, min-p, then a draw with
/// uniform `u` over the survivors in ascending id order (engine::Sampler's
/// semantics, with the Program's counter-based random number). Modifies logits.
int32_t sample_token(float* logits, int64_t vocab, const int32_t* history, int64_t n_history,
                     const program::SeqState& s, float u);

}  // namespace keel::exec::cpu
