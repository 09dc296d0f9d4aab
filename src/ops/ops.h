// The instruction set: the one compile-time list of opcode units. Everything
// that goes by opcode (the table below, validation, footprints, the CPU and
// CUDA dispatchers) is derived from `Ops`, so a new opcode is one new unit
// (src/ops/<op>.h, .cpp, _cpu.cpp, .cuh) plus one entry here.
#pragma once

#include <array>

#include "ops/attention.h"
#include "ops/gate_up.h"
#include "ops/lm_head.h"
#include "ops/kv_append.h"
#include "ops/matvec_residual.h"
#include "ops/prefill_attention.h"
#include "ops/qkv_proj.h"
#include "ops/rms_norm.h"
#include "ops/step.h"

namespace keel::ops {

/// Every opcode, in Opcode order (value 1, 2, ...).
using Ops = OpList<QkvProj, GateUp, Attention, MatvecResidual, LmHead, Step, RmsNorm, KvAppend, PrefillAttention>;

namespace detail {
template <class... Op>
constexpr std::array<OpcodeInfo, sizeof...(Op)> table(OpList<Op...>) {
  return {Op::kInfo...};
}
template <class... Op>
constexpr bool in_order(OpList<Op...>) {
  int i = 0;
  return ((int(Op::kOpcode) == ++i && Op::kInfo.opcode == Op::kOpcode) && ...);
}
}  // namespace detail

static_assert(Ops::size == program::kNumOpcodes, "one unit per Opcode value");
static_assert(detail::in_order(Ops{}), "Ops lists the units in Opcode order, each with its own info row");

/// The instruction-set table, one row per opcode (kOpcodeTable[op - 1]): what the
/// operand slots and arguments mean and what the task does (keel compile --report,
/// describe_task, docs/program-format.md).
inline constexpr std::array<OpcodeInfo, Ops::size> kOpcodeTable = detail::table(Ops{});

inline const OpcodeInfo& opcode_info(Opcode op) { return kOpcodeTable[size_t(int(op) - 1)]; }

/// The I-th unit of a list (At<I, Ops>::type has opcode I + 1).
template <int I, class L>
struct At;
template <class Head, class... Tail>
struct At<0, OpList<Head, Tail...>> {
  using type = Head;
};
template <int I, class Head, class... Tail>
struct At<I, OpList<Head, Tail...>> : At<I - 1, OpList<Tail...>> {};

/// Calls f.template operator()<Op>() for the unit whose kOpcode is `op`;
/// returns false when no unit has it (an opcode out of range). A fold over the
/// list: no table of function pointers, every call resolved at compile time.
template <class F, class... Op>
bool visit(Opcode op, F&& f, OpList<Op...>) {
  return ((op == Op::kOpcode ? (f.template operator()<Op>(), true) : false) || ...);
}
template <class F>
bool visit(Opcode op, F&& f) {
  return visit(op, static_cast<F&&>(f), Ops{});
}

/// Calls f.template operator()<Op>() for every unit, in opcode order.
template <class F, class... Op>
void for_each(F&& f, OpList<Op...>) {
  (f.template operator()<Op>(), ...);
}
template <class F>
void for_each(F&& f) {
  for_each(static_cast<F&&>(f), Ops{});
}

}  // namespace keel::ops
