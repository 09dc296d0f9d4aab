// Host side of the CUDA executor (see executor.h): weight upload / random
// generation in the device layout (layout.h), the per-SM planner, the three
// launch modes, token streaming through mapped pinned memory, and the
// watchdog report.
//
// Device layout: each layer's q/k/v matrices are concatenated into one
// [q+2kv, ldh] matrix and gate/up are interleaved row by row into [2I, ldh], so
// one task streams one contiguous row range; every row is padded to 16 bytes
// (zeros) so the copy engine can move it. Norm weights and biases are fp32.
//
// Planning: every stage (QKV, ATTN, OPROJ, GATEUP, DOWN per layer; LMHEAD;
// STEP) is split evenly over the CTAs, so every SM streams the same bytes in
// every stage; each task waits for the whole previous stage (its counter at
// tasks-in-stage x steps) and signals its own stage's counter.
#include "exec/cuda/executor.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "exec/cuda/cuda_check.h"
#include "exec/cuda/device_info.h"
#include "exec/cuda/kernels.h"
#include "model/model.h"

namespace keel::exec::cuda {

std::string_view launch_mode_name(LaunchMode m) {
  switch (m) {
    case LaunchMode::Megakernel: return "megakernel";
    case LaunchMode::PerOp: return "per-op";
    case LaunchMode::Graph: return "graph";
  }
  return "?";
}

namespace {

constexpr int kStagesPerLayer = 5;
const char* kOpNames[] = {"qkv", "attn", "oproj", "gateup", "down", "lmhead", "step"};

int64_t pad16(int64_t k, size_t esize) {
  const int64_t per = int64_t(16 / esize);
  return (k + per - 1) / per * per;
}

WType to_wtype(DType t) {
  switch (t) {
    case DType::BF16: return WType::BF16;
    case DType::F16: return WType::F16;
    case DType::F32: return WType::F32;
  }
  return WType::BF16;
}

size_t wsize(WType t) { return t == WType::F32 ? 4 : 2; }

std::vector<float> rope_inv_freq(const model::ModelConfig& c) {
  const int half = int(c.head_dim / 2);
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(c.rope.theta, double(2 * i) / double(c.head_dim));
    if (c.rope.type == model::RopeType::Linear) {
      f /= c.rope.factor;
    } else if (c.rope.type == model::RopeType::Llama3) {
      const double orig = double(c.rope.original_max_position);
      const double low_wl = orig / c.rope.low_freq_factor, high_wl = orig / c.rope.high_freq_factor;
      const double wl = 2 * M_PI / f;
      if (wl > low_wl) {
        f /= c.rope.factor;
      } else if (wl >= high_wl) {
        const double smooth =
            (orig / wl - c.rope.low_freq_factor) / (c.rope.high_freq_factor - c.rope.low_freq_factor);
        f = (1 - smooth) * f / c.rope.factor + smooth * f;
      }
    }
    inv[i] = float(f);
  }
  return inv;
}

}  // namespace

struct Executor::Impl {
  model::ModelConfig cfg;
  ExecutorOptions opt;
  int sms = 0, grid = 0;
  size_t smem_optin = 0;
  cudaStream_t stream = nullptr;
  std::vector<void*> allocs;
  std::vector<DevLayer> layers_h;
  DevModel dm{};
  // Plan.
  std::vector<DevTask> tasks;
  std::vector<int32_t> list_begin;
  int n_counters = 0, n_lm = 0, attn_chunks = 1, n_stage_ids = 0;
  uint32_t stage_bytes = 0, act_bytes = 0, res_bytes = 0, copy_bytes = 32768;
  int l2_hint = 1, l2_ahead = 0;
  int n_stages = 0, attn_sub = 32;
  size_t dyn_smem = 0;
  DevTask* tasks_d = nullptr;
  int32_t* list_begin_d = nullptr;
  Params P{};
  // Host-mapped.
  int32_t *tokens_h = nullptr, *n_out_h = nullptr, *host_stop_h = nullptr;
  uint64_t bytes_per_token = 0;
  int32_t* bench_tokens = nullptr;  // device [max_ctx + 1]
  int32_t* bench_n = nullptr;
  std::vector<int32_t> last_tokens;

  ~Impl() {
    for (void* p : allocs) cudaFree(p);
    if (tokens_h) cudaFreeHost(tokens_h);
    if (n_out_h) cudaFreeHost(n_out_h);
    if (host_stop_h) cudaFreeHost(host_stop_h);
    if (stream) cudaStreamDestroy(stream);
  }

