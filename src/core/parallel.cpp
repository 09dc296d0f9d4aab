// Thread pool behind parallel_for: persistent workers wait on a condition
// variable for a job (a range function and a chunk count), take chunks with an
// atomic counter and signal completion.
#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
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
    std::unique_lock<std::mutex> lk(mu_);
    fn_ = &fn;
    n_ = n;
    chunks_ = chunks;
    next_.store(0);
    done_ = 0;
    ++generation_;
    cv_.notify_all();
    lk.unlock();
    work();  // the caller helps
    lk.lock();
    done_cv_.wait(lk, [&] { return done_ == chunks_; });
    fn_ = nullptr;
  }

 private:
  void work() {
    for (;;) {
      size_t c = next_.fetch_add(1);
      if (c >= chunks_) return;
      size_t b = n_ * c / chunks_, e = n_ * (c + 1) / chunks_;
      (*fn_)(b, e);
      std::lock_guard<std::mutex> lk(mu_);
      if (++done_ == chunks_) done_cv_.notify_all();
    }
  }
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || (generation_ != seen && fn_ != nullptr); });
      if (stop_) return;
      seen = generation_;
      lk.unlock();
      work();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(size_t, size_t)>* fn_ = nullptr;
  size_t n_ = 0, chunks_ = 0, done_ = 0;
  std::atomic<size_t> next_{0};
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
  if (chunks <= 1 || host_threads() == 1) {
    fn(0, n);
    return;
  }
  pool().run(n, chunks, fn);
}

}  // namespace keel
