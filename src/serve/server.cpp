// The HTTP layer of keel serve (see server.h): routes, the API key, errors in
// each API's shape, streaming a Job's events as SSE or NDJSON, and the
// loading / serving / draining life cycle.
#include "serve/server.h"

#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <ctime>
#include <mutex>
#include <thread>

#include "core/error.h"

namespace keel::serve {

using nlohmann::json;

namespace {

/// Errors under /api/ take Ollama's shape, all others OpenAI's.
Api api_of(const std::string& path) { return path.rfind("/api/", 0) == 0 ? Api::Ollama : Api::OpenAI; }

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

void send_error(httplib::Response& res, Api api, const HttpError& e) { send_json(res, e.status, error_json(api, e)); }

std::string random_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%016llx", prefix, (unsigned long long)(salt * 0x9E3779B97F4A7C15ull + counter++));
  return buf;
}

bool same_key(const std::string& a, const std::string& b) {
  // Compared in time independent of where they differ.
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

using Parser = Request (*)(const json&);

}  // namespace

struct Server::Impl {
  ServerOptions opts;
  httplib::Server http;
  std::thread listener;
  std::mutex mu;
  std::condition_variable cv;
  std::unique_ptr<ServedModel> model;      // set once, then read-only
  std::unique_ptr<Scheduler> scheduler;
  std::atomic<bool> ready{false}, draining{false};
  bool cancel_running = false;
  int in_flight = 0;                       // generation requests not yet fully answered

  void begin_request() {
    std::lock_guard lk(mu);
    ++in_flight;
  }
  void end_request() {
    {
      std::lock_guard lk(mu);
      --in_flight;
    }
    cv.notify_all();
  }

  void check_key(const httplib::Request& req) const {
    if (opts.api_key.empty()) return;
    std::string h = req.get_header_value("Authorization");
    const std::string bearer = "Bearer ";
    if (h.rfind(bearer, 0) != 0 || !same_key(h.substr(bearer.size()), opts.api_key))
      throw HttpError(401, "invalid API key: send 'Authorization: Bearer KEY' with the key keel serve was started with",
                      "", "invalid_api_key");
  }

  const ServedModel& served() const {
    if (draining) throw HttpError(503, "the server is shutting down", "", "shutting_down");
    if (!ready) throw HttpError(503, "the model is still loading; retry shortly (GET /health turns 200 when ready)", "",
                                "loading");
    return *model;
  }

  /// Wraps a handler: the key, the model, and HttpError -> the API's error body.
  template <class F>
  httplib::Server::Handler route(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        check_key(req);
        f(req, res, served());
      } catch (const HttpError& e) {
        send_error(res, api_of(req.path), e);
      }
    };
  }

  void generate(const httplib::Request& req, httplib::Response& res, const ServedModel& m, Api api, Kind kind,
                Parser parse);
  void stream(httplib::Response& res, std::shared_ptr<Job> job, ReplyContext c);
  void install_routes();
};

void Server::Impl::generate(const httplib::Request& req, httplib::Response& res, const ServedModel& m, Api api,
                            Kind kind, Parser parse) {
  Request r = parse(parse_body(req.body));
  if (!model_matches(r.model, m.card.name))
    throw HttpError(404, cat("the model '", r.model, "' is not served here; this server serves '", m.card.name, "'"),
                    "model", "model_not_found");
  ReplyContext c{api, kind, random_id(kind == Kind::Chat ? "chatcmpl-" : "cmpl-"), m.card.name,
                 int64_t(std::time(nullptr)), r.include_usage, r.logprobs};
  // Ollama clients "load" a model with an empty prompt or message list.
  if (api == Api::Ollama && (kind == Kind::Chat ? r.messages.empty() : r.prompt.empty())) {
    json j = full_reply(c, Outcome{"stop", "", 0, 0, 0, 0, 0, 0, {}});
    j["done_reason"] = "load";
    send_json(res, 200, j);
    return;
  }
  std::shared_ptr<Job> job = make_job(r, m);
  switch (scheduler->submit(job)) {
    case Scheduler::Admit::Full:
      throw HttpError(429, cat("the queue is full (", opts.queue, " requests waiting); retry later (keel serve --queue)"),
                      "", "queue_full");
    case Scheduler::Admit::Draining: throw HttpError(503, "the server is shutting down", "", "shutting_down");
    case Scheduler::Admit::Queued: break;
  }
  if (r.stream) return stream(res, std::move(job), c);
  begin_request();
  Event e;
  for (;;) {
    if (!job->next(e, std::chrono::milliseconds(1000)) || e.type == Event::Type::Text) continue;
    break;
  }
  end_request();
  if (e.type == Event::Type::Error) throw HttpError(e.status, e.text);
  send_json(res, 200, full_reply(c, e.outcome));
}