  void* alloc(size_t bytes) {
    void* p = nullptr;
    KEEL_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
    allocs.push_back(p);
    KEEL_CUDA_CHECK(cudaMemsetAsync(p, 0, std::max<size_t>(bytes, 16), stream));
    return p;
  }
  // Everything goes through `stream` (non-blocking: it does not order with the
  // legacy default stream, so a plain cudaMemcpy could land before alloc's memset).
  template <class T>
  T* upload(const std::vector<T>& v) {
    T* p = static_cast<T*>(alloc(v.size() * sizeof(T)));
    KEEL_CUDA_CHECK(cudaMemcpyAsync(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
    KEEL_CUDA_CHECK(cudaStreamSynchronize(stream));
    return p;
  }

  void init_device(const model::ModelConfig& c, const ExecutorOptions& o, WType wt) {
    cfg = c;
    opt = o;
    auto gpus = list_gpus();
    KEEL_CHECK(!gpus.empty(), "cuda backend: no CUDA device found");
    KEEL_CHECK(o.device >= 0 && o.device < int(gpus.size()), "cuda backend: no device ", o.device);
    const GpuInfo& g = gpus[o.device];
    KEEL_CHECK(g.cc_major >= 9, "cuda backend: ", g.name, " (sm_", g.cc_major, g.cc_minor,
               ") is not supported; keel's kernels are built for sm_90a (Hopper)");
    KEEL_CUDA_CHECK(cudaSetDevice(o.device));
    KEEL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    sms = g.sm_count;
    grid = o.workers > 0 ? o.workers : sms;
    smem_optin = size_t(g.smem_per_block_optin);
    KEEL_CHECK(c.n_heads % c.n_kv_heads == 0, "cuda backend: heads ", c.n_heads,
               " not a multiple of kv heads ", c.n_kv_heads);
    KEEL_CHECK(c.head_dim % 8 == 0 && c.head_dim <= 256 && (c.n_heads / c.n_kv_heads) * c.head_dim <= 2048,
               "cuda backend: head_dim ", c.head_dim, " unsupported (multiple of 8, <= 256)");
    int64_t ctx = o.max_context > 0 ? o.max_context : std::min<int64_t>(c.max_position, 4096);
    if (ctx <= 0) ctx = 4096;
    dm.hidden = int(c.hidden);
    dm.inter = int(c.intermediate);
    dm.n_layers = int(c.n_layers);
    dm.n_heads = int(c.n_heads);
    dm.n_kv_heads = int(c.n_kv_heads);
    dm.head_dim = int(c.head_dim);
    dm.vocab = int(c.vocab);
    dm.wtype = wt;
    dm.ldh = int(pad16(c.hidden, wsize(wt)));
    dm.ldq = int(pad16(c.q_dim(), wsize(wt)));
    dm.ldi = int(pad16(c.intermediate, wsize(wt)));
    dm.max_ctx = int(ctx);
    dm.sliding_window = int(c.sliding_window);
    dm.rms_eps = float(c.rms_eps);
    // Bytes streamed per token.
    const uint64_t es = wsize(wt);
    uint64_t per_layer = uint64_t(c.q_dim() + 2 * c.kv_dim()) * c.hidden + uint64_t(c.hidden) * c.q_dim() +
                         3ull * c.hidden * c.intermediate;
    bytes_per_token = (per_layer * c.n_layers + uint64_t(c.vocab) * c.hidden + c.hidden) * es;
  }

  void check_memory(uint64_t weight_bytes) {
    const uint64_t kv = 2ull * cfg.n_layers * cfg.n_kv_heads * uint64_t(dm.max_ctx) * cfg.head_dim * 2;
    size_t free_b = 0, total_b = 0;
    KEEL_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const uint64_t need = weight_bytes + kv + (64ull << 20);
    KEEL_CHECK(need <= free_b, "cuda backend: not enough GPU memory: need ", need / 1048576.0 / 1024.0,
               " GiB (weights ", weight_bytes / 1073741824.0, " GiB, KV cache for ", dm.max_ctx,
               " positions ", kv / 1073741824.0, " GiB), ", free_b / 1073741824.0,
               " GiB free; lower --max-context");
  }

  void alloc_cache_and_rope() {
    const size_t kv = size_t(cfg.n_layers) * cfg.n_kv_heads * size_t(dm.max_ctx) * cfg.head_dim;
    dm.k_cache = static_cast<uint16_t*>(alloc(kv * 2));
    dm.v_cache = static_cast<uint16_t*>(alloc(kv * 2));
    dm.inv_freq = upload(rope_inv_freq(cfg));
  }

  void plan() {
    const int G = grid;
    const int L = dm.n_layers, nkv = dm.n_kv_heads, gq = dm.n_heads / nkv;
    attn_chunks = std::clamp(opt.attn_chunks > 0 ? opt.attn_chunks : G / nkv, 1, 16);  // merge scratch holds 16
    const int C = attn_chunks;
    n_stage_ids = L * kStagesPerLayer + 2;
    n_counters = n_stage_ids + 1;  // + one nobody signals (watchdog test)
    const int lm_stage = L * kStagesPerLayer, step_stage = lm_stage + 1;
    std::vector<std::vector<DevTask>> per(G);
    int prev_counter = step_stage, prev_offset = 0;
    uint32_t prev_count = 1;
    auto add_stage = [&](Op op, int layer, int stage, int rows, bool pairs) {
      uint32_t count = 0;
      if (op == Op::ATTN) {
        const int n = nkv * C;
        for (int k = 0; k < n; ++k) {
          DevTask t{};
          t.op = op;
          t.wtype = dm.wtype;
          t.layer = uint16_t(layer);
          t.row0 = k / C;
          t.row1 = k % C;
          t.index = C;
          t.stage = stage;
          per[size_t(k) * G / n].push_back(t);
          ++count;
        }
      } else if (op == Op::STEP) {
        DevTask t{};
        t.op = op;
        t.stage = stage;
        per[0].push_back(t);
        count = 1;
      } else {
        const int units = pairs ? rows / 2 : rows;
        for (int b = 0; b < G; ++b) {
          int r0 = int(int64_t(units) * b / G), r1 = int(int64_t(units) * (b + 1) / G);
          if (r1 <= r0) continue;
          DevTask t{};
          t.op = op;
          t.wtype = dm.wtype;
          t.layer = uint16_t(layer);
          t.row0 = pairs ? 2 * r0 : r0;
          t.row1 = pairs ? 2 * r1 : r1;
          t.stage = stage;
          t.index = op == Op::LMHEAD ? int(count) : 0;
          per[b].push_back(t);
          ++count;
        }
      }
      // Wire the waits of this stage's tasks (the tasks just appended).
      for (auto& lst : per)
        for (auto& t : lst)
          if (t.stage == stage) {
            t.wait_counter = prev_counter;
            t.wait_per_step = prev_count;
            t.wait_offset = prev_offset;
            t.signal_counter = stage;
          }
      prev_counter = stage;
      prev_count = count;
      prev_offset = 1;
      return count;
    };
    const int qkv_rows = dm.n_heads * dm.head_dim + 2 * nkv * dm.head_dim;
    for (int l = 0; l < L; ++l) {
      const int base = l * kStagesPerLayer;
      add_stage(Op::QKV, l, base + 0, qkv_rows, false);
      add_stage(Op::ATTN, l, base + 1, 0, false);
      add_stage(Op::OPROJ, l, base + 2, dm.hidden, false);
      add_stage(Op::GATEUP, l, base + 3, 2 * dm.inter, true);
      add_stage(Op::DOWN, l, base + 4, dm.hidden, false);
    }
    n_lm = int(add_stage(Op::LMHEAD, 0, lm_stage, dm.vocab, false));
    add_stage(Op::STEP, 0, step_stage, 0, false);
    tasks.clear();
    list_begin.assign(1, 0);
    for (auto& lst : per) {
      tasks.insert(tasks.end(), lst.begin(), lst.end());
      list_begin.push_back(int32_t(tasks.size()));
    }
    // Shared memory: ring stages + activation / attention scratch.
    const size_t es = wsize(dm.wtype);
    size_t row_max = std::max({2 * size_t(dm.ldh) * es, size_t(dm.ldq) * es, size_t(dm.ldi) * es});
    // Tunables (environment overrides for experiments; see docs/cuda-executor.md).
    auto env_int = [](const char* name, long dflt) {
      const char* e = std::getenv(name);
      return e && *e ? std::strtol(e, nullptr, 10) : dflt;
    };
    stage_bytes = uint32_t(std::max<size_t>(size_t(env_int("KEEL_CUDA_STAGE_KB", 64)) * 1024,
                                            (row_max + 15) / 16 * 16));
    copy_bytes = uint32_t(std::max(1L, env_int("KEEL_CUDA_COPY_KB", 64))) * 1024;
    l2_hint = int(env_int("KEEL_CUDA_L2_HINT", 1));
    l2_ahead = int(env_int("KEEL_CUDA_L2_AHEAD", 0));
    attn_sub = 32;
    size_t attn_bytes = size_t(attn_scratch_floats(gq, dm.head_dim, attn_sub)) * 4;
    size_t act = std::max(size_t(std::max({dm.ldh, dm.ldq, dm.ldi})) * 2, attn_bytes);
    act_bytes = uint32_t((act + 127) / 128 * 128);
    // Per-task results (every matvec task but the LM head's keeps its rows' sums).
    // With several warps per row a task keeps (warps per row + 1) floats per row.
    auto cap_for = [&](int ld) {
      const size_t fit = stage_bytes / (size_t(ld) * es);
      int cap = 1;
      while (size_t(cap) * 2 <= fit && cap * 2 <= 256) cap *= 2;
      return cap;
    };
    int max_rows = 0;
    size_t res_floats = 0;
    for (const auto& t : tasks) {
      int ld = 0;
      if (t.op == Op::QKV || t.op == Op::GATEUP) ld = dm.ldh;
      else if (t.op == Op::OPROJ) ld = dm.ldq;
      else if (t.op == Op::DOWN) ld = dm.ldi;
      else continue;
      const int wpr = std::max(1, 256 / cap_for(ld) / 32);
      max_rows = std::max(max_rows, t.row1 - t.row0);
      res_floats = std::max(res_floats, size_t(t.row1 - t.row0) * (wpr > 1 ? wpr + 1 : 1));
    }
    res_bytes = uint32_t((res_floats * 4 + 127) / 128 * 128);
    size_t max_tasks = 0;
    for (size_t b = 0; b + 1 < list_begin.size(); ++b)
      max_tasks = std::max(max_tasks, size_t(list_begin[b + 1] - list_begin[b]));
    const size_t tlist_bytes = (max_tasks * sizeof(DevTask) + 127) / 128 * 128;
    KEEL_CHECK(tlist_bytes <= 32768, "cuda backend: ", max_tasks,
               " tasks per SM exceed the shared-memory task list (use more workers)");
    const size_t fixed_bytes = res_bytes + tlist_bytes;
    const size_t budget = smem_optin - kStaticSmemReserve;
    KEEL_CHECK(budget > act_bytes + fixed_bytes + 2 * size_t(stage_bytes),
               "cuda backend: rows of ", row_max, " bytes and tasks of ", max_rows,
               " rows do not fit two ring stages in ", smem_optin,
               " bytes of shared memory (use more workers)");
    n_stages = int(std::min<size_t>(kMaxRingStages, (budget - act_bytes - fixed_bytes) / stage_bytes));
    n_stages = std::max(2, std::min(n_stages, int(env_int("KEEL_CUDA_MAX_STAGES", kMaxRingStages))));
    // Shared memory the ring leaves over goes to the activation / attention
    // scratch: a larger attention sub-block holds a whole split-KV chunk, which
    // the task prefetches before its input wait.
    act_bytes = uint32_t((budget - fixed_bytes - size_t(n_stages) * stage_bytes) / 128 * 128);
    const int gq4 = (gq + 3) & ~3;
    const int fixed = gq * dm.head_dim + 2 * dm.head_dim + 3 * gq4;
    attn_sub = std::clamp((int(act_bytes / 4) - fixed) / (gq + dm.head_dim) / 4 * 4, 4, 256);
    KEEL_CHECK(size_t(attn_scratch_floats(gq, dm.head_dim, attn_sub)) * 4 <= act_bytes,
               "cuda backend: attention scratch does not fit");
    dyn_smem = size_t(n_stages) * stage_bytes + act_bytes + fixed_bytes;
    const int per_sm = prepare_kernels(dyn_smem);
    KEEL_CHECK(per_sm >= 1 && grid <= per_sm * sms, "cuda backend: ", grid,
               " workers cannot be co-resident (", per_sm, " block(s) per SM x ", sms, " SMs)");
  }

  void setup_io() {
    tasks_d = upload(tasks);
    list_begin_d = upload(list_begin);
    // Per CTA and stage, the [first, end) of its tasks of that stage (lists follow stage order).
    std::vector<int32_t> range(size_t(grid) * n_stage_ids * 2, 0);
    for (int b = 0; b < grid; ++b)
      for (int i = list_begin[size_t(b)]; i < list_begin[size_t(b) + 1]; ++i) {
        const int local = i - list_begin[size_t(b)];
        int32_t* r = &range[(size_t(b) * n_stage_ids + tasks[size_t(i)].stage) * 2];
        if (r[1] == 0) r[0] = local;
        r[1] = local + 1;
      }
    P.stage_range = upload(range);
    P.n_stage_ids = n_stage_ids;
    const int C = attn_chunks;
    StepIO& io = P.io;
    io.x = static_cast<float*>(alloc(size_t(dm.hidden) * 4));
    io.qkv = static_cast<uint16_t*>(alloc(size_t(dm.n_heads + 2 * dm.n_kv_heads) * dm.head_dim * 2));
    io.attn = static_cast<uint16_t*>(alloc(size_t(dm.n_heads) * dm.head_dim * 2));
    io.hbuf = static_cast<uint16_t*>(alloc(size_t(dm.inter) * 2));
    io.part_o = static_cast<float*>(alloc(size_t(dm.n_heads) * C * dm.head_dim * 4));
    io.part_ml = static_cast<float*>(alloc(size_t(dm.n_heads) * C * 2 * 4));
    io.arrive = static_cast<uint32_t*>(alloc(size_t(dm.n_kv_heads) * 4));
    io.lm_val = static_cast<float*>(alloc(size_t(n_lm) * 4));
    io.lm_idx = static_cast<int32_t*>(alloc(size_t(n_lm) * 4));
    io.counters = static_cast<uint32_t*>(alloc(size_t(n_counters) * 4));
    io.cur_step = static_cast<int32_t*>(alloc(4));
    io.prompt = static_cast<int32_t*>(alloc(size_t(dm.max_ctx) * 4));
    io.eos = static_cast<int32_t*>(alloc(64 * 4));
    io.n_lm_tasks = n_lm;
    io.dev_stop = static_cast<int32_t*>(alloc(4));
    io.step_ns = static_cast<uint64_t*>(alloc(size_t(dm.max_ctx + 1) * 8));
    bench_tokens = static_cast<int32_t*>(alloc(size_t(dm.max_ctx + 2) * 4));
    bench_n = static_cast<int32_t*>(alloc(4));
    KEEL_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&tokens_h), size_t(dm.max_ctx + 1) * 4,
                                  cudaHostAllocMapped));
    KEEL_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&n_out_h), 4, cudaHostAllocMapped));
    KEEL_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_stop_h), 4, cudaHostAllocMapped));
    P.m = dm;
    P.tasks = tasks_d;
    P.list_begin = list_begin_d;
    P.step_counter = n_stage_ids - 1;
    P.stage_bytes = stage_bytes;
    P.n_stages = n_stages;
    P.act_bytes = act_bytes;
    P.res_bytes = res_bytes;
    P.attn_sub = attn_sub;
    P.copy_bytes = copy_bytes;
    P.l2_hint = l2_hint;
    P.l2_ahead = l2_ahead;
    P.timeout_ns = uint64_t(opt.watchdog_s * 1e9);
    P.abort_flag = static_cast<uint32_t*>(alloc(4));
    P.sm_state = static_cast<SmState*>(alloc(sizeof(SmState) * size_t(grid)));
    KEEL_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  /// Resets per-launch device state.
  void reset_launch_state() {
    KEEL_CUDA_CHECK(cudaMemsetAsync(P.io.counters, 0, size_t(n_counters) * 4, stream));
    KEEL_CUDA_CHECK(cudaMemsetAsync(P.io.arrive, 0, size_t(dm.n_kv_heads) * 4, stream));
    KEEL_CUDA_CHECK(cudaMemsetAsync(P.io.dev_stop, 0, 4, stream));
    KEEL_CUDA_CHECK(cudaMemsetAsync(P.abort_flag, 0, 4, stream));
    KEEL_CUDA_CHECK(cudaMemsetAsync(P.sm_state, 0xff, sizeof(SmState) * size_t(grid), stream));
  }

  std::string stage_name(int counter) const {
    if (counter < 0) return "none";
    const int L = dm.n_layers;
    if (counter < L * kStagesPerLayer)
      return cat(kOpNames[counter % kStagesPerLayer], "[layer ", counter / kStagesPerLayer, "]");
    if (counter == L * kStagesPerLayer) return "lmhead";
    if (counter == L * kStagesPerLayer + 1) return "step";
    return "unsignalled";
  }

  /// Throws the watchdog's report when the kernel aborted.
  void check_watchdog() {
    uint32_t aborted = 0;
    KEEL_CUDA_CHECK(cudaMemcpy(&aborted, P.abort_flag, 4, cudaMemcpyDeviceToHost));
    if (!aborted) return;
    std::vector<SmState> st(static_cast<size_t>(grid));
    KEEL_CUDA_CHECK(cudaMemcpy(st.data(), P.sm_state, sizeof(SmState) * st.size(), cudaMemcpyDeviceToHost));
    std::string msg = cat("cuda megakernel watchdog: no counter advanced for ", opt.watchdog_s,
                          " s; the kernel was stopped. Per-SM state:\n");
    int shown = 0, others = 0;
    for (int b = 0; b < grid; ++b) {
      const SmState& s = st[size_t(b)];
      if (s.reason == 1 || (s.reason == 2 && shown < 16)) {
        std::string task = "step start";
        if (s.task >= 0) {
          const DevTask& t = tasks[size_t(list_begin[size_t(b)] + s.task)];
          task = cat("task ", s.task, " (", kOpNames[int(t.op)], " layer ", t.layer, ")");
        }
        msg += cat("  SM ", b, ": ", task, " at step ", s.step, " waits for counter ", s.counter, " (",
                   stage_name(s.counter), ") >= ", s.expected, ", saw ", s.seen,
                   s.reason == 1 ? " [timed out]" : " [stopped]", "\n");
        ++shown;
      } else {
        ++others;
      }
    }
    if (others) msg += cat("  (", others, " more SMs stopped or finished)\n");
    std::fputs(msg.c_str(), stderr);
    throw Error(msg);
  }
};

