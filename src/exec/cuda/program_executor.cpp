// ProgramExecutor: the host side of running a program::Program on the GPU.
// Construction: check that the Program's device plan fits the device
// (plan_check.h: worker count, shared-memory layout, co-residency, tiles for
// the stored weight dtypes) and memory, upload the Program arrays as they are,
// one device copy per named weight tensor, the constants, and zeroed
// workspace / KV arenas. Nothing is re-planned: ring, work area, loader policy
// and tiles are the Program's. run(): the launch setup of program.h (host
// images of the buffers it writes: page table, Control, SeqState, token
// history and first embedding, uploaded over a workspace zeroed on the device
// with NaN activations; counters zeroed), one cooperative launch, then a polling loop that hands tokens from the pinned
// ring to on_token as they appear and turns a false return into
// control.stop_request (written on a second stream while the kernel runs).
// time_steps() (program_executor_timing.cpp): the same launch setup with
// every sequence placed at a given position, then the megakernel, or one
// launch per operator (optionally in a CUDA graph), timed per step.
#include "exec/cuda/program_executor.h"
#include "exec/common/launch_state.h"
#include "exec/cuda/executor_impl.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "compiler/compiler.h"
#include "core/error.h"
#include "exec/cuda/cuda_check.h"
#include "exec/cuda/mm_sources.h"
#include "exec/cuda/plan_check.h"
#include "exec/cuda/program_kernel.h"
#include "exec/cuda/random_weights.h"
#include "ops/ops.h"
#include "program/smem_plan.h"

namespace keel::exec::cuda {

std::string_view launch_mode_name(LaunchMode m) {
  switch (m) {
    case LaunchMode::Megakernel: return "megakernel";
    case LaunchMode::PerOp: return "per-op";
    case LaunchMode::Graph: return "graph";
  }
  return "?";
}

using program::BufferKind;
using program::Control;
using program::SeqState;
using detail::check_status;
using detail::device_alloc;
using detail::error_name;
using detail::prepare;

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

template <class T>
T* device_copy(const std::vector<T>& v, std::vector<void*>& owned) {
  void* d = nullptr;
  const size_t bytes = std::max<size_t>(v.size() * sizeof(T), 16);
  KEEL_CUDA_CHECK(cudaMalloc(&d, bytes));
  owned.push_back(d);
  KEEL_CUDA_CHECK(cudaMemset(d, 0, bytes));
  if (!v.empty()) KEEL_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(d);
}

}  // namespace

void* detail::device_alloc(size_t bytes, std::vector<void*>& owned) {
  void* d = nullptr;
  KEEL_CUDA_CHECK(cudaMalloc(&d, std::max<size_t>(bytes, 16)));
  owned.push_back(d);
  KEEL_CUDA_CHECK(cudaMemset(d, 0, std::max<size_t>(bytes, 16)));
  return d;
}

namespace {

const char* reason_name(int r) {
  switch (r) {
    case 0: return "running";
    case 1: return "finished";
    case 2: return "timed out waiting";
    case 3: return "left on abort";
    case 4: return "task failed";
  }
  return "?";
}

}  // namespace

const char* detail::error_name(int e) {
  switch (e) {
    case prog::kErrTimeout: return "watchdog: a wait saw no progress";
    case prog::kErrBadPage: return "page table entry out of range";
    case prog::kErrBadToken: return "token outside the vocabulary";
    case prog::kErrBadOpcode: return "unknown opcode";
    case prog::kErrHeadDim: return "head_dim too large";
    case prog::kErrSmemAlign: return "the weight ring is not 1024-byte aligned in shared memory";
    case prog::kErrMmTile: return "a matmul tile of more than 64 rows on the mma.sync engine";
  }
  return "unknown device error";
}

namespace {

/// Opens the device.
void open_device(int device) {
  int n_dev = 0;
  const cudaError_t e = cudaGetDeviceCount(&n_dev);
  KEEL_CHECK(e == cudaSuccess && n_dev > 0, "cuda program executor: no CUDA device (", cudaGetErrorString(e), ")");
  KEEL_CHECK(device >= 0 && device < n_dev, "cuda program executor: device ", device, " of ", n_dev);
  KEEL_CUDA_CHECK(cudaSetDevice(device));
}

}  // namespace

DeviceFacts device_facts(int device) {
  open_device(device);
  DeviceFacts f;
  cudaDeviceProp prop{};
  KEEL_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  f.name = cat(prop.name, " (device ", device, ")");
  int v = 0;
  KEEL_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device));
  f.sms = v;
  KEEL_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  f.smem_per_block = uint32_t(v);
  // The largest of the kernel variants': a Program's reserve must hold the one it runs on.
  f.static_smem = 0;
  for (bool batch : {false, true})
    for (bool long_context : {false, true})
      f.static_smem = std::max(f.static_smem,
                               uint32_t(prog::static_smem_bytes(prog::kernel_variant(batch, long_context))));
  f.static_smem = std::max(f.static_smem, uint32_t(prog::static_smem_bytes(prog::KernelVariant::Wide)));
  return f;
}

compiler::Target device_target(int device) {
  open_device(device);
  cudaDeviceProp prop{};
  KEEL_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  const DeviceFacts f = device_facts(device);
  return compiler::target_for_device(prop.name, f.sms, f.smem_per_block);
}

