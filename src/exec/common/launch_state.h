// The host's part of a launch (program.h, "Launch setup"), written once for
// every executor of a Program: the CPU executor writes it straight into its
// workspace, the CUDA executor into a host image it then copies to the device.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <string>

#include "exec/common/run.h"
#include "model/config.h"
#include "program/program.h"

namespace keel::exec {

/// The first lane of each of a run's sequences: the decoding sequences on
/// decode lanes 0, 1, ... (lane = index: executors report tokens by lane), then
/// each prefill sequence (Sequence::prefill_only, or every sequence of a
/// prefill Program) on the next group of seq_lanes lanes after the decode
/// lanes. Throws keel::Error naming `who` when they do not fit the Program's
/// lanes or a decoding sequence comes after a prefill one.
std::vector<int> sequence_lanes(const program::ProgramHeader& h, const std::vector<Sequence>& seqs, const char* who);

/// Fills `ws`, an image of the Program's workspace arena (h.workspace_bytes,
/// zeroed here first): activations poisoned with NaN (a read before any write
/// then poisons the output), the page table (each lane uses the pages of its
/// sequence: sequence_lanes), Control (EOS ids, opt.eos_ids; max_steps, at
/// most opt.max_steps), one SeqState per lane (lanes no sequence uses start
/// done), each lane's token history (its sequence's prompt) and x[b] = the
/// fp32 embedding row of the lane's first token, written by `embed(token,
/// row)`. A decode lane starts at its sequence's kv_filled; prefill lane i at
/// position kv_filled + i (done from the start when that is >= prompt size -
/// 1). Idle lanes use opt.idle_page when >= 0. Validates the requests and
/// throws keel::Error naming `who` and the sequence at fault.
void write_launch_state(const program::Program& p, const std::vector<Sequence>& seqs, const RunOptions& opt,
                        uint8_t* ws, const std::function<void(int32_t token, float* row)>& embed, const char* who);

/// The same, buffer by buffer: `buffer(id)` returns the bytes of workspace
/// buffer `id` in the image, as the whole-image version leaves them before it
/// writes (zero; activations 0xff). It is asked only for the buffers the host
/// writes (launch_state_buffers); every other byte of the workspace is zero,
/// activations 0xff. (The CUDA executor uploads only these buffers and sets
/// the rest on the device.)
void write_launch_state(const program::Program& p, const std::vector<Sequence>& seqs, const RunOptions& opt,
                        const std::function<uint8_t*(int32_t id)>& buffer,
                        const std::function<void(int32_t token, float* row)>& embed, const char* who);

/// The workspace buffers write_launch_state writes: the page table, Control,
/// the SeqStates, the token histories and x.
std::vector<int32_t> launch_state_buffers(const program::ProgramHeader& h);

/// One contiguous copy of KV cache bytes between two Programs' KV buffers
/// (byte offsets within each buffer).
struct KvCopy {
  int32_t src_buf = -1, dst_buf = -1;
  uint64_t src_offset = 0, dst_offset = 0, bytes = 0;
};

/// The copies that move positions [0, positions) of sequence `src_seq`'s KV
/// cache in `src` (page table as write_launch_state writes it: sequence k
/// owns pages [k pages_per_seq, (k+1) pages_per_seq)) to sequence `dst_seq`
/// in `dst`: per layer, K and V, whole pages. Throws keel::Error naming `who`
/// unless the two Programs cache the same layers, kv heads, head_dim and page
/// size and the positions fit both.
std::vector<KvCopy> kv_sequence_copies(const program::Program& src, int src_seq, const program::Program& dst,
                                       int dst_seq, int64_t positions, const char* who);
/// The copies that give page `to` the K/V of page `from` in every KV buffer of
/// one cache (copy-on-write of a shared page's content).
std::vector<KvCopy> kv_page_copies(const program::Program& p, int32_t from, int32_t to, const char* who);

/// Throws keel::Error naming `who` unless `a` and `b` lay out their KV caches
/// alike (arena size, pages, page size; every KV buffer at the same offset
/// with the same count and dtype), so two executors can share one.
void check_kv_shareable(const program::Program& a, const program::Program& b, const char* who);

/// Throws keel::Error naming `who` and `model_dir` unless the Program was
/// compiled for `cfg`'s dimensions (layers, hidden, intermediate, heads, kv
/// heads, head_dim, vocab).
void check_program_model(const program::Program& p, const model::ModelConfig& cfg, const std::string& model_dir,
                         const char* who);

}  // namespace keel::exec