Executor::Executor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Executor::~Executor() = default;

std::unique_ptr<Executor> Executor::from_model(const model::Model& m, const ExecutorOptions& opt) {
  auto I = std::make_unique<Impl>();
  const auto& c = m.config;
  const WType wt = to_wtype(m.weight_dtype);
  I->init_device(c, opt, wt);
  I->check_memory(m.weights.total_bytes());
  const size_t es = wsize(wt);
  const DevModel& d = I->dm;
  // Copies `rows` rows of `tv` into a padded [rows, ld] byte image at row `at`.
  auto put_rows = [&](std::vector<char>& img, size_t ld, size_t at, const model::TensorView& tv,
                      int64_t step = 1, int64_t first = 0) {
    KEEL_CHECK(tv.dtype == m.weight_dtype, "cuda backend: ", tv.name, " is ", dtype_name(tv.dtype),
               " but the other matrices are ", dtype_name(m.weight_dtype));
    const int64_t rows = tv.shape[0], k = tv.shape[1];
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(img.data() + ((at + size_t(r * step + first)) * ld) * es,
                  tv.data + size_t(r) * size_t(k) * es, size_t(k) * es);
  };
  auto upload_bytes = [&](const std::vector<char>& img) { return I->upload(img); };
  auto vec = [&](const model::TensorView* tv) -> const float* {
    return tv ? I->upload(tv->to_f32()) : nullptr;
  };
  const int64_t qd = c.q_dim(), kvd = c.kv_dim();
  for (const auto& lw : m.layers) {
    DevLayer L{};
    L.attn_norm = vec(lw.attn_norm);
    {
      std::vector<char> img(size_t(qd + 2 * kvd) * d.ldh * es, 0);
      put_rows(img, d.ldh, 0, *lw.wq);
      put_rows(img, d.ldh, size_t(qd), *lw.wk);
      put_rows(img, d.ldh, size_t(qd + kvd), *lw.wv);
      L.wqkv = upload_bytes(img);
    }
    if (lw.bq) {
      std::vector<float> b = lw.bq->to_f32(), bk = lw.bk->to_f32(), bv = lw.bv->to_f32();
      b.insert(b.end(), bk.begin(), bk.end());
      b.insert(b.end(), bv.begin(), bv.end());
      L.bqkv = I->upload(b);
    }
    L.q_norm = vec(lw.q_norm);
    L.k_norm = vec(lw.k_norm);
    {
      std::vector<char> img(size_t(c.hidden) * d.ldq * es, 0);
      put_rows(img, d.ldq, 0, *lw.wo);
      L.wo = upload_bytes(img);
    }
    L.bo = vec(lw.bo);
    L.mlp_norm = vec(lw.mlp_norm);
    {
      std::vector<char> img(size_t(2 * c.intermediate) * d.ldh * es, 0);
      put_rows(img, d.ldh, 0, *lw.w_gate, 2, 0);
      put_rows(img, d.ldh, 0, *lw.w_up, 2, 1);
      L.wgu = upload_bytes(img);
    }
    if (lw.b_gate && lw.b_up) {
      std::vector<float> g = lw.b_gate->to_f32(), u = lw.b_up->to_f32(), b(2 * g.size());
      for (size_t i = 0; i < g.size(); ++i) {
        b[2 * i] = g[i];
        b[2 * i + 1] = u[i];
      }
      L.bgu = I->upload(b);
    }
    {
      std::vector<char> img(size_t(c.hidden) * d.ldi * es, 0);
      put_rows(img, d.ldi, 0, *lw.w_down);
      L.wd = upload_bytes(img);
    }
    L.bd = vec(lw.b_down);
    I->layers_h.push_back(L);
  }
  I->dm.layers = I->upload(I->layers_h);
  I->dm.final_norm = vec(m.final_norm);
  {
    const auto& e = *m.embed;
    std::vector<char> raw(reinterpret_cast<const char*>(e.data),
                          reinterpret_cast<const char*>(e.data) + e.nbytes);
    I->dm.embed = upload_bytes(raw);
    I->dm.etype = to_wtype(e.dtype);
  }
  if (m.lm_head == m.embed && d.ldh == c.hidden && m.embed->dtype == m.weight_dtype) {
    I->dm.lm_head = I->dm.embed;
  } else {
    std::vector<char> img(size_t(c.vocab) * d.ldh * es, 0);
    put_rows(img, d.ldh, 0, *m.lm_head);
    I->dm.lm_head = upload_bytes(img);
  }
  I->alloc_cache_and_rope();
  I->plan();
  I->setup_io();
  return std::unique_ptr<Executor>(new Executor(std::move(I)));
}