ProgramExecutor::ProgramExecutor(const program::Program& given, const model::Model& m,
                                 const ProgramExecutorOptions& opt)
    : impl_(new Impl) {
  open_device(opt.device);
  given.validate();
  exec::check_program_model(given, m.config, m.dir, "cuda program executor");
  p_ = given;
  setup(&m, opt, 0);
}

ProgramExecutor::ProgramExecutor(const model::ModelConfig& cfg, const compiler::CompileOptions& co, uint64_t seed,
                                 const ProgramExecutorOptions& opt)
    : impl_(new Impl) {
  open_device(opt.device);
  p_ = compiler::compile(cfg, co);
  setup(nullptr, opt, seed);
}

ProgramExecutor::ProgramExecutor(const program::Program& given, const ProgramExecutor& weights_of,
                                 const ProgramExecutorOptions& opt, bool share_kv)
    : impl_(new Impl) {
  open_device(opt.device);
  KEEL_CHECK(opt.device == weights_of.impl_->device, "cuda program executor: the weights are on device ",
             weights_of.impl_->device, ", not ", opt.device);
  given.validate();
  const program::ProgramHeader &a = given.h, &b = weights_of.p_.h;
  KEEL_CHECK(a.hidden == b.hidden && a.vocab == b.vocab && a.n_layers == b.n_layers && a.n_heads == b.n_heads &&
                 a.n_kv_heads == b.n_kv_heads && a.head_dim == b.head_dim && a.intermediate == b.intermediate,
             "cuda program executor: the Program was compiled for different model dimensions than the weights'");
  p_ = given;
  if (share_kv) exec::check_kv_shareable(given, weights_of.p_, "cuda program executor");
  setup(nullptr, opt, 0, &weights_of, share_kv);
}

bool ProgramExecutor::shares_kv_with(const ProgramExecutor& other) const { return impl_->kv == other.impl_->kv; }

