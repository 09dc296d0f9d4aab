// The CPU executor's task dispatcher: a task runs its opcode unit's CPU twin
// (src/ops/<op>_cpu.cpp), chosen through the one opcode list (src/ops/ops.h).
#include "exec/cpu/tasks.h"

#include "core/error.h"
#include "ops/ops.h"

namespace keel::exec::cpu {

void run_task(const TaskContext& c, const TaskDesc& t) {
  if (!ops::visit(program::Opcode(t.opcode), [&]<class Op>() { Op::run_cpu(c, t); }))
    fail("cpu executor: unknown opcode ", t.opcode);
}

}  // namespace keel::exec::cpu