std::unique_ptr<Executor> Executor::random(const model::ModelConfig& c, const ExecutorOptions& opt,
                                           uint64_t seed) {
  auto I = std::make_unique<Impl>();
  I->init_device(c, opt, WType::BF16);
  const DevModel& d = I->dm;
  const int64_t qd = c.q_dim(), kvd = c.kv_dim();
  const uint64_t mat_bytes =
      (uint64_t(qd + 2 * kvd) * d.ldh + uint64_t(c.hidden) * d.ldq + 2ull * c.intermediate * d.ldh +
       uint64_t(c.hidden) * d.ldi) * 2 * c.n_layers + uint64_t(c.vocab) * c.hidden * 2 * (c.tie_embeddings ? 1 : 2);
  I->check_memory(mat_bytes);
  cudaStream_t s = I->stream;
  uint64_t sd = seed * 1000003;
  auto mat = [&](int64_t rows, int64_t ld, int64_t k) {
    auto* p = static_cast<uint16_t*>(I->alloc(size_t(rows) * ld * 2));
    fill_random_bf16(p, size_t(rows), size_t(ld), size_t(k), 0.03f, ++sd, s);
    return p;
  };
  auto vecf = [&](int64_t n, float center, float scale) {
    auto* p = static_cast<float*>(I->alloc(size_t(n) * 4));
    fill_random_f32(p, size_t(n), center, scale, ++sd, s);
    return p;
  };
  for (int64_t l = 0; l < c.n_layers; ++l) {
    DevLayer L{};
    L.attn_norm = vecf(c.hidden, 1.0f, 0.05f);
    L.wqkv = mat(qd + 2 * kvd, d.ldh, c.hidden);
    if (c.qkv_bias) L.bqkv = vecf(qd + 2 * kvd, 0.0f, 0.02f);
    if (c.qk_norm) {
      L.q_norm = vecf(c.head_dim, 1.0f, 0.05f);
      L.k_norm = vecf(c.head_dim, 1.0f, 0.05f);
    }
    L.wo = mat(c.hidden, d.ldq, qd);
    if (c.o_bias) L.bo = vecf(c.hidden, 0.0f, 0.02f);
    L.mlp_norm = vecf(c.hidden, 1.0f, 0.05f);
    L.wgu = mat(2 * c.intermediate, d.ldh, c.hidden);
    if (c.mlp_bias) {
      L.bgu = vecf(2 * c.intermediate, 0.0f, 0.02f);
      L.bd = vecf(c.hidden, 0.0f, 0.02f);
    }
    L.wd = mat(c.hidden, d.ldi, c.intermediate);
    I->layers_h.push_back(L);
  }
  I->dm.layers = I->upload(I->layers_h);
  I->dm.final_norm = vecf(c.hidden, 1.0f, 0.05f);
  I->dm.etype = WType::BF16;
  uint16_t* emb = mat(c.vocab, c.hidden, c.hidden);
  I->dm.embed = emb;
  I->dm.lm_head = (c.tie_embeddings && d.ldh == c.hidden) ? static_cast<const void*>(emb)
                                                          : mat(c.vocab, d.ldh, c.hidden);
  I->alloc_cache_and_rope();
  KEEL_CUDA_CHECK(cudaStreamSynchronize(s));
  I->plan();
  I->setup_io();
  return std::unique_ptr<Executor>(new Executor(std::move(I)));
}