void ProgramExecutor::setup(const model::Model* m, const ProgramExecutorOptions& opt, uint64_t seed,
                            const ProgramExecutor* weights_of, bool share_kv) {
  Impl& I = *impl_;
  I.device = opt.device;
  I.watchdog_s = opt.watchdog_s;
  {
    cudaDeviceProp prop{};
    KEEL_CUDA_CHECK(cudaGetDeviceProperties(&prop, I.device));
    I.gpu_name = prop.name;
  }
  const program::Program& p = p_;
  const auto& h = p.h;
  KEEL_CHECK(h.head_dim <= prog::kMaxHeadDim, "cuda program executor: head_dim ", h.head_dim, " exceeds ",
             prog::kMaxHeadDim);
  // ---- the Program's device plan must fit this device (nothing is re-planned) ----
  const program::TargetDesc& tg = h.target;
  I.smem = tg.dynamic_smem;
  DeviceFacts facts = device_facts(I.device);
  check_program_fits(p, facts, opt.keep_worker_count);  // before the attribute: smem must fit the opt-in limit
  // Both variants this Program may launch (short and long context).
  facts.max_ctas = std::min(
      prog::max_coresident_ctas(I.device, I.smem, prog::kernel_variant(prog::batch_variant(h), false, program::mm_wide(h))),
      prog::max_coresident_ctas(I.device, I.smem, prog::kernel_variant(prog::batch_variant(h), true, program::mm_wide(h))));
  check_program_fits(p, facts, opt.keep_worker_count);
  // ---- memory: weights (unique tensors) + KV + workspace must fit ----
  struct WeightSrc {
    const model::TensorView* tv = nullptr;  // checkpoint tensor, or null (random)
    DType dtype = DType::F32;
    uint64_t count = 0;
    int64_t rows = 0, cols = 0;
  };
  std::map<std::string, WeightSrc> tensors;
  uint64_t weight_bytes = 0;
  for (const program::BufferDesc& b : p.buffers) {
    if (BufferKind(b.kind) != BufferKind::Weight) continue;
    const std::string name(b.name_view());
    WeightSrc w;
    if (weights_of) {
      const int32_t id = weights_of->p_.find_buffer(name);
      KEEL_CHECK(id >= 0 && BufferKind(weights_of->p_.buffer(id).kind) == BufferKind::Weight &&
                     weights_of->p_.buffer(id).count == b.count,
                 "cuda program executor: weight '", name, "' is not among the shared weights, or has another size");
      w.dtype = DType(weights_of->impl_->dtype[size_t(id)]);
    } else if (m) {
      w.tv = &m->weights.get(name);
      KEEL_CHECK(uint64_t(w.tv->numel()) == b.count, "cuda program executor: weight '", name, "' has ",
                 w.tv->numel(), " elements in ", w.tv->file, ", the Program expects ", b.count);
      w.dtype = w.tv->dtype;
    } else {
      w.dtype = DType(b.dtype);
    }
    w.count = b.count;
    w.rows = b.rows;
    w.cols = b.cols;
    if (tensors.emplace(name, w).second && !weights_of) weight_bytes += w.count * dtype_size(w.dtype);
  }
  // The tiles were planned for the declared dtypes: the stored ones must give the same.
  check_program_fits(p, facts, opt.keep_worker_count, [&](int32_t id) {
    const program::BufferDesc& b = p.buffers[size_t(id)];
    return BufferKind(b.kind) == BufferKind::Weight ? tensors.at(std::string(b.name_view())).dtype : DType(b.dtype);
  });
  const uint64_t other = h.workspace_bytes + h.constants_bytes + p.tasks.size() * sizeof(program::TaskDesc) +
                         p.waits.size() * sizeof(program::WaitDesc) + (64ull << 20);
  size_t free_b = 0, total_b = 0;
  KEEL_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const uint64_t kv_bytes = share_kv ? 0 : h.kv_bytes;
  KEEL_CHECK(weight_bytes + kv_bytes + other <= free_b, "cuda program executor: weights ",
             double(weight_bytes) / kGiB, " GiB + KV cache ", double(kv_bytes) / kGiB, " GiB + workspace ",
             double(other) / kGiB, " GiB do not fit the ", double(free_b) / kGiB, " GiB free on device ", I.device,
             m ? cat(" (", m->dir, ")") : std::string(), "; lower the batch or the context");
  // ---- upload (or generate) ----
  KEEL_CUDA_CHECK(cudaStreamCreateWithFlags(&I.stream, cudaStreamNonBlocking));
  KEEL_CUDA_CHECK(cudaStreamCreateWithFlags(&I.ctl_stream, cudaStreamNonBlocking));
  std::map<std::string, uint8_t*> dev_weights;
  uint64_t sd = seed * 1000003u;
  for (const auto& [name, w] : tensors) {
    if (weights_of) {  // bound to the other executor's copy
      const int32_t id = weights_of->p_.find_buffer(name);
      dev_weights[name] = weights_of->impl_->ptr[size_t(id)];
      continue;
    }
    const size_t nbytes = w.count * dtype_size(w.dtype);
    void* d = device_alloc(nbytes, I.owned);
    if (w.tv) {
      KEEL_CUDA_CHECK(cudaMemcpy(d, w.tv->data, nbytes, cudaMemcpyHostToDevice));
    } else {
      // Matrices: uniform with unit-ish output variance; vectors named *norm*: ~1; other vectors (biases): ~0.
      const bool matrix = w.rows > 1 && w.cols > 1;
      const bool norm = name.find("norm") != std::string::npos;
      const bool embed = name.find("embed") != std::string::npos;
      const float scale = matrix ? (embed ? 1.0f : 1.7f / std::sqrt(float(w.cols))) : norm ? 0.05f : 0.02f;
      fill_random(d, w.dtype, w.count, !matrix && norm ? 1.0f : 0.0f, scale, ++sd, I.stream);
    }
    // The Program's tiles assume every weight buffer starts 16-byte aligned (smem_plan.h); cudaMalloc gives 256.
    KEEL_CHECK((reinterpret_cast<uintptr_t>(d) & 15) == 0, "cuda program executor: weight '", name, "' is not 16-byte aligned");
    dev_weights[name] = static_cast<uint8_t*>(d);
  }
  KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
  I.workspace = static_cast<uint8_t*>(device_alloc(h.workspace_bytes, I.owned));
  I.kv = share_kv ? weights_of->impl_->kv : static_cast<uint8_t*>(device_alloc(h.kv_bytes, I.owned));
  uint8_t* constants = device_copy(p.constants, I.owned);
  const size_t nb = p.buffers.size();
  I.ptr.assign(nb, nullptr);
  I.bytes.assign(nb, 0);
  I.dtype.assign(nb, 0);
  std::vector<int64_t> cols(nb, 0);
  for (size_t i = 0; i < nb; ++i) {
    const program::BufferDesc& b = p.buffers[i];
    I.dtype[i] = b.dtype;
    I.bytes[i] = b.count * dtype_size(DType(b.dtype));
    cols[i] = b.cols;
    switch (BufferKind(b.kind)) {
      case BufferKind::Activation:
      case BufferKind::State: I.ptr[i] = I.workspace + b.offset; break;
      case BufferKind::Kv: I.ptr[i] = I.kv + b.offset; break;
      case BufferKind::Constant: I.ptr[i] = constants + b.offset; break;
      case BufferKind::Weight: {
        const WeightSrc& w = tensors.at(std::string(b.name_view()));
        I.ptr[i] = dev_weights.at(std::string(b.name_view()));
        I.dtype[i] = uint8_t(w.dtype);
        I.bytes[i] = w.count * dtype_size(w.dtype);
        break;
      }
    }
  }
  // ---- weight bytes per step: every task's tile in the stored dtype ----
  for (const program::TaskDesc& t : p.tasks) {
    if (t.weight_bytes == 0) continue;
    int32_t wb = -1;
    keel::ops::visit(program::Opcode(t.opcode), [&]<class Op>() { wb = Op::streamed_weight(t); });
    const double ratio = wb >= 0 ? double(dtype_size(DType(I.dtype[size_t(wb)]))) /
                                       double(dtype_size(DType(p.buffers[size_t(wb)].dtype)))
                                 : 1.0;
    I.weight_bytes += uint64_t(double(t.weight_bytes) * ratio);
  }
  // ---- derived tables: first two waits per list entry; operator ranges per worker ----
  std::vector<uint32_t> wait_pre(size_t(p.worker_tasks.size()) * 8, 0);
  for (size_t e = 0; e < p.worker_tasks.size(); ++e) {
    const program::TaskDesc& t = p.tasks[p.worker_tasks[e]];
    for (uint32_t k = 0; k < std::min<uint32_t>(t.wait_count, 2); ++k) {
      const program::WaitDesc& w = p.waits[t.wait_begin + k];
      uint32_t* q = &wait_pre[e * 8 + k * 4];
      q[0] = w.counter;
      q[1] = w.expected;
      q[2] = uint32_t(w.offset);
      q[3] = t.wait_count;
    }
    wait_pre[e * 8 + 3] = t.wait_count;
  }
  const uint32_t n_ops = uint32_t(p.ops.size());
  std::vector<uint32_t> op_range(size_t(h.n_workers) * n_ops * 2, 0);
  I.per_op_ok = true;
  for (int w = 0; w < h.n_workers && I.per_op_ok; ++w) {
    const uint32_t b0 = p.worker_offsets[size_t(w)], b1 = p.worker_offsets[size_t(w) + 1];
    int last_op = -1;
    for (uint32_t e = b0; e < b1; ++e) {
      const int op = p.tasks[p.worker_tasks[e]].op;
      uint32_t* r = &op_range[(size_t(w) * n_ops + uint32_t(op)) * 2];
      if (op != last_op) {
        if (r[1] != 0 || op < last_op) {
          I.per_op_ok = false;
          I.per_op_why = cat("worker ", w, "'s tasks of operator ", op, " are not contiguous and in order");
          break;
        }
        r[0] = e - b0;
        last_op = op;
      }
      ++r[1];
    }
  }
  if (I.per_op_ok) {  // every wait of this step must be on an earlier operator
    std::vector<int> max_signal_op(h.n_counters, -1);
    for (const program::TaskDesc& t : p.tasks)
      for (uint32_t k = 0; k < t.signal_count; ++k) {
        int& m_op = max_signal_op[p.signals[t.signal_begin + k]];
        m_op = std::max<int>(m_op, t.op);
      }
    for (const program::TaskDesc& t : p.tasks)
      for (uint32_t k = 0; k < t.wait_count; ++k) {
        const program::WaitDesc& w = p.waits[t.wait_begin + k];
        if (w.offset == 1 && max_signal_op[w.counter] >= t.op && w.counter != h.step_counter) {
          I.per_op_ok = false;
          I.per_op_why = cat(program::describe_task(p, uint32_t(&t - p.tasks.data())),
                             " waits on an operator that does not come before it");
        }
      }
  }
  prog::DevProgram& P = I.P;
  P.h = h;
  P.tasks = device_copy(p.tasks, I.owned);
  P.waits = device_copy(p.waits, I.owned);
  P.signals = device_copy(p.signals, I.owned);
  P.worker_offsets = device_copy(p.worker_offsets, I.owned);
  P.worker_tasks = device_copy(p.worker_tasks, I.owned);
  P.ptr = device_copy(I.ptr, I.owned);
  P.dtype = device_copy(I.dtype, I.owned);
  P.cols = device_copy(cols, I.owned);
  P.wait_pre = reinterpret_cast<const uint4*>(device_copy(wait_pre, I.owned));
  P.op_range = reinterpret_cast<const uint2*>(device_copy(op_range, I.owned));
  // The ring, work area and loader policy as the Program planned them.
  P.n_stages = tg.n_stages;
  P.stage_bytes = tg.stage_bytes;
  P.work_bytes = tg.work_bytes;
  P.l2_hint = tg.l2_evict_first;
  P.loader_hold = tg.loader_hold;
  P.max_inflight = uint32_t(tg.max_inflight);
  {  // the weight tile of every worker-list entry (rows per stage: the Program's), on the device
    auto* tiles = static_cast<prog::TileDesc*>(
        device_alloc(sizeof(prog::TileDesc) * std::max<size_t>(p.worker_tasks.size(), 1), I.owned));
    prog::build_tile_table(P, tiles, I.stream);
    P.tiles = tiles;
    // The column chunks of every matmul tile (batch kernel's loader).
    std::vector<uint8_t> chunks(std::max<size_t>(p.worker_tasks.size(), 1), 0);
    for (size_t e = 0; e < p.worker_tasks.size(); ++e) {
      const program::TaskDesc& t = p.tasks[p.worker_tasks[e]];
      const uint32_t kc = program::stage_cols(t);
      if (kc > 0) chunks[e] = uint8_t((t.k1 - t.k0) / int32_t(kc));  // plan_stage: at most 255
      if (kc > 0 && program::stage_rows(t) > program::kMmRows) I.tall_tiles = true;
    }
    P.tile_chunks = device_copy(chunks, I.owned);
    // Their TMA sources (tensor maps over the weights).
    if (prog::batch_variant(h) && P.n_stages > 0) P.mm_src = upload_mm_sources(p, I.ptr, I.owned);
  }
  P.counters = static_cast<uint32_t*>(device_alloc(std::max<uint32_t>(h.n_counters, 1) * 4ull, I.owned));
  P.status = static_cast<prog::DevStatus*>(device_alloc(sizeof(prog::DevStatus), I.owned));
  P.cta = static_cast<prog::CtaState*>(device_alloc(sizeof(prog::CtaState) * size_t(h.n_workers), I.owned));
  P.abort = static_cast<uint32_t*>(device_alloc(4, I.owned));
  P.capture_rows = static_cast<int32_t*>(device_alloc(sizeof(int32_t) * size_t(h.batch), I.owned));
  I.step_ns_cap = h.max_context + 2;
  I.step_ns = static_cast<uint64_t*>(device_alloc(sizeof(uint64_t) * size_t(I.step_ns_cap), I.owned));
  auto pinned = [&](size_t bytes) {
    void* hp = nullptr;
    KEEL_CUDA_CHECK(cudaHostAlloc(&hp, bytes, cudaHostAllocMapped));
    I.pinned.push_back(hp);
    std::memset(hp, 0, bytes);
    return static_cast<int32_t*>(hp);
  };
  I.host_ring = pinned(sizeof(int32_t) * size_t(h.batch) * size_t(h.ring_len));
  I.host_count = pinned(sizeof(int32_t) * size_t(h.batch));
  I.host_logprob = reinterpret_cast<float*>(pinned(sizeof(float) * size_t(h.batch) * size_t(h.ring_len)));
  I.stop_one = pinned(sizeof(int32_t));
  // The launch setup's embedding rows (one a lane), copied in one batch.
  I.embed_stage = reinterpret_cast<uint8_t*>(
      pinned(size_t(h.batch) * size_t(h.hidden) * dtype_size(DType(I.dtype[size_t(h.buf_embed)]))));
  *I.stop_one = 1;
}

