// ProgramExecutor's timed steps for the bench (the megakernel with per-step
// device timestamps and an optional Chrome trace, or one launch per operator,
// optionally in a CUDA graph), random KV contents, and single-task launches
// for the tests (see program_executor.h).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <fstream>
#include <iomanip>
#include <string>
#include <vector>

#include "core/error.h"
#include "exec/cuda/cuda_check.h"
#include "exec/cuda/executor_impl.h"
#include "exec/cuda/random_weights.h"

namespace keel::exec::cuda {

using detail::check_status;
using detail::device_alloc;
using detail::error_name;
using detail::prepare;

void ProgramExecutor::fill_kv_random(uint64_t seed) {
  Impl& I = *impl_;
  KEEL_CUDA_CHECK(cudaSetDevice(I.device));
  fill_random(I.kv, DType::BF16, p_.h.kv_bytes / 2, 0.0f, 1.0f, seed, I.stream);
  KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
}

namespace detail {

void arm_trace(ProgramExecutor::Impl& I, const program::Program& p, prog::DevProgram& P, int steps) {
  const int cap = int(p.worker_tasks.size() / size_t(p.h.n_workers) + 8) * std::min(steps, 4);
  P.trace = static_cast<uint64_t*>(device_alloc(size_t(p.h.n_workers) * size_t(cap) * prog::kTraceWords * 8, I.owned));
  P.trace_cap = cap;
}

void write_trace(const program::Program& p, const prog::DevProgram& P, const std::string& trace_json) {
  const auto& h = p.h;
  const int cap = P.trace_cap;
  constexpr size_t kW = prog::kTraceWords;
  std::vector<uint64_t> tr(size_t(h.n_workers) * size_t(cap) * kW);
  KEEL_CUDA_CHECK(cudaMemcpy(tr.data(), P.trace, tr.size() * 8, cudaMemcpyDeviceToHost));
  uint64_t t_min = ~0ull;
  for (size_t k = 0; k < tr.size(); k += kW)
    if (tr[k + 1]) t_min = std::min(t_min, tr[k + 1]);
  std::ofstream f(trace_json);
  f << std::fixed << std::setprecision(3);  // microseconds to the nanosecond (6 digits would round to 1 us)
  KEEL_CHECK(f.good(), "cuda bench: cannot write ", trace_json);
  f << "{\"traceEvents\":[\n";
  bool first = true;
  for (int w = 0; w < h.n_workers; ++w)
    for (int k = 0; k < cap; ++k) {
      const uint64_t* e = &tr[(size_t(w) * size_t(cap) + size_t(k)) * kW];
      if (!e[1] || !e[5]) continue;
      const uint32_t pos = uint32_t(e[0] & 0xffffffffu), step = uint32_t(e[0] >> 32);
      const program::TaskDesc& t = p.tasks[p.worker_tasks[p.worker_offsets[size_t(w)] + pos]];
      const program::OpDesc& op = p.ops[t.op];
      auto us = [&](uint64_t a, uint64_t z) { return a && z >= a ? double(z - a) * 1e-3 : 0.0; };
      auto ev = [&](const std::string& name, uint64_t a, uint64_t z, const std::string& extra) {
        f << (first ? "" : ",\n") << "{\"name\":\"" << name << "\",\"ph\":\"X\",\"pid\":0,\"tid\":" << w
          << ",\"ts\":" << double(a - t_min) * 1e-3 << ",\"dur\":" << double(z - a) * 1e-3
          << ",\"args\":{\"step\":" << step << extra << "}}";
        first = false;
      };
      if (e[2] > e[1]) ev("wait", e[1], e[2], "");
      // prep_us: wait end -> input vector ready (wgmma matmul tiles: their stage loop's
      // start); stage_us: -> first ring stage landed (wgmma: with its first input chunk);
      // tail_us: the task's code returned -> barrier, signals and this record done
      std::string extra = e[3] ? cat(",\"prep_us\":", us(e[2], e[3]), ",\"stage_us\":", us(e[3], e[4])) : "";
      extra += cat(",\"tail_us\":", us(e[6], e[5]));
      // stream_us: first -> last ring stage landed; after_us: last stage landed -> code returned
      if (e[7]) extra += cat(",\"stream_us\":", us(e[4], e[7]), ",\"after_us\":", us(e[7], e[6]));
      ev(op.layer >= 0 ? cat(op.name, " L", op.layer) : std::string(op.name), e[2], e[5], extra);
    }
  f << "\n]}\n";
}

}  // namespace detail

void ProgramExecutor::trace_next_run(const std::string& trace_json) { impl_->trace_next = trace_json; }

std::vector<double> ProgramExecutor::time_steps(LaunchMode mode, int start_pos, int steps,
                                                const std::string& trace_json) {
  Impl& I = *impl_;
  const program::Program& p = p_;
  const auto& h = p.h;
  KEEL_CHECK(steps >= 2 && start_pos >= 1 && int64_t(start_pos) + steps < h.max_context, "cuda bench: ", steps,
             " steps from position ", start_pos, " do not fit the context of ", h.max_context);
  KEEL_CHECK(mode == LaunchMode::Megakernel || I.per_op_ok, "cuda bench: per-op launches of this Program are "
             "not possible: ", I.per_op_why);
  KEEL_CUDA_CHECK(cudaSetDevice(I.device));
  std::vector<Sequence> seqs(size_t(h.batch));
  for (auto& s : seqs) {
    s.prompt = {0};
    s.max_new = steps + 1;
  }
  prog::DevProgram P = prepare(I, p, seqs, RunOptions{}, start_pos, steps);
  std::vector<double> ms;
  if (mode == LaunchMode::Megakernel) {
    P.step_ns = I.step_ns;
    P.step_ns_cap = I.step_ns_cap;
    if (!trace_json.empty()) detail::arm_trace(I, p, P, steps);
    prog::launch_program(P, I.smem, I.stream);
    KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
    check_status(I, p, P);
    std::vector<uint64_t> ns(size_t(steps) + 1, 0);
    KEEL_CUDA_CHECK(cudaMemcpy(ns.data(), I.step_ns, size_t(steps) * 8, cudaMemcpyDeviceToHost));
    for (int s = 1; s < steps; ++s) ms.push_back(double(ns[size_t(s)] - ns[size_t(s - 1)]) * 1e-6);
    if (P.trace) detail::write_trace(p, P, trace_json);
  } else {
    std::vector<cudaEvent_t> ev(size_t(steps) + 1);
    for (auto& e : ev) KEEL_CUDA_CHECK(cudaEventCreate(&e));
    cudaGraphExec_t exec = nullptr;
    cudaGraph_t graph = nullptr;
    auto cleanup = [&] {
      for (auto& e : ev) cudaEventDestroy(e);
      if (exec) cudaGraphExecDestroy(exec);
      if (graph) cudaGraphDestroy(graph);
    };
    try {
      auto one_step = [&] {
        for (uint32_t op = 0; op < h.n_ops; ++op) prog::launch_op(P, int(op), I.smem, I.stream);
      };
      if (mode == LaunchMode::Graph) {
        KEEL_CUDA_CHECK(cudaStreamBeginCapture(I.stream, cudaStreamCaptureModeThreadLocal));
        one_step();
        KEEL_CUDA_CHECK(cudaStreamEndCapture(I.stream, &graph));
        KEEL_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      }
      KEEL_CUDA_CHECK(cudaEventRecord(ev[0], I.stream));
      for (int s = 0; s < steps; ++s) {
        if (exec) KEEL_CUDA_CHECK(cudaGraphLaunch(exec, I.stream));
        else one_step();
        KEEL_CUDA_CHECK(cudaEventRecord(ev[size_t(s) + 1], I.stream));
      }
      KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
      check_status(I, p, P);
      for (int s = 1; s < steps; ++s) {  // the first step includes the graph upload
        float t = 0;
        KEEL_CUDA_CHECK(cudaEventElapsedTime(&t, ev[size_t(s)], ev[size_t(s) + 1]));
        ms.push_back(t);
      }
    } catch (...) {
      cleanup();
      throw;
    }
    cleanup();
  }
  // sequence 0's tokens of these steps: the history after start_pos
  I.last_tokens.assign(size_t(steps), 0);
  KEEL_CUDA_CHECK(cudaMemcpy(I.last_tokens.data(),
                             I.ptr[size_t(h.buf_tokens)] + (size_t(start_pos) + 1) * sizeof(int32_t),
                             size_t(steps) * sizeof(int32_t), cudaMemcpyDeviceToHost));
  return ms;
}

void ProgramExecutor::run_single_task(uint32_t task) {
  Impl& I = *impl_;
  KEEL_CHECK(task < p_.tasks.size(), "cuda program executor: no task ", task);
  KEEL_CUDA_CHECK(cudaSetDevice(I.device));
  prog::DevStatus st0;
  KEEL_CUDA_CHECK(cudaMemcpy(I.P.status, &st0, sizeof st0, cudaMemcpyHostToDevice));
  KEEL_CUDA_CHECK(cudaMemset(I.P.abort, 0, 4));
  prog::launch_single_task(I.P, task, I.smem, I.stream);
  KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
  prog::DevStatus st;
  KEEL_CUDA_CHECK(cudaMemcpy(&st, I.P.status, sizeof st, cudaMemcpyDeviceToHost));
  KEEL_CHECK(st.error == prog::kErrNone, "cuda program executor: ", error_name(st.error), " (detail ", st.detail,
             ") in ", program::describe_task(p_, task));
}

}  // namespace keel::exec::cuda