void Server::Impl::stream(httplib::Response& res, std::shared_ptr<Job> job, ReplyContext c) {
  begin_request();
  auto opened = std::make_shared<bool>(false);
  res.set_chunked_content_provider(
      stream_content_type(c.api),
      [job, c, opened](size_t, httplib::DataSink& sink) {
        std::string out;
        if (!*opened) {
          *opened = true;
          out = stream_open(c);
        }
        // Wait briefly for the next event, then take every event already there.
        bool end = false;
        Event e;
        for (auto wait = std::chrono::milliseconds(100); !end && job->next(e, wait); wait = std::chrono::milliseconds(0)) {
          if (e.type == Event::Type::Text) out += stream_piece(c, e.text, e.logprobs);
          else if (e.type == Event::Type::Done) out += stream_close(c, e.outcome), end = true;
          else out += stream_error(c, HttpError(e.status, e.text)), end = true;
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;  // the client left
        if (end) sink.done();
        return true;
      },
      [this, job](bool) {
        // Called once the stream ended, written or not: a job still running
        // has lost its client and stops at its next token.
        if (!job->ended()) job->cancel();
        end_request();
      });
}

void Server::Impl::install_routes() {
  auto gen = [this](Api api, Kind kind, Parser parse) {
    return route([this, api, kind, parse](const httplib::Request& req, httplib::Response& res, const ServedModel& m) {
      generate(req, res, m, api, kind, parse);
    });
  };
  http.Post("/v1/completions", gen(Api::OpenAI, Kind::Completion, parse_openai_completion));
  http.Post("/v1/chat/completions", gen(Api::OpenAI, Kind::Chat, parse_openai_chat));
  http.Post("/api/generate", gen(Api::Ollama, Kind::Completion, parse_ollama_generate));
  http.Post("/api/chat", gen(Api::Ollama, Kind::Chat, parse_ollama_chat));
  http.Get("/v1/models", route([](const httplib::Request&, httplib::Response& res, const ServedModel& m) {
             send_json(res, 200, openai_models(m.card));
           }));
  http.Get(R"(/v1/models/(.+))", route([](const httplib::Request& req, httplib::Response& res, const ServedModel& m) {
             if (!model_matches(req.matches[1], m.card.name))
               throw HttpError(404, cat("the model '", std::string(req.matches[1]), "' is not served here"), "model",
                               "model_not_found");
             send_json(res, 200, openai_model(m.card));
           }));
  http.Get("/api/tags", route([](const httplib::Request&, httplib::Response& res, const ServedModel& m) {
             send_json(res, 200, ollama_tags(m.card));
           }));
  http.Get("/api/version", [](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"version", "0.1.0"}});
  });
  http.Post("/api/show", route([](const httplib::Request& req, httplib::Response& res, const ServedModel& m) {
              json b = parse_body(req.body);
              std::string name = b.value("model", b.value("name", std::string()));
              if (name.empty() || !model_matches(name, m.card.name))
                throw HttpError(404, cat("model '", name, "' not found; this server serves '", m.card.name, "'"));
              send_json(res, 200, ollama_show(m.card));
            }));
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining) return send_json(res, 503, {{"status", "shutting down"}});
    if (!ready) return send_json(res, 503, {{"status", "loading"}});
    SchedulerStats s = scheduler->stats();
    send_json(res, 200, {{"status", "ok"}, {"model", model->card.name},
                         {"backend", std::string(model->backend->name())}, {"context", model->backend->max_context()},
                         {"slots", s.slots}, {"queue_capacity", opts.queue}, {"queued", s.queued},
                         {"running", s.running}, {"completed", s.completed}, {"cancelled", s.cancelled},
                         {"failed", s.failed}, {"rejected", s.rejected}});
  });
  // httplib's own errors (404 no route, 413 body too large, 400 bad request
  // line) get the API's error shape; answers that already have one are kept.
  http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg = res.status == 404 ? cat("no route ", req.method, " ", req.path)
                      : res.status == 413 ? cat("the request body exceeds ", opts.max_body_bytes, " bytes (keel serve --max-body)")
                                          : cat("HTTP ", res.status);
    send_error(res, api_of(req.path), HttpError(res.status, msg, "", res.status == 404 ? "unknown_route" : ""));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, api_of(req.path), HttpError(500, cat("internal error: ", what)));
  });
}

