// CpuExecutor: launch setup (the host's part of the run-time contract in
// docs/program-format.md) and the scheduler. Each logical worker is a small
// state machine (step, position); a thread claims a free worker, runs its next
// task if every wait is met (acquire loads), signals (release adds) and moves
// on. Workers never block a thread, so any number of them share any number of
// threads without deadlock, as long as the Program is deadlock-free.
#include "exec/cpu/executor.h"
#include "exec/common/launch_state.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <random>
#include <thread>

#include "core/error.h"

namespace keel::exec::cpu {

using program::BufferKind;
using program::Control;
using program::SeqState;

struct CpuExecutor::Impl {
  std::unique_ptr<std::atomic<uint32_t>[]> counters;
};

void CpuExecutor::copy_kv_to(CpuExecutor& dst, int to, int from, int64_t positions) const {
  for (const KvCopy& c : kv_sequence_copies(p_, from, dst.p_, to, positions, "cpu executor")) {
    const program::BufferDesc &s = p_.buffer(c.src_buf), &d = dst.p_.buffer(c.dst_buf);
    KEEL_CHECK(c.src_offset + c.bytes <= s.count * 2 && c.dst_offset + c.bytes <= d.count * 2,
               "cpu executor: KV copy outside its buffers");
    std::memcpy(dst.ctx_.ptr[size_t(c.dst_buf)] + c.dst_offset, ctx_.ptr[size_t(c.src_buf)] + c.src_offset, c.bytes);
  }
}

void CpuExecutor::copy_kv_pages(const std::vector<std::pair<int32_t, int32_t>>& from_to) {
  for (const auto& [from, to] : from_to)
    for (const KvCopy& c : kv_page_copies(p_, from, to, "cpu executor")) {
      const program::BufferDesc& b = p_.buffer(c.src_buf);
      KEEL_CHECK(c.src_offset + c.bytes <= b.count * 2 && c.dst_offset + c.bytes <= b.count * 2,
                 "cpu executor: KV page copy outside its buffers");
      std::memmove(ctx_.ptr[size_t(c.dst_buf)] + c.dst_offset, ctx_.ptr[size_t(c.src_buf)] + c.src_offset, c.bytes);
    }
}

CpuExecutor::CpuExecutor(const program::Program& p, const model::Model& m, CpuExecutor* kv_of)
    : p_(p), impl_(new Impl) {
  p.validate();
  const auto& h = p.h;
  check_program_model(p, m.config, m.dir, "cpu executor");
  workspace_.assign((h.workspace_bytes + 7) / 8, 0);
  if (kv_of) {
    check_kv_shareable(p, kv_of->p_, "cpu executor");
    kv_arena_ = kv_of->kv_arena_;
  } else {
    kv_.assign((h.kv_bytes + 7) / 8, 0);
    kv_arena_ = reinterpret_cast<uint8_t*>(kv_.data());
  }
  ctx_.p = &p_;
  ctx_.ptr.assign(p.buffers.size(), nullptr);
  ctx_.dtype.assign(p.buffers.size(), DType::F32);
  uint8_t* ws = reinterpret_cast<uint8_t*>(workspace_.data());
  uint8_t* kv = kv_arena_;
  for (size_t i = 0; i < p.buffers.size(); ++i) {
    const program::BufferDesc& b = p.buffers[i];
    ctx_.dtype[i] = DType(b.dtype);
    switch (BufferKind(b.kind)) {
      case BufferKind::Activation:
      case BufferKind::State: ctx_.ptr[i] = ws + b.offset; break;
      case BufferKind::Kv: ctx_.ptr[i] = kv + b.offset; break;
      case BufferKind::Constant:
        ctx_.ptr[i] = const_cast<uint8_t*>(p.constants.data()) + b.offset;
        break;
      case BufferKind::Weight: {
        const model::TensorView& tv = m.weights.get(std::string(b.name_view()));
        KEEL_CHECK(uint64_t(tv.numel()) == b.count, "cpu executor: weight '", b.name_view(), "' has ", tv.numel(),
                   " elements in ", tv.file, ", the Program expects ", b.count);
        ctx_.ptr[i] = const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(tv.data));
        ctx_.dtype[i] = tv.dtype;
        break;
      }
    }
  }
  impl_->counters.reset(new std::atomic<uint32_t>[std::max<uint32_t>(h.n_counters, 1)]);
  ctx_.counters = impl_->counters.get();
}