int Executor::workers() const { return impl_->grid; }
int64_t Executor::max_context() const { return impl_->dm.max_ctx; }
const model::ModelConfig& Executor::config() const { return impl_->cfg; }
uint64_t Executor::weight_bytes_per_token() const { return impl_->bytes_per_token; }
const std::vector<int32_t>& Executor::last_step_tokens() const { return impl_->last_tokens; }
size_t Executor::tasks_per_step() const { return impl_->tasks.size(); }
int Executor::stages_per_step() const { return impl_->n_stage_ids; }

void Executor::fill_kv_random(int upto, uint64_t seed) {
  Impl& I = *impl_;
  KEEL_CHECK(upto >= 0 && upto <= I.dm.max_ctx, "cuda backend: KV fill ", upto, " past context ",
             I.dm.max_ctx);
  const size_t rows = size_t(I.dm.n_layers) * I.dm.n_kv_heads * I.dm.max_ctx;
  // Whole cache (cheap): positions >= upto are rewritten by the steps before they are read.
  fill_random_bf16(I.dm.k_cache, rows, size_t(I.dm.head_dim), size_t(I.dm.head_dim), 1.0f, seed, I.stream);
  fill_random_bf16(I.dm.v_cache, rows, size_t(I.dm.head_dim), size_t(I.dm.head_dim), 1.0f, seed + 1,
                   I.stream);
  KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
}