ProgramExecutor::~ProgramExecutor() = default;

/// The launch setup of program.h for `seqs` (launch_state.h): host images of
/// the buffers it writes, uploaded over a workspace set on the device (zero,
/// activations 0xff); counters, status and CTA states zeroed. With
/// start_pos > 0 every sequence is placed at that position with its prompt
/// consumed (bench: the KV cache below it is whatever the arena holds); with
/// max_steps > 0 the launch runs that many steps (bench).
prog::DevProgram detail::prepare(ProgramExecutor::Impl& I, const program::Program& p, const std::vector<Sequence>& seqs,
                                 const RunOptions& opt, int start_pos, int max_steps) {
  const auto& h = p.h;
  const int B = h.batch;
  // Host images of the buffers the launch state writes only (a batch
  // Program's logits alone are B x vocab floats: uploading a whole workspace
  // image cost every relaunch milliseconds); the rest is set on the device.
  std::map<int32_t, std::vector<uint8_t>> parts;
  auto image = [&](int32_t id) {
    std::vector<uint8_t>& v = parts[id];
    if (v.empty()) {
      const program::BufferDesc& b = p.buffer(id);
      v.assign(b.count * dtype_size(DType(b.dtype)), BufferKind(b.kind) == BufferKind::Activation ? 0xff : 0);
    }
    return v.data();
  };
  const DType edt = DType(I.dtype[size_t(h.buf_embed)]);
  const size_t row_bytes = size_t(h.hidden) * dtype_size(edt);
  std::vector<std::pair<int32_t, float*>> rows;  // (token, its x row): the embedding rows, read back below
  write_launch_state(
      p, seqs, opt, image, [&](int32_t tok, float* x) { rows.push_back({tok, x}); }, "cuda program executor");
  KEEL_CHECK(rows.size() <= size_t(B), "cuda program executor: ", rows.size(), " embedding rows for ", B, " lanes");
  for (size_t i = 0; i < rows.size(); ++i)  // from the device copy, one synchronisation for all
    KEEL_CUDA_CHECK(cudaMemcpyAsync(I.embed_stage + i * row_bytes,
                                    I.ptr[size_t(h.buf_embed)] + size_t(rows[i].first) * row_bytes, row_bytes,
                                    cudaMemcpyDeviceToHost, I.stream));
  KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
  for (size_t i = 0; i < rows.size(); ++i)
    for (int64_t k = 0; k < h.hidden; ++k) rows[i].second[k] = load_as_f32(I.embed_stage + i * row_bytes, edt, size_t(k));
  if (start_pos > 0 || max_steps > 0) {
    SeqState* st = reinterpret_cast<SeqState*>(image(h.buf_state));
    for (size_t b = 0; b < seqs.size(); ++b) {
      if (start_pos > 0) {
        st[b].pos = start_pos;
        st[b].prompt_len = 1;
      }
    }
    Control* ctl = reinterpret_cast<Control*>(image(h.buf_control));
    if (max_steps > 0) ctl->max_steps = max_steps;
  }
  // The workspace as the whole image would be: zero, activations 0xff (NaN:
  // a read before any write poisons the output; contiguous ranges merged),
  // then the launch state's buffers.
  KEEL_CUDA_CHECK(cudaMemset(I.workspace, 0, h.workspace_bytes));
  std::vector<std::pair<uint64_t, uint64_t>> act;
  for (const program::BufferDesc& b : p.buffers)
    if (BufferKind(b.kind) == BufferKind::Activation && b.count > 0)
      act.push_back({b.offset, b.offset + b.count * dtype_size(DType(b.dtype))});
  std::sort(act.begin(), act.end());
  for (size_t i = 0; i < act.size();) {
    uint64_t lo = act[i].first, hi = act[i].second;
    for (++i; i < act.size() && act[i].first <= hi; ++i) hi = std::max(hi, act[i].second);
    KEEL_CUDA_CHECK(cudaMemset(I.workspace + lo, 0xff, hi - lo));
  }
  for (const auto& [id, bytes] : parts)
    KEEL_CUDA_CHECK(cudaMemcpy(I.workspace + p.buffer(id).offset, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  prog::DevProgram P = I.P;
  KEEL_CUDA_CHECK(cudaMemset(P.counters, 0, std::max<uint32_t>(h.n_counters, 1) * 4ull));
  prog::DevStatus st0;
  KEEL_CUDA_CHECK(cudaMemcpy(P.status, &st0, sizeof st0, cudaMemcpyHostToDevice));
  KEEL_CUDA_CHECK(cudaMemset(P.cta, 0, sizeof(prog::CtaState) * size_t(h.n_workers)));
  KEEL_CUDA_CHECK(cudaMemset(P.abort, 0, 4));
  KEEL_CUDA_CHECK(cudaMemset(P.capture_rows, 0, sizeof(int32_t) * size_t(B)));
  std::memset(I.host_count, 0, sizeof(int32_t) * size_t(B));
  KEEL_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&P.host_ring), I.host_ring, 0));
  KEEL_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&P.host_count), I.host_count, 0));
  KEEL_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&P.host_logprob), I.host_logprob, 0));
  P.timeout_ns = uint64_t(I.watchdog_s * 1e9);
  // The long-context variant when an attention chunk may outgrow its prefetch
  // before the launch ends (the positions it reaches: the prompts, their new
  // tokens, or the bench's steps).
  int64_t end = int64_t(start_pos) + std::max(max_steps, opt.max_steps) + 1;
  for (const Sequence& s : seqs) end = std::max<int64_t>(end, int64_t(s.prompt.size()) + s.max_new);
  P.attn_stream = ops::Attention::streams(h, std::min<int64_t>(end, h.max_context));
  // Tall matmul tiles run on the wgmma engine, which only the long variants
  // carry (mm_defer); they compute every position as the short ones do.
  if (I.tall_tiles) P.attn_stream = 1;
  I.last_variant = prog::kernel_variant_name(prog::kernel_variant(P));
  return P;
}

