// KvAppend's CPU twin (see kv_append.h): each lane's append, as the appending
// Attention chunk does it (exec/cpu append_kv).
#include "exec/cpu/kernels_common.h"
#include "ops/kv_append.h"

namespace keel::ops {

using namespace exec::cpu;

void KvAppend::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands o = Operands::from(t);
  for (int b = t.b0; b < t.b1; ++b) {
    const program::SeqState& st = c.as<program::SeqState>(o.state)[b];
    if (st.done) continue;  // a finished prefill lane's frozen position is another step's
    append_kv(c, o.qkv, o.k_norm, o.k_cache, o.v_cache, b, o.kv_head, st.pos);
  }
}

}  // namespace keel::ops