DecodeStats Executor::generate(std::span<const int32_t> prompt, int32_t max_new,
                               std::span<const int32_t> eos,
                               const std::function<bool(int32_t)>& on_token) {
  Impl& I = *impl_;
  DecodeStats out;
  KEEL_CHECK(!prompt.empty(), "cuda backend: empty prompt");
  KEEL_CHECK(int64_t(prompt.size()) < I.dm.max_ctx, "cuda backend: prompt of ", prompt.size(),
             " tokens does not fit the context of ", I.dm.max_ctx, " (it needs room for one more)");
  KEEL_CHECK(eos.size() <= 64, "cuda backend: at most 64 EOS ids");
  for (int32_t id : prompt)
    KEEL_CHECK(id >= 0 && id < I.dm.vocab, "cuda backend: token id ", id, " outside the vocabulary of ",
               I.dm.vocab);
  if (max_new <= 0) {
    out.stop_reason = "max_tokens";
    return out;
  }
  const int P = int(prompt.size());
  StepIO& io = I.P.io;
  KEEL_CUDA_CHECK(cudaMemcpyAsync(const_cast<int32_t*>(io.prompt), prompt.data(), size_t(P) * 4,
                                  cudaMemcpyHostToDevice, I.stream));
  if (!eos.empty())
    KEEL_CUDA_CHECK(cudaMemcpyAsync(const_cast<int32_t*>(io.eos), eos.data(), eos.size() * 4,
                                    cudaMemcpyHostToDevice, I.stream));
  Params p = I.P;
  p.io.prompt_len = P;
  p.io.start_pos = 0;
  // The step at position p makes the token for p + 1; prompt + output never exceeds max_ctx.
  p.io.end_pos = int(std::min<int64_t>(I.dm.max_ctx - 1, int64_t(P) + max_new - 1));
  if (p.io.end_pos < P) p.io.end_pos = P;
  p.io.max_new = max_new;
  p.io.n_eos = int(eos.size());
  int32_t *tok_d = nullptr, *n_d = nullptr, *stop_d = nullptr;
  KEEL_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&tok_d), I.tokens_h, 0));
  KEEL_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&n_d), I.n_out_h, 0));
  KEEL_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&stop_d), I.host_stop_h, 0));
  p.io.tokens_out = tok_d;
  p.io.n_out = n_d;
  p.io.host_stop = stop_d;
  p.io.cur_step = nullptr;
  *const_cast<volatile int32_t*>(I.n_out_h) = 0;
  *const_cast<volatile int32_t*>(I.host_stop_h) = 0;
  I.reset_launch_state();
  launch_embed(I.dm, io.x, prompt[0], I.stream);
  const auto t0 = std::chrono::steady_clock::now();
  launch_megakernel(p, I.grid, I.dyn_smem, I.stream);
  int delivered = 0;
  bool stopped = false;
  auto deliver = [&]() {
    const int n = *const_cast<volatile int32_t*>(I.n_out_h);
    while (delivered < n && !stopped) {
      const int32_t t = const_cast<volatile int32_t*>(I.tokens_h)[delivered++];
      if (out.tokens.empty())
        out.first_token_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      out.tokens.push_back(t);
      if (on_token && !on_token(t)) {
        stopped = true;
        *const_cast<volatile int32_t*>(I.host_stop_h) = 1;
      }
    }
  };
  for (;;) {
    cudaError_t q = cudaStreamQuery(I.stream);
    if (q == cudaSuccess) break;
    KEEL_CHECK(q == cudaErrorNotReady, "CUDA error ", cudaGetErrorName(q), " (", cudaGetErrorString(q),
               ") while the megakernel ran");
    deliver();
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  deliver();
  I.check_watchdog();
  // Step timestamps: decode time per token = median of step-to-step gaps after the first token.
  const int steps_run = std::max(0, P - 1 + int(out.tokens.size()));
  std::vector<uint64_t> ns(static_cast<size_t>(steps_run));
  if (steps_run > 0)
    KEEL_CUDA_CHECK(cudaMemcpy(ns.data(), io.step_ns, ns.size() * 8, cudaMemcpyDeviceToHost));
  std::vector<double> gaps;
  for (int s = P; s < steps_run; ++s) gaps.push_back((ns[size_t(s)] - ns[size_t(s - 1)]) * 1e-6);
  if (!gaps.empty()) {
    std::sort(gaps.begin(), gaps.end());
    out.decode_ms_per_token = gaps[gaps.size() / 2];
  }
  if (stopped) {
    out.stop_reason = "stopped";
  } else if (!out.tokens.empty() && std::find(eos.begin(), eos.end(), out.tokens.back()) != eos.end()) {
    out.stop_reason = "eos";
  } else if (int(out.tokens.size()) >= max_new) {
    out.stop_reason = "max_tokens";
  } else {
    out.stop_reason = "context";
  }
  return out;
}

