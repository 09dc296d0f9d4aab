// Thread pool behind parallel_for: persistent workers wait on a condition
// variable for a job (a range function and a chunk count), take chunks with an
// atomic counter and signal completion. An exception thrown by a chunk is
// carried back to the caller once every chunk has finished; a parallel_for
// called from inside a chunk runs inline (the pool is already busy).
#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace keel {

int host_threads() {
  static int n = [] {
    if (const char* e = std::getenv("KEEL_THREADS")) {
      int v = std::atoi(e);
      if (v > 0) return v;
    }
    unsigned h = std::thread::hardware_concurrency();
    return int(h ? h : 1);
  }();
  return n;
}

namespace {

// True on pool threads and on a caller while its job runs: a nested
// parallel_for then runs inline instead of deadlocking on run_mu_.
thread_local bool t_in_pool = false;

class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(size_t n, size_t chunks, const std::function<void(size_t, size_t)>& fn) {
    std::lock_guard<std::mutex> serial(run_mu_);
    t_in_pool = true;
    Job job;
    job.fn = &fn;
    job.n = n;
    job.chunks = chunks;
    std::unique_lock<std::mutex> lk(mu_);
    job_ = &job;
    ++generation_;
    cv_.notify_all();
    lk.unlock();
    work(job);  // the caller helps
    lk.lock();
    // The job lives on this stack frame: wait until every chunk is done and no
    // worker still holds a pointer to it.
    done_cv_.wait(lk, [&] { return job.done == job.chunks && job.active == 0; });
    job_ = nullptr;
    t_in_pool = false;
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  // One parallel_for call. Immutable but for the counters; workers join it
  // under mu_ (active++) and leave under mu_, so a late worker can never take
  // a chunk of a later job.
  struct Job {
    const std::function<void(size_t, size_t)>* fn = nullptr;
    size_t n = 0, chunks = 0;
    std::atomic<size_t> next{0};
    size_t done = 0;  // guarded by mu_
    int active = 0;   // workers inside work(); guarded by mu_
    std::exception_ptr error;  // the first chunk's exception; guarded by mu_
  };

  void work(Job& j) {
    for (;;) {
      size_t c = j.next.fetch_add(1);
      if (c >= j.chunks) return;
      size_t b = j.n * c / j.chunks, e = j.n * (c + 1) / j.chunks;
      std::exception_ptr err;
      try {
        (*j.fn)(b, e);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu_);
      if (err && !j.error) j.error = err;
      if (++j.done == j.chunks) done_cv_.notify_all();
    }
  }
  void loop() {
    t_in_pool = true;
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || (generation_ != seen && job_ != nullptr); });
      if (stop_) return;
      seen = generation_;
      Job* j = job_;
      ++j->active;
      lk.unlock();
      work(*j);
      lk.lock();
      if (--j->active == 0 && j->done == j->chunks) done_cv_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  Job* job_ = nullptr;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static Pool p(std::max(0, host_threads() - 1));
  return p;
}

}  // namespace

void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t grain) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  size_t chunks = std::min<size_t>(size_t(host_threads()) * 4, (n + grain - 1) / grain);
  if (chunks <= 1 || host_threads() == 1 || t_in_pool) {
    fn(0, n);
    return;
  }
  pool().run(n, chunks, fn);
}

}  // namespace keel