/// Throws keel::Error with the device's error and every unfinished CTA's state.
void detail::check_status(ProgramExecutor::Impl& I, const program::Program& p, const prog::DevProgram& P) {
  const auto& h = p.h;
  prog::DevStatus st;
  KEEL_CUDA_CHECK(cudaMemcpy(&st, P.status, sizeof st, cudaMemcpyDeviceToHost));
  if (st.error == prog::kErrNone) return;
  std::vector<prog::CtaState> cta(size_t(h.n_workers));
  KEEL_CUDA_CHECK(cudaMemcpy(cta.data(), P.cta, sizeof(prog::CtaState) * cta.size(), cudaMemcpyDeviceToHost));
  std::string where;
  int listed = 0;
  for (int w = 0; w < h.n_workers && listed < 24; ++w) {
    const prog::CtaState& c = cta[size_t(w)];
    if (c.reason == 1) continue;
    ++listed;
    where += cat("\n  CTA ", w, " step ", c.step, ": ", reason_name(c.reason));
    if (c.task >= 0) where += cat(" at ", program::describe_task(p, uint32_t(c.task)));
    else if (c.reason == 2 || c.reason == 3) where += " at the step gate";
    if (c.reason == 2 || c.reason == 3) where += cat(", counter ", c.counter, " = ", c.value, " < ", c.target);
  }
  (void)I;
  fail("cuda program executor: ", error_name(st.error), " (detail ", st.detail, ") raised by CTA ", st.cta,
       st.task >= 0 ? cat(" in ", program::describe_task(p, uint32_t(st.task))) : std::string(),
       "; CTA states:", where);
}


