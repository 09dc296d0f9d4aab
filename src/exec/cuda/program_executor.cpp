// ProgramExecutor: the host side of running a compiler::Program on the GPU.
// Construction: pick the worker count (recompile for the SM count unless told
// to keep it), check co-residency and memory, upload the Program arrays as they
// are, one device copy per named weight tensor, the constants, and zeroed
// workspace / KV arenas. run(): the launch setup of program.h (a host image of
// the workspace with NaN activations, page table, Control, SeqState, token
// history and first embedding, copied in one go; counters zeroed), one
// cooperative launch, then a polling loop that hands tokens from the pinned
// ring to on_token as they appear and turns a false return into
// control.stop_request (written on a second stream while the kernel runs).
#include "exec/cuda/program_executor.h"
#include "exec/cpu/launch_state.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "compiler/compiler.h"
#include "core/error.h"
#include "exec/cuda/cuda_check.h"
#include "exec/cuda/program_kernel.h"

namespace keel::exec::cuda {

using compiler::BufferKind;
using compiler::Control;
using compiler::SeqState;

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

void* device_alloc(size_t bytes, std::vector<void*>& owned) {
  void* d = nullptr;
  KEEL_CUDA_CHECK(cudaMalloc(&d, std::max<size_t>(bytes, 16)));
  owned.push_back(d);
  KEEL_CUDA_CHECK(cudaMemset(d, 0, std::max<size_t>(bytes, 16)));
  return d;
}

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

const char* error_name(int e) {
  switch (e) {
    case prog::kErrTimeout: return "watchdog: a wait saw no progress";
    case prog::kErrBadPage: return "page table entry out of range";
    case prog::kErrBadToken: return "token outside the vocabulary";
    case prog::kErrBadOpcode: return "unknown opcode";
    case prog::kErrHeadDim: return "head_dim too large";
  }
  return "unknown device error";
}

}  // namespace

struct ProgramExecutor::Impl {
  int device = 0;
  double watchdog_s = 5;
  std::vector<void*> owned;           // cudaMalloc'd
  std::vector<void*> pinned;          // cudaHostAlloc'd
  cudaStream_t stream = nullptr, ctl_stream = nullptr;
  uint8_t* workspace = nullptr;
  uint8_t* kv = nullptr;
  std::vector<uint8_t*> ptr;          // per buffer (device)
  std::vector<uint64_t> bytes;        // per buffer
  std::vector<uint8_t> dtype;         // per buffer
  prog::DevProgram P;
  size_t smem = 0;
  int32_t* host_ring = nullptr;       // pinned, mapped
  int32_t* host_count = nullptr;
  int32_t* stop_one = nullptr;        // pinned source of the stop_request write
  float* capture = nullptr;           // device, allocated on the first capture run
  int32_t* capture_rows = nullptr;

  ~Impl() {
    if (stream) cudaStreamDestroy(stream);
    if (ctl_stream) cudaStreamDestroy(ctl_stream);
    for (void* d : owned) cudaFree(d);
    for (void* h : pinned) cudaFreeHost(h);
  }
};

