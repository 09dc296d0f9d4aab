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

/// Fills `ws`, an image of the Program's workspace arena (h.workspace_bytes,
/// zeroed here first): activations poisoned with NaN (a read before any write
/// then poisons the output), the identity page table, Control (EOS ids,
/// max_steps), one SeqState per batch slot (slots past seqs.size() start done),
/// each sequence's token history (its prompt) and x[b] = the fp32 embedding row
/// of prompt[0], written by `embed(token, row)`. Validates the requests and
/// throws keel::Error naming `who` and the sequence at fault.
void write_launch_state(const program::Program& p, const std::vector<Sequence>& seqs,
                        const std::vector<int32_t>& eos_ids, uint8_t* ws,
                        const std::function<void(int32_t token, float* row)>& embed, const char* who);

/// Throws keel::Error naming `who` and `model_dir` unless the Program was
/// compiled for `cfg`'s dimensions (layers, hidden, intermediate, heads, kv
/// heads, head_dim, vocab).
void check_program_model(const program::Program& p, const model::ModelConfig& cfg, const std::string& model_dir,
                         const char* who);

}  // namespace keel::exec