RunResult ProgramExecutor::run(const std::vector<Sequence>& seqs, const RunOptions& opt) {
  Impl& I = *impl_;
  const program::Program& p = p_;
  const auto& h = p.h;
  const int B = h.batch;
  KEEL_CUDA_CHECK(cudaSetDevice(I.device));
  prog::DevProgram P = prepare(I, p, seqs, opt);
  P.capture = nullptr;
  if (opt.capture_logits) {
    if (!I.capture)
      I.capture = static_cast<float*>(
          device_alloc(sizeof(float) * size_t(B) * size_t(h.max_context) * size_t(h.vocab), I.owned));
    P.capture = I.capture;
  }
  double wd = I.watchdog_s;
  if (opt.hang_seconds > 0) wd = std::min(wd, opt.hang_seconds);
  P.timeout_ns = uint64_t(wd * 1e9);
  const std::string trace = std::move(I.trace_next);  // trace_next_run(): this run's first steps
  I.trace_next.clear();
  if (!trace.empty()) detail::arm_trace(I, p, P, 4);

  // ---- one launch; stream tokens while it runs ----
  RunResult res;
  res.seqs.resize(seqs.size());
  std::vector<int32_t> seen(static_cast<size_t>(B), 0);
  bool stop_sent = false, first = true;
  const auto t0 = std::chrono::steady_clock::now();
  auto drain = [&] {
    for (int b = 0; b < int(seqs.size()); ++b) {
      const int32_t n = reinterpret_cast<volatile int32_t*>(I.host_count)[b];
      KEEL_CHECK(n - seen[size_t(b)] <= h.ring_len, "cuda program executor: sequence ", b,
                 " overran the token ring of ", h.ring_len, " entries");
      while (seen[size_t(b)] < n) {
        const int64_t at = int64_t(b) * h.ring_len + seen[size_t(b)] % h.ring_len;
        const int32_t tok = reinterpret_cast<volatile int32_t*>(I.host_ring)[at];
        const float lp = seqs[size_t(b)].logprobs ? reinterpret_cast<volatile float*>(I.host_logprob)[at] : NAN;
        ++seen[size_t(b)];
        if (first) {
          res.first_token_ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
          first = false;
        }
        res.seqs[size_t(b)].tokens.push_back(tok);
        if (seqs[size_t(b)].logprobs) res.seqs[size_t(b)].logprobs.push_back(lp);
        if (opt.on_token && !opt.on_token(b, tok, lp) && !stop_sent) {
          uint8_t* flag = I.workspace + p.buffer(h.buf_control).offset + offsetof(Control, stop_request);
          KEEL_CUDA_CHECK(
              cudaMemcpyAsync(flag, I.stop_one, sizeof(int32_t), cudaMemcpyHostToDevice, I.ctl_stream));
          stop_sent = true;
        }
      }
    }
  };
  prog::launch_program(P, I.smem, I.stream);
  try {
    for (;;) {
      drain();
      const cudaError_t q = cudaStreamQuery(I.stream);
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) KEEL_CUDA_CHECK(q);
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  } catch (...) {
    // on_token threw or the ring overran: stop the kernel (every CTA leaves on
    // the abort flag) before the arenas can be freed, then report.
    cudaMemcpyAsync(P.abort, I.stop_one, sizeof(int32_t), cudaMemcpyHostToDevice, I.ctl_stream);
    cudaStreamSynchronize(I.ctl_stream);
    cudaStreamSynchronize(I.stream);
    throw;
  }
  KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
  KEEL_CUDA_CHECK(cudaStreamSynchronize(I.ctl_stream));
  drain();
  res.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  check_status(I, p, P);
  if (P.trace) detail::write_trace(p, P, trace);
  // ---- results ----
  std::vector<SeqState> states(static_cast<size_t>(B));
  KEEL_CUDA_CHECK(cudaMemcpy(states.data(), I.ptr[size_t(h.buf_state)], sizeof(SeqState) * size_t(B),
                             cudaMemcpyDeviceToHost));
  uint32_t steps_count = 0;
  KEEL_CUDA_CHECK(cudaMemcpy(&steps_count, P.counters + h.step_counter, 4, cudaMemcpyDeviceToHost));
  res.steps = int(steps_count / std::max<uint32_t>(h.step_expected, 1));
  res.tasks_run = uint64_t(res.steps) * p.tasks.size();
  const std::vector<int> lanes = sequence_lanes(h, seqs, "cuda program executor");
  for (size_t k = 0; k < seqs.size(); ++k) {
    const SeqState& s = states[size_t(lanes[k])];
    res.seqs[k].stop = program::StopReason(s.stop_reason);
    KEEL_CHECK(int32_t(res.seqs[k].tokens.size()) == s.n_generated, "cuda program executor: sequence ", k,
               " generated ", s.n_generated, " tokens but ", res.seqs[k].tokens.size(), " reached the host");
  }
  if (opt.capture_logits) {
    std::vector<int32_t> rows(static_cast<size_t>(B));
    KEEL_CUDA_CHECK(cudaMemcpy(rows.data(), P.capture_rows, sizeof(int32_t) * size_t(B), cudaMemcpyDeviceToHost));
    for (size_t b = 0; b < seqs.size(); ++b) {  // the positions this launch ran: from kv_filled on
      auto& v = res.seqs[b].logits;
      const size_t first = size_t(seqs[b].kv_filled), n = size_t(rows[b]) > first ? size_t(rows[b]) - first : 0;
      v.resize(n * size_t(h.vocab));
      KEEL_CUDA_CHECK(cudaMemcpy(v.data(), I.capture + (b * size_t(h.max_context) + first) * size_t(h.vocab),
                                 v.size() * sizeof(float), cudaMemcpyDeviceToHost));
    }
  }
  return res;
}