CpuExecutor::~CpuExecutor() = default;

RunResult CpuExecutor::run(const std::vector<Sequence>& seqs, const RunOptions& opt) {
  const auto& h = p_.h;
  const int B = h.batch, W = h.n_workers;
  // --- launch setup (launch_state.h), then the counters ---
  const void* embed = ctx_.ptr[size_t(h.buf_embed)];
  const DType embed_dtype = ctx_.dtype[size_t(h.buf_embed)];
  write_launch_state(
      p_, seqs, opt, reinterpret_cast<uint8_t*>(workspace_.data()),
      [&](int32_t tok, float* row) {
        for (int64_t i = 0; i < h.hidden; ++i) row[i] = load_as_f32(embed, embed_dtype, size_t(tok) * h.hidden + i);
      },
      "cpu executor");
  for (uint32_t c = 0; c < h.n_counters; ++c) impl_->counters[c].store(0, std::memory_order_relaxed);
  const Control& ctl = *ctx_.as<Control>(h.buf_control);

  RunResult res;
  res.seqs.resize(seqs.size());
  std::mutex host_mu;
  const auto t0 = std::chrono::steady_clock::now();
  bool first = true;
  StepHooks hooks;
  hooks.on_token = [&](int b, int32_t tok, float lp) {
    std::lock_guard<std::mutex> lk(host_mu);
    if (first) {
      res.first_token_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      first = false;
    }
    res.seqs[size_t(b)].tokens.push_back(tok);
    if (seqs[size_t(b)].logprobs) res.seqs[size_t(b)].logprobs.push_back(lp);
    if (opt.on_token && !opt.on_token(b, tok, lp))
      __atomic_store_n(&ctx_.as<Control>(h.buf_control)->stop_request, 1, __ATOMIC_RELAXED);
  };
  if (opt.capture_logits)
    hooks.capture = [&](int b, const float* logits) {
      auto& v = res.seqs[size_t(b)].logits;
      v.insert(v.end(), logits, logits + h.vocab);
    };
  TaskContext ctx = ctx_;
  ctx.hooks = &hooks;

  // --- scheduler ---
  struct Worker {
    std::atomic<bool> busy{false};
    int step = 0;
    uint32_t pos = 0;
    std::atomic<bool> finished{false};  // read by threads scanning for work
  };
  std::vector<Worker> workers(static_cast<size_t>(W));
  std::atomic<int> unfinished{W};
  std::atomic<bool> failed{false};
  std::atomic<uint64_t> tasks_run{0};
  std::atomic<int64_t> last_progress_ns{0};
  std::exception_ptr error;
  std::atomic<uint32_t>* counters = impl_->counters.get();
  const SeqState* states = ctx_.as<SeqState>(h.buf_state);
  auto now_ns = [&] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
  };
  auto ready = [&](const program::TaskDesc& t, int step) {
    for (uint32_t i = 0; i < t.wait_count; ++i) {
      const program::WaitDesc& w = p_.waits[t.wait_begin + i];
      const int64_t target = int64_t(w.expected) * (step + w.offset);
      if (target > 0 && int64_t(counters[w.counter].load(std::memory_order_acquire)) < target) return false;
    }
    return true;
  };
  // Advances worker w by at most `budget` tasks; returns tasks run (or -1 when
  // the worker moved past a gate / finished without running a task).
  auto advance = [&](int w, int budget) {
    Worker& k = workers[size_t(w)];
    const uint32_t* list = p_.worker_begin(w);
    const uint32_t len = uint32_t(p_.worker_end(w) - list);
    int ran = 0;
    bool moved = false;
    while (!k.finished.load(std::memory_order_relaxed) && ran < budget) {
      if (k.pos == 0) {  // step gate
        if (k.step > 0 &&
            int64_t(counters[h.step_counter].load(std::memory_order_acquire)) < int64_t(h.step_expected) * k.step)
          break;
        if (len == 0) {  // nothing to run, ever
          k.finished.store(true, std::memory_order_relaxed);
          unfinished.fetch_sub(1);
          moved = true;
          break;
        }
        bool all_done = true;
        for (int b = 0; b < B; ++b) all_done &= states[b].done != 0;
        if (all_done || k.step >= ctl.max_steps) {
          k.finished.store(true, std::memory_order_relaxed);
          unfinished.fetch_sub(1);
          moved = true;
          break;
        }
      }
      const program::TaskDesc& t = p_.tasks[list[k.pos]];
      if (!ready(t, k.step)) break;
      run_task(ctx, t);
      bool last_step_task = false;
      for (uint32_t i = 0; i < t.signal_count; ++i) {
        const uint32_t c = p_.signals[t.signal_begin + i];
        const uint32_t old = counters[c].fetch_add(1, std::memory_order_acq_rel);
        if (c == h.step_counter && old + 1 == h.step_expected * uint32_t(k.step + 1)) last_step_task = true;
      }
      ++ran;
      if (last_step_task && opt.on_step) {
        std::lock_guard<std::mutex> lk(host_mu);
        opt.on_step(k.step);
      }
      if (++k.pos == len) {
        k.pos = 0;
        ++k.step;
      }
    }
    return ran > 0 ? ran : (moved ? -1 : 0);
  };
  int threads = opt.threads > 0 ? opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min(threads, W);
  auto thread_main = [&](int tid) {
    std::mt19937_64 rng(opt.shuffle_seed * 0x9E3779B97F4A7C15ull + uint64_t(tid) + 1);
    int cursor = tid * W / threads;
    int idle = 0;
    while (unfinished.load() > 0 && !failed.load()) {
      int w = opt.shuffle ? int(rng() % uint64_t(W)) : cursor;
      cursor = (cursor + 1) % W;
      Worker& k = workers[size_t(w)];
      if (k.finished.load(std::memory_order_relaxed) || k.busy.exchange(true, std::memory_order_acquire)) continue;
      int ran = 0;
      try {
        ran = advance(w, opt.shuffle ? 1 : 64);
      } catch (...) {
        std::lock_guard<std::mutex> lk(host_mu);
        if (!failed.exchange(true)) error = std::current_exception();
      }
      k.busy.store(false, std::memory_order_release);
      if (ran != 0) {
        if (ran > 0) tasks_run.fetch_add(uint64_t(ran), std::memory_order_relaxed);
        last_progress_ns.store(now_ns(), std::memory_order_relaxed);
        idle = 0;
        if (opt.shuffle && (rng() & 3) == 0) std::this_thread::yield();
      } else if (++idle >= 2 * W) {
        idle = 0;
        std::this_thread::yield();
        if (double(now_ns() - last_progress_ns.load()) > opt.hang_seconds * 1e9 && !failed.exchange(true)) {
          std::lock_guard<std::mutex> lk(host_mu);
          std::string where;
          for (int v = 0; v < W && where.size() < 400; ++v)
            if (!workers[size_t(v)].finished.load() && p_.worker_end(v) != p_.worker_begin(v))
              where += cat(" [worker ", v, " step ", workers[size_t(v)].step, " at ",
                           program::describe_task(p_, p_.worker_begin(v)[workers[size_t(v)].pos]), "]");
          error = std::make_exception_ptr(Error(cat("cpu executor: no task could run for ", opt.hang_seconds,
                                                    " s (deadlock?):", where)));
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(thread_main, i);
  thread_main(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  res.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  res.tasks_run = tasks_run.load();
  res.steps = int(counters[h.step_counter].load() / std::max<uint32_t>(h.step_expected, 1));
  const std::vector<int> lanes = sequence_lanes(h, seqs, "cpu executor");
  for (size_t k = 0; k < seqs.size(); ++k) res.seqs[k].stop = program::StopReason(states[size_t(lanes[k])].stop_reason);
  return res;
}

}  // namespace keel::exec::cpu
