// The run rules every backend shares, defined once (DESIGN invariant 9) as
// host/device functions: where a KV cache entry lives (page table -> offset),
// when a sequence stops (EOS, stop request, max_new, context end), and whether
// a prompt fits the context. The reference backend, launch setup, the CPU Step
// and Attention tasks and their CUDA twins all call these, so every backend
// emits the same tokens and the same count at the context end.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "program/program.h"

namespace keel::program {

// ---- the KV address -----------------------------------------------------------

/// Index into the page table (buffer buf_page_table, [batch, pages_per_seq]
/// int32) of the page holding position pos of sequence b.
KEEL_HD int32_t kv_page_entry(const ProgramHeader& h, int b, int64_t pos) {
  return b * h.pages_per_seq + int32_t(pos) / h.page_size;
}

/// Element offset in a KV cache buffer ([n_pages][n_kv_heads][page_size][head_dim]
/// bf16) of element e of (page, kv head kvh, position pos).
KEEL_HD int64_t kv_offset(const ProgramHeader& h, int64_t page, int kvh, int64_t pos, int e) {
  return ((page * h.n_kv_heads + kvh) * h.page_size + int32_t(pos) % h.page_size) * h.head_dim + e;
}

// ---- stop rules ------------------------------------------------------------------

/// True when a sequence that holds n_tokens tokens (prompt + generated) may not
/// grow: its context is full. A sequence never holds more than max_context
/// tokens, so a prompt of max_context tokens generates none (the reference's
/// bound, now every backend's).
KEEL_HD bool context_full(int64_t n_tokens, int64_t max_context) { return n_tokens >= max_context; }

/// Whether `token` is one of the Control block's EOS ids.
KEEL_HD bool is_eos(const Control& c, int32_t token) {
  bool eos = false;
  for (int i = 0; i < c.n_eos && i < kMaxEos; ++i) eos |= c.eos[i] == token;
  return eos;
}

/// The stop rules, checked after a token is emitted, in this order: EOS, a stop
/// request, max_new generated, the context full. n_tokens counts the prompt and
/// every generated token including this one. None: go on.
KEEL_HD StopReason stop_after_token(bool eos, bool stop_requested, int64_t n_generated, int64_t max_new,
                                    int64_t n_tokens, int64_t max_context) {
  if (eos) return StopReason::Eos;
  if (stop_requested) return StopReason::Stopped;
  if (n_generated >= max_new) return StopReason::MaxTokens;
  if (context_full(n_tokens, max_context)) return StopReason::Context;
  return StopReason::None;
}

/// Stop reasons as the engine and the CLI name them.
inline const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Eos: return "eos";
    case StopReason::MaxTokens: return "max_tokens";
    case StopReason::Context: return "context";
    case StopReason::Stopped: return "stopped";
    case StopReason::None: break;
  }
  return "none";
}

// ---- the prompt bound -----------------------------------------------------------

/// "The prompt fits the context": 1 <= prompt_len <= max_context. A prompt of
/// exactly max_context tokens fits (every position gets its KV entry) and
/// generates nothing (context_full).
KEEL_HD bool prompt_fits(int64_t prompt_len, int64_t max_context) {
  return prompt_len >= 1 && prompt_len <= max_context;
}

/// Throws keel::Error when the prompt does not fit, naming `who` (e.g. "cpu
/// backend", "--prompt") and both numbers. The one message every site uses.
void check_prompt_fits(int64_t prompt_len, int64_t max_context, const char* who);

}  // namespace keel::program