void ProgramExecutor::copy_kv_to(ProgramExecutor& dst, int to, int from, int64_t positions) const {
  const Impl& I = *impl_;
  KEEL_CHECK(I.device == dst.impl_->device, "cuda program executor: copy_kv_to another device");
  KEEL_CUDA_CHECK(cudaSetDevice(I.device));
  for (const exec::KvCopy& c : exec::kv_sequence_copies(p_, from, dst.p_, to, positions, "cuda program executor")) {
    KEEL_CHECK(c.src_offset + c.bytes <= I.bytes[size_t(c.src_buf)] &&
                   c.dst_offset + c.bytes <= dst.impl_->bytes[size_t(c.dst_buf)],
               "cuda program executor: KV copy outside its buffers");
    KEEL_CUDA_CHECK(cudaMemcpyAsync(dst.impl_->ptr[size_t(c.dst_buf)] + c.dst_offset,
                                    I.ptr[size_t(c.src_buf)] + c.src_offset, c.bytes, cudaMemcpyDeviceToDevice,
                                    I.stream));
  }
  KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
}

void ProgramExecutor::copy_kv_pages(const std::vector<std::pair<int32_t, int32_t>>& from_to) {
  Impl& I = *impl_;
  KEEL_CUDA_CHECK(cudaSetDevice(I.device));
  for (const auto& [from, to] : from_to) {
    const std::vector<exec::KvCopy> cs = exec::kv_page_copies(p_, from, to, "cuda program executor");
    for (const exec::KvCopy& c : cs)
      KEEL_CHECK(c.src_offset + c.bytes <= I.bytes[size_t(c.src_buf)] && c.dst_offset + c.bytes <= I.bytes[size_t(c.dst_buf)],
                 "cuda program executor: KV page copy outside its buffers");
    // The KV buffers (every layer's K and V) lie in one arena at one stride:
    // the page of each is one row of a 2D copy (one call instead of one per
    // buffer: 72 for Qwen3-8B).
    bool strided = cs.size() > 1;
    const ptrdiff_t pitch = strided ? I.ptr[size_t(cs[1].src_buf)] - I.ptr[size_t(cs[0].src_buf)] : 0;
    for (size_t i = 1; i < cs.size() && strided; ++i)
      strided = I.ptr[size_t(cs[i].src_buf)] - I.ptr[size_t(cs[i - 1].src_buf)] == pitch &&
                cs[i].src_buf == cs[i].dst_buf && cs[i].bytes == cs[0].bytes && cs[i].src_offset == cs[0].src_offset &&
                cs[i].dst_offset == cs[0].dst_offset;
    // (Pitches past 2^31 - 1 bytes are beyond what cudaMemcpy2D takes: one copy per buffer then.)
    if (strided && pitch >= ptrdiff_t(cs[0].bytes) && pitch <= ptrdiff_t(INT32_MAX)) {
      KEEL_CUDA_CHECK(cudaMemcpy2DAsync(I.ptr[size_t(cs[0].dst_buf)] + cs[0].dst_offset, size_t(pitch),
                                        I.ptr[size_t(cs[0].src_buf)] + cs[0].src_offset, size_t(pitch), cs[0].bytes,
                                        cs.size(), cudaMemcpyDeviceToDevice, I.stream));
      continue;
    }
    for (const exec::KvCopy& c : cs)
      KEEL_CUDA_CHECK(cudaMemcpyAsync(I.ptr[size_t(c.dst_buf)] + c.dst_offset, I.ptr[size_t(c.src_buf)] + c.src_offset,
                                      c.bytes, cudaMemcpyDeviceToDevice, I.stream));
  }
  KEEL_CUDA_CHECK(cudaStreamSynchronize(I.stream));
}