std::vector<double> Executor::time_steps(LaunchMode mode, int start_pos, int steps,
                                         const std::string& trace_json) {
  Impl& I = *impl_;
  KEEL_CHECK(steps >= 2 && start_pos >= 0 && start_pos + steps <= I.dm.max_ctx,
             "cuda bench: steps ", steps, " from position ", start_pos, " exceed the context ", I.dm.max_ctx);
  Params p = I.P;
  p.io.prompt_len = 0;
  p.io.start_pos = start_pos;
  p.io.end_pos = start_pos + steps;
  p.io.max_new = 0x7fffffff;
  p.io.n_eos = 0;
  p.io.tokens_out = I.bench_tokens;  // with prompt_len 0, step s's token lands at [s + 1]
  p.io.n_out = I.bench_n;
  p.io.host_stop = nullptr;
  std::vector<double> ms;
  auto fetch_tokens = [&]() {
    I.last_tokens.resize(size_t(steps));
    KEEL_CUDA_CHECK(cudaMemcpy(I.last_tokens.data(), I.bench_tokens + start_pos + 1, size_t(steps) * 4,
                               cudaMemcpyDeviceToHost));
  };
  I.reset_launch_state();
  launch_embed(I.dm, p.io.x, 0, I.stream);
  if (mode == LaunchMode::Megakernel) {
    p.io.cur_step = nullptr;
    const int cap = 4 * int(I.tasks.size() / size_t(I.grid) + 2);
    if (!trace_json.empty()) {
      p.trace = static_cast<uint64_t*>(I.alloc(size_t(I.grid) * cap * 4 * 8));
      p.trace_cap = cap;
    }
    launch_megakernel(p, I.grid, I.dyn_smem, I.stream);
    KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
    I.check_watchdog();
    std::vector<uint64_t> ns(static_cast<size_t>(steps));
    KEEL_CUDA_CHECK(cudaMemcpy(ns.data(), p.io.step_ns, ns.size() * 8, cudaMemcpyDeviceToHost));
    for (int s = 1; s < steps; ++s) ms.push_back((ns[size_t(s)] - ns[size_t(s - 1)]) * 1e-6);
    fetch_tokens();
    if (p.trace) {
      std::vector<uint64_t> tr(size_t(I.grid) * cap * 4);
      KEEL_CUDA_CHECK(cudaMemcpy(tr.data(), p.trace, tr.size() * 8, cudaMemcpyDeviceToHost));
      uint64_t t_min = ~0ull;
      for (size_t k = 0; k < tr.size(); k += 4)
        if (tr[k + 1]) t_min = std::min(t_min, tr[k + 1]);
      std::ofstream f(trace_json);
      KEEL_CHECK(f.good(), "cuda bench: cannot write ", trace_json);
      f << "{\"traceEvents\":[\n";
      bool first = true;
      for (int b = 0; b < I.grid; ++b)
        for (int k = 0; k < cap; ++k) {
          const uint64_t* e = &tr[(size_t(b) * cap + k) * 4];
          if (!e[1] || !e[3]) continue;
          const int ti = int(e[0] & 0xffffffffu), step = int(e[0] >> 32);
          const DevTask& t = I.tasks[size_t(I.list_begin[size_t(b)] + ti)];
          auto ev = [&](const std::string& name, uint64_t a, uint64_t z) {
            f << (first ? "" : ",\n") << "{\"name\":\"" << name << "\",\"ph\":\"X\",\"pid\":0,\"tid\":" << b
              << ",\"ts\":" << (a - t_min) * 1e-3 << ",\"dur\":" << (z - a) * 1e-3 << ",\"args\":{\"step\":" << step
              << "}}";
            first = false;
          };
          if (e[2] > e[1]) ev("wait", e[1], e[2]);
          ev(cat(kOpNames[int(t.op)], " L", t.layer), e[2], e[3]);
        }
      f << "\n]}\n";
    }
    return ms;
  }
  KEEL_CUDA_CHECK(cudaMemcpyAsync(I.P.io.cur_step, &start_pos, 4, cudaMemcpyHostToDevice, I.stream));
  p.io.cur_step = I.P.io.cur_step;
  std::vector<cudaEvent_t> ev(size_t(steps + 1));
  for (auto& e : ev) KEEL_CUDA_CHECK(cudaEventCreate(&e));
  cudaGraphExec_t exec = nullptr;
  cudaGraph_t graph = nullptr;
  try {
    auto one_step = [&]() {
      for (int st = 0; st < I.n_stage_ids; ++st) launch_stage(p, I.grid, I.dyn_smem, st, I.stream);
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
      KEEL_CUDA_CHECK(cudaEventRecord(ev[size_t(s + 1)], I.stream));
    }
    KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
    for (int s = 1; s < steps; ++s) {  // the first step includes the graph upload
      float t = 0;
      KEEL_CUDA_CHECK(cudaEventElapsedTime(&t, ev[size_t(s)], ev[size_t(s + 1)]));
      ms.push_back(t);
    }
  } catch (...) {
    for (auto& e : ev) cudaEventDestroy(e);
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    throw;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  fetch_tokens();
  return ms;
}

void Executor::run_unsatisfiable_wait() {
  Impl& I = *impl_;
  std::vector<DevTask> bad = I.tasks;
  bad[0].wait_counter = I.n_counters - 1;  // nothing ever signals it
  bad[0].wait_per_step = 1;
  bad[0].wait_offset = 1;
  KEEL_CUDA_CHECK(cudaMemcpy(I.tasks_d, bad.data(), bad.size() * sizeof(DevTask), cudaMemcpyHostToDevice));
  auto restore = [&]() {
    cudaMemcpy(I.tasks_d, I.tasks.data(), I.tasks.size() * sizeof(DevTask), cudaMemcpyHostToDevice);
  };
  try {
    const int32_t prompt[2] = {1, 2};
    generate(prompt, 4, {}, {});
  } catch (...) {
    restore();
    throw;
  }
  restore();
}

}  // namespace keel::exec::cuda
