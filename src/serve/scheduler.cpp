// Job events, the serial runner and the scheduler's worker loop (see scheduler.h).
#include "serve/scheduler.h"

#include <algorithm>
#include <cstdint>
#include <exception>

namespace keel::serve {

namespace {
double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

// ------------------------------------------------------------------- Job

Job::Job(engine::GenerateRequest req, std::unique_ptr<engine::TextStream> text)
    : req_(std::move(req)), text_(std::move(text)), submitted_(std::chrono::steady_clock::now()) {
  // The backend calls it on the runner's thread just before on_token (the Job
  // is neither copied nor moved: `this` stays valid in every copy of req_).
  if (req_.logprobs) req_.on_logprob = [this](float lp) { next_logprob_ = lp; };
}

bool Job::next(Event& out, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  if (!cv_.wait_for(lk, timeout, [&] { return !events_.empty(); })) return false;
  out = std::move(events_.front());
  events_.pop_front();
  return true;
}

void Job::push(Event e) {
  {
    std::lock_guard lk(mu_);
    if (e.type != Event::Type::Text) ended_ = true;
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

bool Job::ended() const {
  std::lock_guard lk(mu_);
  return ended_;
}

void Job::started() { started_ = std::chrono::steady_clock::now(); }

void Job::push_text(std::string piece) {
  Event e{Event::Type::Text, std::move(piece), 0, {}, {}};
  if (req_.logprobs) {
    released_lp_.insert(released_lp_.end(), unreleased_.begin(), unreleased_.end());
    e.logprobs = std::move(unreleased_);
    unreleased_.clear();
  }
  push(std::move(e));
}

bool Job::on_token(int32_t id) {
  if (tokens_++ == 0) first_token_ = std::chrono::steady_clock::now();
  const bool was_stopped = text_->stopped();
  std::string piece = text_->push(id);
  if (req_.logprobs && !was_stopped) {
    unreleased_.push_back({text_->last_decoded(), next_logprob_, decoded_bytes_});
    decoded_bytes_ += int64_t(text_->last_decoded().size());
  }
  if (!piece.empty()) push_text(std::move(piece));
  return !text_->stopped() && !cancelled_;
}

void Job::finish(const engine::GenerateResult& r) {
  std::string tail = text_->finish();
  if (!tail.empty()) push_text(std::move(tail));
  auto now = std::chrono::steady_clock::now();
  Outcome o;
  if (text_->stopped() || r.stop_reason == "eos") {
    o.finish_reason = "stop";
  } else if (r.stop_reason == "max_tokens" || r.stop_reason == "context") {
    o.finish_reason = "length";
  } else {
    o.finish_reason = cancelled_ ? "cancelled" : "stop";
  }
  o.text = text_->text();
  o.prompt_tokens = int64_t(req_.prompt.size());
  o.completion_tokens = int64_t(r.output.size());
  o.cached_tokens = r.cached_tokens;
  o.queue_ms = ms_between(submitted_, started_);
  o.prefill_ms = tokens_ ? ms_between(started_, first_token_) : ms_between(started_, now);
  o.decode_ms = tokens_ ? ms_between(first_token_, now) : 0;
  o.logprobs = released_lp_;
  push({Event::Type::Done, {}, 0, std::move(o), {}});
}

void Job::fail(int status, const std::string& message) {
  failed_ = true;
  push({Event::Type::Error, message, status, {}, {}});
}

// ---------------------------------------------------------- SerialRunner

namespace {

/// The context of `b`'s first decode Program that holds `n` sequences, when it
/// is shorter than the backend's (engine::decode_variants: Programs of 4096
/// positions where the full context's reserve attention's staging buffer);
/// 0 otherwise.
int64_t shorter_context(const engine::Backend& b, size_t n) {
  for (const engine::Backend::DecodeProgram& d : b.decode_programs()) {
    if (d.batch < int(n)) continue;
    return d.context < b.max_context() ? d.context : 0;
  }
  return 0;
}

}  // namespace

void SerialRunner::step(const std::function<bool()>&) {
  std::shared_ptr<Job> job = std::move(job_);
  job_.reset();
  if (!job) return;
  try {
    auto on_token = [&](int32_t t) { return job->on_token(t); };
    const engine::GenerateRequest& req = job->request();
    // A request that would outgrow a shorter-context decode Program starts on
    // it and goes on with the full context's from there (as BatchRunner's
    // horizons do): the same tokens, the faster plan while it fits.
    const int64_t ctx = shorter_context(backend_, 1), room = ctx - int64_t(req.prompt.size());
    if (ctx > 0 && room > 1 && req.max_tokens > room) {
      engine::GenerateRequest first = req;
      first.max_tokens = int32_t(room);
      engine::GenerateResult r = backend_.generate(first, on_token);
      if (r.stop_reason == "max_tokens" && int64_t(r.output.size()) == room) {
        engine::GenerateRequest rest = req;
        rest.prompt.insert(rest.prompt.end(), r.output.begin(), r.output.end());
        rest.max_tokens -= int32_t(r.output.size());
        rest.draws_before += int32_t(r.output.size());
        engine::GenerateResult more = backend_.generate(rest, on_token);
        more.output.insert(more.output.begin(), r.output.begin(), r.output.end());
        more.logprobs.insert(more.logprobs.begin(), r.logprobs.begin(), r.logprobs.end());
        more.cached_tokens = r.cached_tokens;
        more.prefill_ms = r.prefill_ms;
        r = std::move(more);
      }
      job->finish(r);
    } else {
      job->finish(backend_.generate(req, on_token));
    }
  } catch (const std::exception& e) {
    job->fail(500, std::string("generation failed: ") + e.what());
  }
}

// ----------------------------------------------------------- BatchRunner

BatchRunner::BatchRunner(engine::Backend& backend, int slots, int grow_tokens)
    : backend_(backend), slots_(std::max(slots, 1)), grow_tokens_(std::max(grow_tokens, 0)) {}

void BatchRunner::step(const std::function<bool()>& waiting) {
  // A job that could never fit the KV cache (a paged one smaller than its
  // prompt and max_tokens) fails now.
  for (Active& a : jobs_) {
    const engine::GenerateRequest& r = a.job->request();
    const engine::GenerateRequest one[1] = {r};
    if (engine::fit_launch(backend_, one, 1) == 0)
      a.job->fail(400, "the prompt and max_tokens need more of the KV cache than the server has (" +
                           std::to_string(backend_.kv_pages_total()) + " pages): lower max_tokens");
  }
  jobs_.erase(std::remove_if(jobs_.begin(), jobs_.end(), [](const Active& a) { return a.job->ended(); }), jobs_.end());
  if (jobs_.empty()) return;
  // Each job resumes where it is: its prompt and output so far, its draws.
  std::vector<engine::GenerateRequest> all;
  all.reserve(jobs_.size());
  for (const Active& a : jobs_) {
    engine::GenerateRequest r = a.job->request();
    r.prompt.insert(r.prompt.end(), a.generated.begin(), a.generated.end());
    r.max_tokens -= int32_t(a.generated.size());
    r.draws_before += int32_t(a.generated.size());
    all.push_back(std::move(r));
  }
  // The jobs this launch runs: in admission order, as many as the KV cache
  // holds together (all, unless the backend's cache is smaller than the
  // batch's contexts: --kv-tokens); the rest wait for the next launch.
  size_t n = engine::fit_launch(backend_, all, all.size());
  // When they do not, pages as the jobs grow: each leases its prompt and its
  // next grow_tokens_ tokens, if that runs more jobs at once; a job at its
  // horizon stops the launch (the next one leases on).
  std::vector<int64_t> horizon(all.size(), INT64_MAX);  // a job's output size at which the launch stops
  if (n < all.size() && grow_tokens_ > 0) {
    std::vector<engine::GenerateRequest> near = all;
    for (engine::GenerateRequest& r : near) r.max_tokens = std::min(r.max_tokens, grow_tokens_);
    const size_t m = engine::fit_launch(backend_, near, near.size());
    if (m > n) {
      n = m;
      for (size_t k = 0; k < n; ++k)
        if (near[k].max_tokens < all[k].max_tokens)
          horizon[k] = int64_t(jobs_[k].generated.size()) + near[k].max_tokens;
      all = std::move(near);
    }
  }
  // A backend's shorter-context decode Program (engine::decode_variants: the
  // full context's reserves attention's staging buffer) runs a launch only
  // when every job's prompt and max_tokens fit it. While every prompt does,
  // the jobs that would outgrow it stop at its context (a horizon, as above),
  // so the launch starts on it; the next launch goes on with the full one.
  if (const int64_t ctx = shorter_context(backend_, n); ctx > 0) {
    bool fit = true;
    for (size_t k = 0; k < n; ++k) fit &= int64_t(all[k].prompt.size()) + 1 < ctx;
    for (size_t k = 0; fit && k < n; ++k) {
      const int64_t room = ctx - int64_t(all[k].prompt.size());
      if (all[k].max_tokens > room) {
        all[k].max_tokens = int32_t(room);
        horizon[k] = std::min(horizon[k], int64_t(jobs_[k].generated.size()) + room);
      }
    }
  }
  const size_t held = jobs_.size() - n;
  peak_jobs_ = std::max(peak_jobs_, int64_t(n));
  std::vector<engine::GenerateRequest> reqs(std::make_move_iterator(all.begin()),
                                            std::make_move_iterator(all.begin() + std::ptrdiff_t(n)));
  // One launch stops at one set of EOS ids: when the jobs' differ (a request
  // that ignores EOS), the launch stops at none and each job ends at its own
  // (end_job below).
  std::vector<std::vector<int32_t>> eos(n);
  for (size_t k = 0; k < n; ++k) eos[k] = reqs[k].eos_ids;
  if (std::any_of(reqs.begin(), reqs.end(), [&](const auto& r) { return r.eos_ids != reqs[0].eos_ids; }))
    for (auto& r : reqs) r.eos_ids.clear();
  // A job's cached prompt positions: what its first launch takes from the
  // KV cache (asked before it starts: the reply reports them).
  for (size_t k = 0; k < n; ++k)
    if (jobs_[k].cached < 0) jobs_[k].cached = backend_.cached_prefix(reqs[k].prompt);
  // A job ends at its last token: EOS (its own ids), max_tokens, the context,
  // or its own stop (a stop string, its client gone); it is finished at once.
  // The launch stops once all have, or once one has (or a slot was free from
  // the start) while jobs wait; the others resume in the next launch.
  // `occupied`: the slots the scheduler sees taken (held jobs included).
  size_t live = n, occupied = jobs_.size();
  bool yielded = false;
  auto go_on = [&] {
    if (live == 0) return false;
    if (!yielded && ((held > 0 && live < n) || (occupied < size_t(slots_) && waiting()))) yielded = true;
    return !yielded;
  };
  auto end_job = [&](Active& a, const char* why) {
    engine::GenerateResult g;
    g.output = a.generated;
    g.stop_reason = why;
    g.cached_tokens = a.cached;
    a.job->finish(g);
    --live;
    --occupied;
  };
  ++launches_;
  try {
    backend_.generate_batch(reqs, [&](int i, int32_t token) {
      const size_t k = size_t(i);
      if (k >= n || jobs_[k].job->ended()) return go_on();
      Active& a = jobs_[k];
      a.generated.push_back(token);
      const engine::GenerateRequest& r = a.job->request();
      if (!a.job->on_token(token)) end_job(a, "stopped");
      else if (std::find(eos[k].begin(), eos[k].end(), token) != eos[k].end()) end_job(a, "eos");
      else if (int64_t(a.generated.size()) >= r.max_tokens) end_job(a, "max_tokens");
      else if (int64_t(r.prompt.size() + a.generated.size()) >= backend_.max_context()) end_job(a, "context");
      else if (int64_t(a.generated.size()) >= horizon[k]) yielded = true;  // its leased pages are full
      return go_on();
    });
    // A job the launch ended without a token of its own deciding (a prompt
    // that fills the context emits none): done too, unless the launch stopped
    // for waiting jobs.
    for (size_t k = 0; k < n; ++k) {
      Active& a = jobs_[k];
      if (!a.job->ended() && (!yielded || a.job->cancelled())) end_job(a, a.job->cancelled() ? "stopped" : "context");
    }
  } catch (const std::exception& e) {
    for (size_t k = 0; k < n; ++k)
      if (!jobs_[k].job->ended()) jobs_[k].job->fail(500, std::string("generation failed: ") + e.what());
  }
  jobs_.erase(std::remove_if(jobs_.begin(), jobs_.end(), [](const Active& a) { return a.job->ended(); }), jobs_.end());
}

std::unique_ptr<Runner> make_runner(engine::Backend& backend, int max_batch, int grow_tokens) {
  const int slots = std::min(max_batch, backend.max_batch());
  if (slots > 1) return std::make_unique<BatchRunner>(backend, slots, grow_tokens);
  return std::make_unique<SerialRunner>(backend);
}

// ------------------------------------------------------------- Scheduler

Scheduler::Scheduler(std::unique_ptr<Runner> runner, size_t queue_capacity)
    : runner_(std::move(runner)), capacity_(queue_capacity) {
  stats_.slots = runner_->slots();
  worker_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  drain(true);
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

Scheduler::Admit Scheduler::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lk(mu_);
    if (draining_) return Admit::Draining;
    if (queue_.size() >= capacity_) {
      ++stats_.rejected;
      return Admit::Full;
    }
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return Admit::Queued;
}

void Scheduler::drain(bool cancel_running) {
  {
    std::lock_guard lk(mu_);
    draining_ = true;
    for (auto& job : queue_) {
      job->fail(503, "the server is shutting down");
      ++stats_.failed;
    }
    queue_.clear();
    if (cancel_running)
      for (auto& job : running_) job->cancel();
  }
  cv_.notify_all();
  idle_cv_.notify_all();
}

void Scheduler::wait_idle() {
  std::unique_lock lk(mu_);
  idle_cv_.wait(lk, [&] { return queue_.empty() && running_.empty(); });
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lk(mu_);
  SchedulerStats s = stats_;
  s.queued = int64_t(queue_.size());
  s.running = int64_t(running_.size());
  return s;
}

void Scheduler::loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty() || !running_.empty(); });
    while (!queue_.empty() && runner_->active() < runner_->slots()) {
      std::shared_ptr<Job> job = std::move(queue_.front());
      queue_.pop_front();
      if (job->cancelled()) {  // the client left while it waited
        job->fail(499, "the client closed the connection");
        ++stats_.cancelled;
        continue;
      }
      job->started();
      running_.push_back(job);
      runner_->admit(std::move(job));
    }
    if (running_.empty()) {
      idle_cv_.notify_all();
      if (stop_) return;
      continue;
    }
    lk.unlock();
    runner_->step([this] {
      std::lock_guard g(mu_);
      return !queue_.empty() && !draining_;
    });
    lk.lock();
    // Jobs that ended leave; their slots are free for the next admission.
    auto done = std::stable_partition(running_.begin(), running_.end(), [](const auto& j) { return !j->ended(); });
    for (auto it = done; it != running_.end(); ++it) {
      if ((*it)->cancelled()) ++stats_.cancelled;
      else if ((*it)->failed()) ++stats_.failed;
      else ++stats_.completed;
    }
    running_.erase(done, running_.end());
    if (running_.empty() && queue_.empty()) idle_cv_.notify_all();
  }
}

}  // namespace keel::serve