const std::vector<int32_t>& ProgramExecutor::last_step_tokens() const { return impl_->last_tokens; }
std::string ProgramExecutor::last_kernel_variant() const { return impl_->last_variant; }
uint64_t ProgramExecutor::weight_bytes_per_step() const { return impl_->weight_bytes; }
int ProgramExecutor::ring_stages() const { return impl_->P.n_stages; }
uint32_t ProgramExecutor::stage_bytes() const { return impl_->P.stage_bytes; }
const std::string& ProgramExecutor::device_name() const { return impl_->gpu_name; }

std::vector<uint8_t> ProgramExecutor::download_buffer(int32_t id) const {
  KEEL_CHECK(id >= 0 && size_t(id) < impl_->ptr.size(), "cuda program executor: no buffer ", id);
  std::vector<uint8_t> out(impl_->bytes[size_t(id)]);
  KEEL_CUDA_CHECK(cudaMemcpy(out.data(), impl_->ptr[size_t(id)], out.size(), cudaMemcpyDeviceToHost));
  return out;
}

std::vector<uint8_t> ProgramExecutor::download_workspace() const {
  std::vector<uint8_t> out(p_.h.workspace_bytes);
  KEEL_CUDA_CHECK(cudaMemcpy(out.data(), impl_->workspace, out.size(), cudaMemcpyDeviceToHost));
  return out;
}

std::vector<uint8_t> ProgramExecutor::download_kv() const {
  std::vector<uint8_t> out(p_.h.kv_bytes);
  KEEL_CUDA_CHECK(cudaMemcpy(out.data(), impl_->kv, out.size(), cudaMemcpyDeviceToHost));
  return out;
}

void ProgramExecutor::upload_workspace(const std::vector<uint8_t>& bytes) {
  KEEL_CHECK(bytes.size() == p_.h.workspace_bytes, "cuda program executor: workspace image of ", bytes.size(),
             " bytes, expected ", p_.h.workspace_bytes);
  KEEL_CUDA_CHECK(cudaMemcpy(impl_->workspace, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
}

void ProgramExecutor::upload_kv(const std::vector<uint8_t>& bytes) {
  KEEL_CHECK(bytes.size() == p_.h.kv_bytes, "cuda program executor: KV image of ", bytes.size(),
             " bytes, expected ", p_.h.kv_bytes);
  KEEL_CUDA_CHECK(cudaMemcpy(impl_->kv, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
}

void ProgramExecutor::set_counters(uint32_t value) {
  KEEL_CUDA_CHECK(cudaSetDevice(impl_->device));
  const std::vector<uint32_t> v(std::max<uint32_t>(p_.h.n_counters, 1), value);
  KEEL_CUDA_CHECK(cudaMemcpy(impl_->P.counters, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
}

}  // namespace keel::exec::cuda
