// What every opcode unit (src/ops/<op>.h) builds on: the Program types, the
// compile-time opcode list OpList, and the two host helpers a unit's
// validation and footprint are written with (OperandCheck, AccessSink).
//
// An opcode unit is a struct, e.g. QkvProj (src/ops/qkv_proj.h), holding
//  * kOpcode and kInfo (its row of the instruction-set table, ops.h kOpcodeTable);
//  * Operands: the named operand view, the only code that knows which
//    TaskDesc::buf / arg slot holds which operand (from() / to());
//  * validate(): its operand checks (kinds, dtypes, shapes, ranges);
//  * accesses(): its memory footprint (what it reads and writes);
//  * streamed_weight(): the weight matrix whose bytes it streams, if any;
//  * run_cpu(): its CPU twin (src/ops/<op>_cpu.cpp, in keel_exec_cpu);
// and its device body sits next to it in src/ops/<op>.cuh (DeviceOp<Op>).
// docs/adding-an-opcode.md walks through adding one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "program/program.h"

namespace keel::exec::cpu {
struct TaskContext;  // exec/cpu/tasks.h: what a CPU twin reads its buffers through
}

namespace keel::ops {

using program::AccessMode;
using program::Opcode;
using program::OpcodeInfo;
using program::Program;
using program::TaskDesc;

/// The compile-time list of opcode units (ops.h names the one list).
template <class... Op>
struct OpList {
  static constexpr int size = int(sizeof...(Op));
};

/// Operand checks for one task, with messages that name the task and the
/// operand field (the view's field name, e.g. "weight").
struct OperandCheck {
  const Program& p;
  uint32_t task;

  std::string where() const;
  /// A weight of at least [rows, cols] (any stored dtype); -1 allowed when optional.
  void weight(int32_t id, const char* field, int64_t rows, int64_t cols, bool optional = false) const;
  /// A KV cache of the header's shape, bf16.
  void kv(int32_t id, const char* field) const;
  /// The raw [q; k; v] activation, bf16 [B, qkv_width].
  void qkv(int32_t id, const char* field) const;
  /// Exactly the well-known buffer `want` (a header buf_* id).
  void is(int32_t id, int32_t want, const char* field) const;
  /// Some buffer of dtype `dt`.
  void dtype(int32_t id, DType dt, const char* field) const;
  /// A norm-matvec's input: x f32[B,H] (the residual stream) with its norm
  /// weight w[H], or, when norm_w is -1, the rows already normed by an RmsNorm
  /// task: a bf16 activation [B,H] (batch Programs).
  void normed_input(int32_t x, int32_t norm_w) const;
  /// A condition on the task's ranges or arguments; `what` says what is wrong.
  void that(bool ok, const char* what) const;
};

/// Emits a task's accesses in the workspace (space 0, bytes) or a KV space
/// (units of (sequence, kv head); see program.h task_accesses).
struct AccessSink {
  const Program& p;
  std::vector<program::Access>& out;
  const TaskDesc& t;

  /// The operand must be present (id >= 0); `field` names it in the message.
  int32_t need(int32_t id, const char* field) const;
  /// Elements [lo, hi) of a workspace buffer.
  void ws(int32_t buf, uint64_t lo, uint64_t hi, AccessMode m);
  /// Row-major [B, cols] buffer: elements [c0, c1) of rows b0..b1, as one Access of b1 - b0 rows.
  void rows(int32_t buf, int b0, int b1, uint64_t cols, uint64_t c0, uint64_t c1, AccessMode m);
  /// KV units [lo, hi) of KV buffer `buf`.
  void kv(int32_t buf, uint64_t lo, uint64_t hi, AccessMode m);
};

}  // namespace keel::ops