ProgramExecutor::ProgramExecutor(const compiler::Program& given, const model::Model& m,
                                 const ProgramExecutorOptions& opt)
    : impl_(new Impl) {
  Impl& I = *impl_;
  int n_dev = 0;
  const cudaError_t e = cudaGetDeviceCount(&n_dev);
  KEEL_CHECK(e == cudaSuccess && n_dev > 0, "cuda program executor: no CUDA device (", cudaGetErrorString(e), ")");
  KEEL_CHECK(opt.device >= 0 && opt.device < n_dev, "cuda program executor: device ", opt.device, " of ", n_dev);
  I.device = opt.device;
  I.watchdog_s = opt.watchdog_s;
  KEEL_CUDA_CHECK(cudaSetDevice(I.device));
  given.validate();
  {
    const auto& h = given.h;
    KEEL_CHECK(h.hidden == m.config.hidden && h.vocab == m.config.vocab && h.n_layers == m.config.n_layers &&
                   h.n_heads == m.config.n_heads && h.n_kv_heads == m.config.n_kv_heads &&
                   h.head_dim == m.config.head_dim && h.intermediate == m.config.intermediate,
               "cuda program executor: the Program was compiled for different model dimensions than ", m.dir);
  }
  int sms = 0;
  KEEL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, I.device));
  if (!opt.keep_worker_count && given.h.n_workers != sms) {
    compiler::CompileOptions o;
    o.workers = sms;
    o.batch = given.h.batch;
    o.max_context = given.h.max_context;
    o.page_size = given.h.page_size;
    o.ring_len = given.h.ring_len;
    p_ = compiler::compile(m.config, o);
    recompiled_ = true;
  } else {
    p_ = given;
  }
  const compiler::Program& p = p_;
  const auto& h = p.h;
  KEEL_CHECK(h.head_dim <= prog::kMaxHeadDim, "cuda program executor: head_dim ", h.head_dim, " exceeds ",
             prog::kMaxHeadDim);
  // ---- shared memory and co-residency ----
  I.smem = prog::dynamic_smem_bytes(h);
  int optin = 0;
  KEEL_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, I.device));
  KEEL_CHECK(I.smem + 4096 <= size_t(optin), "cuda program executor: the tasks need ", I.smem,
             " bytes of shared memory (hidden ", h.hidden, ", intermediate ", h.intermediate, "), the device allows ",
             optin);
  const int co = prog::max_coresident_ctas(I.device, I.smem);
  KEEL_CHECK(h.n_workers >= 1 && h.n_workers <= co, "cuda program executor: the Program has ", h.n_workers,
             " workers but only ", co, " CTAs can be co-resident on device ", I.device, " (", sms,
             " SMs); recompile it for at most that many workers");
  // ---- memory: weights (unique tensors) + KV + workspace must fit ----
  std::map<std::string, const model::TensorView*> tensors;
  uint64_t weight_bytes = 0;
  for (const compiler::BufferDesc& b : p.buffers) {
    if (BufferKind(b.kind) != BufferKind::Weight) continue;
    const std::string name(b.name_view());
    const model::TensorView& tv = m.weights.get(name);
    KEEL_CHECK(uint64_t(tv.numel()) == b.count, "cuda program executor: weight '", name, "' has ", tv.numel(),
               " elements in ", tv.file, ", the Program expects ", b.count);
    if (tensors.emplace(name, &tv).second) weight_bytes += tv.nbytes;
  }
  const uint64_t other = h.workspace_bytes + h.constants_bytes + p.tasks.size() * sizeof(compiler::TaskDesc) +
                         p.waits.size() * sizeof(compiler::WaitDesc) + (64ull << 20);
  size_t free_b = 0, total_b = 0;
  KEEL_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  KEEL_CHECK(weight_bytes + h.kv_bytes + other <= free_b, "cuda program executor: weights ",
             double(weight_bytes) / kGiB, " GiB + KV cache ", double(h.kv_bytes) / kGiB, " GiB + workspace ",
             double(other) / kGiB, " GiB do not fit the ", double(free_b) / kGiB, " GiB free on device ", I.device,
             " (", m.dir, "); lower the batch or the context");
  // ---- upload ----
  std::map<std::string, uint8_t*> dev_weights;
  for (const auto& [name, tv] : tensors) {
    void* d = device_alloc(tv->nbytes, I.owned);
    KEEL_CUDA_CHECK(cudaMemcpy(d, tv->data, tv->nbytes, cudaMemcpyHostToDevice));
    dev_weights[name] = static_cast<uint8_t*>(d);
  }
  I.workspace = static_cast<uint8_t*>(device_alloc(h.workspace_bytes, I.owned));
  I.kv = static_cast<uint8_t*>(device_alloc(h.kv_bytes, I.owned));
  uint8_t* constants = device_copy(p.constants, I.owned);
  const size_t nb = p.buffers.size();
  I.ptr.assign(nb, nullptr);
  I.bytes.assign(nb, 0);
  I.dtype.assign(nb, 0);
  std::vector<int64_t> cols(nb, 0);
  for (size_t i = 0; i < nb; ++i) {
    const compiler::BufferDesc& b = p.buffers[i];
    I.dtype[i] = b.dtype;
    I.bytes[i] = b.count * dtype_size(DType(b.dtype));
    cols[i] = b.cols;
    switch (BufferKind(b.kind)) {
      case BufferKind::Activation:
      case BufferKind::State: I.ptr[i] = I.workspace + b.offset; break;
      case BufferKind::Kv: I.ptr[i] = I.kv + b.offset; break;
      case BufferKind::Constant: I.ptr[i] = constants + b.offset; break;
      case BufferKind::Weight: {
        const model::TensorView* tv = tensors.at(std::string(b.name_view()));
        I.ptr[i] = dev_weights.at(std::string(b.name_view()));
        I.dtype[i] = uint8_t(tv->dtype);
        I.bytes[i] = tv->nbytes;
        break;
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
  P.counters = static_cast<uint32_t*>(device_alloc(std::max<uint32_t>(h.n_counters, 1) * 4ull, I.owned));
  P.status = static_cast<prog::DevStatus*>(device_alloc(sizeof(prog::DevStatus), I.owned));
  P.cta = static_cast<prog::CtaState*>(device_alloc(sizeof(prog::CtaState) * size_t(h.n_workers), I.owned));
  P.abort = static_cast<uint32_t*>(device_alloc(4, I.owned));
  P.capture_rows = static_cast<int32_t*>(device_alloc(sizeof(int32_t) * size_t(h.batch), I.owned));
  auto pinned = [&](size_t bytes) {
    void* hp = nullptr;
    KEEL_CUDA_CHECK(cudaHostAlloc(&hp, bytes, cudaHostAllocMapped));
    I.pinned.push_back(hp);
    std::memset(hp, 0, bytes);
    return static_cast<int32_t*>(hp);
  };
  I.host_ring = pinned(sizeof(int32_t) * size_t(h.batch) * size_t(h.ring_len));
  I.host_count = pinned(sizeof(int32_t) * size_t(h.batch));
  I.stop_one = pinned(sizeof(int32_t));
  *I.stop_one = 1;
  KEEL_CUDA_CHECK(cudaStreamCreateWithFlags(&I.stream, cudaStreamNonBlocking));
  KEEL_CUDA_CHECK(cudaStreamCreateWithFlags(&I.ctl_stream, cudaStreamNonBlocking));
}

ProgramExecutor::~ProgramExecutor() = default;

cpu::RunResult ProgramExecutor::run(const std::vector<cpu::Sequence>& seqs, const cpu::RunOptions& opt) {
  Impl& I = *impl_;
  const compiler::Program& p = p_;
  const auto& h = p.h;
  const int B = h.batch;
  KEEL_CUDA_CHECK(cudaSetDevice(I.device));
  // ---- launch setup (launch_state.h) into a host image of the workspace ----
  std::vector<uint8_t> ws(h.workspace_bytes, 0);
  const DType edt = DType(I.dtype[size_t(h.buf_embed)]);
  std::vector<uint8_t> row(size_t(h.hidden) * dtype_size(edt));
  write_launch_state(
      p, seqs, opt.eos_ids, ws.data(),
      [&](int32_t tok, float* x) {  // the embedding row, read back from the device copy
        KEEL_CUDA_CHECK(cudaMemcpy(row.data(), I.ptr[size_t(h.buf_embed)] + size_t(tok) * row.size(), row.size(),
                                   cudaMemcpyDeviceToHost));
        for (int64_t i = 0; i < h.hidden; ++i) x[i] = load_as_f32(row.data(), edt, size_t(i));
      },
      "cuda program executor");
  KEEL_CUDA_CHECK(cudaMemcpy(I.workspace, ws.data(), ws.size(), cudaMemcpyHostToDevice));
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

  // ---- one launch; stream tokens while it runs ----
  cpu::RunResult res;
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
        const int32_t tok =
            reinterpret_cast<volatile int32_t*>(I.host_ring)[int64_t(b) * h.ring_len + seen[size_t(b)] % h.ring_len];
        ++seen[size_t(b)];
        if (first) {
          res.first_token_ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
          first = false;
        }
        res.seqs[size_t(b)].tokens.push_back(tok);
        if (opt.on_token && !opt.on_token(b, tok) && !stop_sent) {
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

  // ---- errors: the device status and every CTA's state ----
  prog::DevStatus st;
  KEEL_CUDA_CHECK(cudaMemcpy(&st, P.status, sizeof st, cudaMemcpyDeviceToHost));
  if (st.error != prog::kErrNone) {
    std::vector<prog::CtaState> cta(size_t(h.n_workers));
    KEEL_CUDA_CHECK(cudaMemcpy(cta.data(), P.cta, sizeof(prog::CtaState) * cta.size(), cudaMemcpyDeviceToHost));
    std::string where;
    int listed = 0;
    for (int w = 0; w < h.n_workers && listed < 24; ++w) {
      const prog::CtaState& c = cta[size_t(w)];
      if (c.reason == 1) continue;
      ++listed;
      where += cat("\n  CTA ", w, " step ", c.step, ": ", reason_name(c.reason));
      if (c.task >= 0) where += cat(" at ", compiler::describe_task(p, uint32_t(c.task)));
      else if (c.reason == 2 || c.reason == 3) where += " at the step gate";
      if (c.reason == 2 || c.reason == 3) where += cat(", counter ", c.counter, " = ", c.value, " < ", c.target);
    }
    fail("cuda program executor: ", error_name(st.error), " (detail ", st.detail, ") raised by CTA ", st.cta,
         st.task >= 0 ? cat(" in ", compiler::describe_task(p, uint32_t(st.task))) : std::string(),
         "; CTA states:", where);
  }
  // ---- results ----
  std::vector<SeqState> states(static_cast<size_t>(B));
  KEEL_CUDA_CHECK(cudaMemcpy(states.data(), I.ptr[size_t(h.buf_state)], sizeof(SeqState) * size_t(B),
                             cudaMemcpyDeviceToHost));
  uint32_t steps_count = 0;
  KEEL_CUDA_CHECK(cudaMemcpy(&steps_count, P.counters + h.step_counter, 4, cudaMemcpyDeviceToHost));
  res.steps = int(steps_count / std::max<uint32_t>(h.step_expected, 1));
  res.tasks_run = uint64_t(res.steps) * p.tasks.size();
  for (size_t b = 0; b < seqs.size(); ++b) {
    res.seqs[b].stop = compiler::StopReason(states[b].stop_reason);
    KEEL_CHECK(int32_t(res.seqs[b].tokens.size()) == states[b].n_generated, "cuda program executor: sequence ", b,
               " generated ", states[b].n_generated, " tokens but ", res.seqs[b].tokens.size(), " reached the host");
  }
  if (opt.capture_logits) {
    std::vector<int32_t> rows(static_cast<size_t>(B));
    KEEL_CUDA_CHECK(cudaMemcpy(rows.data(), P.capture_rows, sizeof(int32_t) * size_t(B), cudaMemcpyDeviceToHost));
    for (size_t b = 0; b < seqs.size(); ++b) {
      auto& v = res.seqs[b].logits;
      v.resize(size_t(rows[b]) * size_t(h.vocab));
      KEEL_CUDA_CHECK(cudaMemcpy(v.data(), I.capture + b * size_t(h.max_context) * size_t(h.vocab),
                                 v.size() * sizeof(float), cudaMemcpyDeviceToHost));
    }
  }
  return res;
}

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
             ") in ", compiler::describe_task(p_, task));
}

}  // namespace keel::exec::cuda