Server::Server(ServerOptions opts) : impl_(std::make_unique<Impl>()) {
  KEEL_CHECK(opts.queue >= 1, "serve: --queue must be at least 1");
  impl_->opts = std::move(opts);
  const size_t threads = http_threads(impl_->opts);
  impl_->http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  impl_->http.set_payload_max_length(impl_->opts.max_body_bytes);
  impl_->install_routes();
}

Server::~Server() {
  if (impl_->listener.joinable()) {
    request_shutdown(true);
    wait();
  }
}

int Server::bind() {
  const ServerOptions& o = impl_->opts;
  int port = o.port == 0 ? impl_->http.bind_to_any_port(o.host) : (impl_->http.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0)
    fail("serve: cannot listen on ", o.host, ":", o.port, " (address in use, not a local address, or a port below 1024 "
         "without the right; choose another with --host / --port)");
  return port;
}

void Server::start() {
  impl_->listener = std::thread([this] { impl_->http.listen_after_bind(); });
}

void Server::set_model(std::unique_ptr<ServedModel> m) {
  std::lock_guard lk(impl_->mu);
  impl_->model = std::move(m);
  impl_->scheduler = std::make_unique<Scheduler>(make_runner(*impl_->model->backend, impl_->opts.max_batch, impl_->opts.kv_grow),
                                                 impl_->opts.queue);
  impl_->ready = true;
}

void Server::request_shutdown(bool cancel_running) {
  {
    std::lock_guard lk(impl_->mu);
    impl_->draining = true;
    impl_->cancel_running = impl_->cancel_running || cancel_running;
    if (impl_->scheduler) impl_->scheduler->drain(impl_->cancel_running);
  }
  impl_->cv.notify_all();
}

bool Server::shutdown_requested() const { return impl_->draining; }

SchedulerStats Server::wait() {
  Impl& s = *impl_;
  {
    std::unique_lock lk(s.mu);
    s.cv.wait(lk, [&] { return s.draining.load(); });
  }
  if (s.scheduler) s.scheduler->wait_idle();
  {
    // Replies still being written: their last events are queued already.
    std::unique_lock lk(s.mu);
    s.cv.wait_for(lk, std::chrono::seconds(30), [&] { return s.in_flight == 0; });
  }
  s.http.stop();
  if (s.listener.joinable()) s.listener.join();
  SchedulerStats stats = s.scheduler ? s.scheduler->stats() : SchedulerStats{};
  s.scheduler.reset();
  return stats;
}

void block_shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that left must not end the server
}

int wait_shutdown_signal(std::chrono::milliseconds timeout) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  timespec ts{time_t(timeout.count() / 1000), long(timeout.count() % 1000) * 1000000L};
  int sig = sigtimedwait(&set, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

}  // namespace keel::serve
