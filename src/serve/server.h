// `keel serve`'s HTTP server (cpp-httplib): the OpenAI routes (/v1/...), the
// Ollama routes (/api/...) and /health over one ServedModel and its Scheduler.
// It listens before the model is loaded, answering 503 until set_model(), so
// a client can poll /health. Shutdown (request_shutdown, from the signal
// thread) stops taking requests (503), fails the queued ones, lets the running
// ones finish (or cancels them too), waits for their replies to be written and
// then closes the listener.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "serve/scheduler.h"
#include "serve/served_model.h"

namespace keel::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                          // 0: any free port (bind() says which)
  size_t queue = 64;                        // requests that may wait beyond the running ones
  int max_batch = 1;                        // requests run together (BatchRunner) when the backend runs batches
  int kv_grow = 256;                        // tokens a job's KV pages grow by when the cache is short (BatchRunner)
  std::string api_key;                      // non-empty: "Authorization: Bearer KEY" required (not on /health)
  size_t max_body_bytes = size_t(8) << 20;  // larger bodies get 413
};

class Server {
 public:
  explicit Server(ServerOptions opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds the listening socket; returns the port. Throws keel::Error naming
  /// the address when it cannot.
  int bind();
  /// Serves on background threads (503 until set_model).
  void start();
  /// The model is loaded: requests are served from now on.
  void set_model(std::unique_ptr<ServedModel> m);
  /// From any thread: begin shutting down (see the file comment). A second
  /// call with cancel_running cancels the running requests too.
  void request_shutdown(bool cancel_running);
  bool shutdown_requested() const;
  /// Blocks until request_shutdown(), drains, stops the listener and returns
  /// the final counters.
  SchedulerStats wait();

  /// Threads that serve HTTP connections: room for every queued and running
  /// request plus a few for /health and listings.
  static size_t http_threads(const ServerOptions& o) { return o.queue + size_t(o.max_batch) + 8; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts
/// afterwards, so that wait_shutdown_signal() receives them. Call it first.
void block_shutdown_signals();
/// Waits up to `timeout` for SIGINT or SIGTERM; returns the signal, or 0.
int wait_shutdown_signal(std::chrono::milliseconds timeout);

}  // namespace keel::serve
