// The scheduler of `keel serve`: a bounded queue of generation jobs and one
// worker thread that runs them on a Runner. The HTTP threads submit Jobs and
// read their events (text pieces, then the end); the worker is the only thread
// that touches the backend.
//
// The Runner is the seam for batching. The scheduler loop is the same for any
// runner: admit queued jobs while the runner has free slots, then step() it;
// a job that ends frees its slot before the next admission. SerialRunner
// wraps engine::Backend::generate: it has one slot and its step() runs that
// job's whole generation, so requests are served one at a time. BatchRunner
// (--max-batch > 1 on a backend that runs batches) has slots() = the batch
// size and batches continuously: its step() runs the admitted jobs as one
// launch (Backend::generate_batch) and returns early, stopping the launch at
// its next step, when jobs wait and a slot has come free; the next step()
// resumes the unfinished jobs beside the new ones (docs/serving.md).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/backend.h"
#include "engine/text_stream.h"

namespace keel::serve {

/// A generated token's log-probability, as the replies report it: the text it
/// decoded to and that text's byte offset in the generated text.
struct TokenLogprob {
  std::string token;
  float logprob = 0;
  int64_t offset = 0;
};

/// How a job ended, with the counts the APIs report.
struct Outcome {
  std::string finish_reason;   // "stop" (EOS or a stop string), "length" (max_tokens or the context), "cancelled"
  std::string text;            // the whole generated text (stop string excluded)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double queue_ms = 0;         // submitted -> started
  double prefill_ms = 0;       // started -> first token
  double decode_ms = 0;        // the tokens after the first
  int64_t cached_tokens = 0;   // prompt positions reused from the KV cache (engine/kv_pages.h)
  /// GenerateRequest::logprobs: the tokens whose text the reply holds (those
  /// of a stop string, never released, left out).
  std::vector<TokenLogprob> logprobs;
};

/// One thing a job reports, in order: Text pieces, then exactly one Done or Error.
struct Event {
  enum class Type { Text, Done, Error } type = Type::Text;
  std::string text;   // Text: the piece; Error: the message
  int status = 0;     // Error: the HTTP status (503 shutting down, 500 the backend failed)
  Outcome outcome;    // Done
  std::vector<TokenLogprob> logprobs;  // Text, with GenerateRequest::logprobs: the tokens released with it
};

/// One generation: the backend request, the text stream that turns its tokens
/// into text (stop strings included), and the event queue the HTTP side reads.
/// With req.logprobs, each token's log-probability (the backend gives it to
/// the request's on_logprob, which the Job sets, just before the token) goes
/// with the Text event that releases the token's text.
class Job {
 public:
  Job(engine::GenerateRequest req, std::unique_ptr<engine::TextStream> text);
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  const engine::GenerateRequest& request() const { return req_; }

  // --- HTTP side
  /// The client went away: the job stops at its next token (or is dropped
  /// from the queue).
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  /// Waits up to `timeout` for the next event; false when none came.
  bool next(Event& out, std::chrono::milliseconds timeout);

  // --- runner side
  void started();
  /// Feeds one generated token; returns whether generation goes on.
  bool on_token(int32_t id);
  /// The generation ended; reports the rest of the text and Done.
  void finish(const engine::GenerateResult& r);
  /// The job cannot run; reports Error.
  void fail(int status, const std::string& message);
  bool ended() const;
  bool failed() const { return failed_; }

 private:
  void push(Event e);
  /// A Text event of `piece` with the tokens waiting for released text.
  void push_text(std::string piece);
  engine::GenerateRequest req_;
  float next_logprob_ = 0;                 // on_logprob's value for the coming token
  std::vector<TokenLogprob> unreleased_;   // tokens whose text is not released yet
  std::vector<TokenLogprob> released_lp_;  // every token reported so far
  int64_t decoded_bytes_ = 0;              // text the tokens decoded to so far
  std::unique_ptr<engine::TextStream> text_;
  std::atomic<bool> cancelled_{false}, failed_{false};
  std::chrono::steady_clock::time_point submitted_, started_, first_token_;
  int64_t tokens_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  bool ended_ = false;
};

/// What the scheduler drives (see the file comment).
class Runner {
 public:
  virtual ~Runner() = default;
  /// Jobs that can be admitted at once.
  virtual int slots() const = 0;
  /// Jobs admitted and not yet ended.
  virtual int active() const = 0;
  /// Takes a job into a free slot (active() < slots()).
  virtual void admit(std::shared_ptr<Job> job) = 0;
  /// Advances the admitted jobs; ends (finish or fail) those that are done,
  /// freeing their slots. A job whose cancelled() turns true must end soon.
  /// `waiting()` (thread-safe) says whether jobs wait for a slot: a runner
  /// that can take them in may return early so they are admitted.
  virtual void step(const std::function<bool()>& waiting) = 0;
};

/// One job at a time on engine::Backend::generate: step() is the job's whole
/// generation; a cancelled job stops at its next token (the TokenCallback
/// returns false).
class SerialRunner : public Runner {
 public:
  explicit SerialRunner(engine::Backend& backend) : backend_(backend) {}
  int slots() const override { return 1; }
  int active() const override { return job_ ? 1 : 0; }
  void admit(std::shared_ptr<Job> job) override { job_ = std::move(job); }
  void step(const std::function<bool()>& waiting) override;

 private:
  engine::Backend& backend_;
  std::shared_ptr<Job> job_;
};

/// Continuous batching on engine::Backend::generate_batch (backend
/// max_batch() > 1): up to `slots` jobs share each launch, and jobs join and
/// leave between steps. step() runs the admitted jobs as one launch until
/// every one has ended, or until a job has ended (or a slot was free) while
/// others wait: then it stops the launch at the next step (the token
/// callback returns false) and returns, the scheduler admits the waiting
/// jobs, and the next step() resumes the unfinished jobs beside them in a new
/// launch: each resumed prompt is the job's prompt and its output so far, its
/// K/V come back from the backend's prefix cache (engine/kv_pages.h: one or
/// two positions run again), and its sampling draws continue
/// (GenerateRequest::draws_before), so every job gets the tokens it gets
/// alone. A job that stops early (a stop string, its client gone) ends at
/// once, with the tokens it took.
///
/// KV pages are handed out as jobs grow: when the launch's jobs' prompts and
/// whole max_tokens do not fit a paged KV cache together (a cache smaller
/// than the batch's contexts, --kv-tokens), each job leases its prompt and its
/// next `grow_tokens` tokens only, so more jobs run at once; a job that
/// reaches that horizon stops the launch, and the next one leases the next
/// stretch (the prefix cache keeps its K/V; a job that no longer fits waits,
/// and its pages may be evicted and recomputed when it resumes). 0: every job
/// leases its prompt and max_tokens up front.
class BatchRunner : public Runner {
 public:
  static constexpr int kDefaultGrowTokens = 256;
  BatchRunner(engine::Backend& backend, int slots, int grow_tokens = kDefaultGrowTokens);
  int slots() const override { return slots_; }
  int active() const override { return int(jobs_.size()); }
  void admit(std::shared_ptr<Job> job) override { jobs_.push_back({std::move(job), {}, -1}); }
  void step(const std::function<bool()>& waiting) override;
  /// Launches run so far (tests: whether jobs joined a running batch).
  int64_t launches() const { return launches_; }
  /// The most jobs one launch has run (tests: whether the KV cache held them together).
  int64_t peak_jobs() const { return peak_jobs_; }

 private:
  struct Active {
    std::shared_ptr<Job> job;
    std::vector<int32_t> generated;  // its tokens so far, over every launch
    int64_t cached = -1;             // prompt positions its first launch reused
  };
  engine::Backend& backend_;
  int slots_;
  int grow_tokens_;
  std::vector<Active> jobs_;
  int64_t launches_ = 0, peak_jobs_ = 0;
};

/// The runner for a backend: BatchRunner with min(max_batch, backend.max_batch())
/// slots (and `grow_tokens`) when that is more than one, else SerialRunner.
std::unique_ptr<Runner> make_runner(engine::Backend& backend, int max_batch,
                                    int grow_tokens = BatchRunner::kDefaultGrowTokens);

/// Counters for /health and the shutdown message.
struct SchedulerStats {
  int64_t queued = 0, running = 0;
  int64_t completed = 0, cancelled = 0, failed = 0, rejected = 0;
  int slots = 0;
};

class Scheduler {
 public:
  /// Starts the worker thread. `queue_capacity`: jobs that may wait beyond
  /// the runner's slots before submit() refuses more.
  Scheduler(std::unique_ptr<Runner> runner, size_t queue_capacity);
  ~Scheduler();  // drain(true), then joins the worker
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Queues a job; false when the queue is full (the caller answers 429) or
  /// the scheduler is draining (503).
  enum class Admit { Queued, Full, Draining };
  Admit submit(std::shared_ptr<Job> job);
  /// Stops taking jobs and fails the queued ones (503); the running ones
  /// finish, or are cancelled too when `cancel_running`. Returns at once;
  /// wait_idle() waits for the running ones.
  void drain(bool cancel_running);
  void wait_idle();
  SchedulerStats stats() const;

 private:
  void loop();
  std::unique_ptr<Runner> runner_;
  size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::shared_ptr<Job>> running_;
  bool draining_ = false, stop_ = false;
  SchedulerStats stats_;
  std::thread worker_;
};

}  // namespace keel::serve
