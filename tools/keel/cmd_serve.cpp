// `keel serve`: an OpenAI- and Ollama-compatible HTTP server for one model
// (src/serve). This file only reads the flags, loads the model, tokenizer and
// backend as `keel generate` does, and runs the server until SIGINT/SIGTERM.
// It listens before the model is loaded (503 until then); with --max-batch
// requests are batched continuously (docs/serving.md).
#include <cstdio>

#include "cli_common.h"
#include "core/error.h"
#include "model_source.h"

#if KEEL_SERVE_AVAILABLE
#include <algorithm>
#include <atomic>
#include <csignal>
#include <ctime>
#include <thread>

#include "core/dtype.h"
#include "core/mapped_file.h"

#include "serve/server.h"
#endif

namespace keel::cli {

namespace {
struct ServeArgs {
  std::string model, name;
  std::string host = "127.0.0.1";
  int port = 8080;
  int max_batch = 1;
  int kv_grow = 256;  // serve::BatchRunner::kDefaultGrowTokens (its header is in KEEL_SERVE_AVAILABLE builds only)
  size_t queue = 64;
  size_t max_body = size_t(8) << 20;
  std::string api_key;
  BackendOptions backend;
};

#if KEEL_SERVE_AVAILABLE
/// The name clients put in "model": --name, else the folder's or file's name.
std::string served_name(const ServeArgs& a) {
  if (!a.name.empty()) return a.name;
  std::string p = a.model;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  std::string base = p.substr(p.find_last_of('/') == std::string::npos ? 0 : p.find_last_of('/') + 1);
  if (base.size() > 5 && base.substr(base.size() - 5) == ".gguf") base.resize(base.size() - 5);
  return base.empty() ? std::string("keel") : base;
}

std::unique_ptr<serve::ServedModel> load_served(const ServeArgs& a, std::unique_ptr<model::Model>& keep) {
  auto sm = std::make_unique<serve::ServedModel>();
  sm->tokenizer = try_load_tokenizer(a.model);
  if (!sm->tokenizer) fail("serve needs a tokenizer (tokenizer.json or vocab.json + merges.txt) in ", a.model);
  keep = std::make_unique<model::Model>(model::Model::load(a.model, gguf_dtype(a.backend.backend)));
  const model::Model& m = *keep;
  check_tokenizer_fits_model(*sm->tokenizer, m, a.model);
  BackendOptions bo = a.backend;
  bo.batch = a.max_batch;  // cpu, cuda: a Program of --max-batch sequences (BatchRunner)
  sm->backend = make_backend(m, bo);
  sm->eos_ids = eos_ids(m, sm->tokenizer.get());
  sm->generation = m.generation;
  sm->vocab = m.config.vocab;
  serve::ModelCard& c = sm->card;
  c.name = served_name(a);
  c.family = m.config.model_type;
  c.format = is_regular_file(a.model) ? "gguf" : "safetensors";
  c.quantization = m.gguf_quantization.empty() ? std::string(dtype_name(m.weight_dtype))
                                               : m.gguf_quantization.substr(0, m.gguf_quantization.find(' '));
  c.parameters = m.config.param_count();
  c.context_length = sm->backend->max_context();
  c.size_bytes = int64_t(m.weights.total_bytes());
  c.created = int64_t(std::time(nullptr));
  return sm;
}

int run_serve(const ServeArgs& a) {
  serve::block_shutdown_signals();  // before any thread starts
  serve::ServerOptions o;
  o.host = a.host;
  o.port = a.port;
  o.queue = a.queue;
  o.max_batch = a.max_batch;
  o.kv_grow = a.kv_grow;
  o.api_key = a.api_key;
  o.max_body_bytes = a.max_body;
  std::unique_ptr<model::Model> model;  // outlives the server and its backend
  serve::Server server(o);
  const int port = server.bind();
  server.start();
  std::fprintf(stderr, "keel serve: listening on http://%s:%d (503 until the model is loaded)\n", a.host.c_str(), port);
  // The signal thread: the first SIGINT/SIGTERM drains (running requests
  // finish), a second cancels the running requests too.
  std::atomic<bool> done{false};
  std::thread signals([&] {
    int n = 0;
    while (!done) {
      int sig = serve::wait_shutdown_signal(std::chrono::milliseconds(200));
      if (!sig) continue;
      std::fprintf(stderr, "keel serve: %s: %s\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
                   n++ ? "cancelling the running requests" : "finishing the running requests, then exiting (again to cancel them)");
      server.request_shutdown(n > 1);
    }
  });
  auto stop_signals = [&] {
    done = true;
    signals.join();
  };
  try {
    auto served = load_served(a, model);
    const serve::ServedModel& sm = *served;
    const int batch = std::min(a.max_batch, sm.backend->max_batch());
    if (a.max_batch > 1 && batch == 1)
      std::fprintf(stderr, "keel serve: --max-batch %d: the %s backend runs one sequence at a time (cpu and cuda run "
                   "batches); serving one request at a time\n", a.max_batch, std::string(sm.backend->name()).c_str());
    std::string programs;
    for (const engine::Backend::DecodeProgram& d : sm.backend->decode_programs())
      programs += (programs.empty() ? "" : ", ") + std::to_string(d.batch) + " x " + std::to_string(d.context);
    const std::string runs = batch > 1 ? "up to " + std::to_string(batch) + " requests per batch (requests join "
                                         "and leave between steps)"
                                       : std::string("one request at a time");
    std::fprintf(stderr, "keel serve: serving '%s' (%s backend, context %lld tokens, chat: %s) on http://%s:%d; "
                 "%s, %zu may wait; decode Programs (sequences x positions, the first that holds a launch runs "
                 "it): %s\n",
                 sm.card.name.c_str(), std::string(sm.backend->name()).c_str(), (long long)sm.backend->max_context(),
                 sm.tokenizer->has_chat_template() ? "the checkpoint's template"
                 : sm.tokenizer->chat_format() != tokenizer::ChatFormat::None ? "built-in format" : "none (plain)",
                 a.host.c_str(), port, runs.c_str(), a.queue, programs.c_str());
    server.set_model(std::move(served));
  } catch (...) {
    server.request_shutdown(true);
    server.wait();
    stop_signals();
    throw;
  }
  serve::SchedulerStats s = server.wait();
  stop_signals();
  std::fprintf(stderr, "keel serve: stopped (%lld completed, %lld cancelled, %lld failed, %lld refused with 429)\n",
               (long long)s.completed, (long long)s.cancelled, (long long)s.failed, (long long)s.rejected);
  return 0;
}
#endif
}  // namespace

Command register_serve(CLI::App& root) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* c = root.add_subcommand("serve", "Serve the model over HTTP: OpenAI (/v1/...) and Ollama (/api/...) APIs");
  c->add_option("--model", a->model, "Checkpoint folder (config.json, *.safetensors, tokenizer), GGUF file, or ollama:NAME[:TAG]")->required()->transform(model_source());
  c->add_option("--name", a->name, "Model name clients send in \"model\" (default: the folder's or file's name)");
  c->add_option("--host", a->host, "Address to listen on (0.0.0.0: every interface; mind --api-key)")->capture_default_str();
  c->add_option("--port", a->port, "TCP port (0: any free port, printed on stderr)")->check(CLI::Range(0, 65535))->capture_default_str();
  c->add_option("--queue", a->queue, "Requests that may wait beyond the running ones; more get 429")->check(CLI::Range(size_t(1), size_t(1024)))->capture_default_str();
  c->add_option("--max-batch", a->max_batch, "Requests run together as one batch (cpu and cuda backends; the others "
                "run one at a time); requests join a running batch between steps as slots come free")->check(CLI::Range(1, 4096))->capture_default_str();
  c->add_option("--kv-grow", a->kv_grow, "When a batch's prompts and max_tokens do not fit the KV cache together "
                "(--kv-tokens): each request leases its prompt and this many more tokens' pages at a time, so more "
                "run at once (0: prompt and max_tokens up front)")->check(CLI::Range(0, 1 << 30))->capture_default_str();
  c->add_option("--max-body", a->max_body, "Largest request body in bytes; larger get 413")->check(CLI::Range(size_t(1024), size_t(1) << 32))->capture_default_str();
  c->add_option("--api-key", a->api_key, "Require \"Authorization: Bearer KEY\" on every route but /health");
  add_backend_flags(*c, a->backend);
  return {c, [a] {
#if KEEL_SERVE_AVAILABLE
            return run_serve(*a);
#else
            fail("serve: this keel was built without the HTTP server (it needs Debian's libcpp-httplib-dev, which "
                 "scripts/setup.sh installs, and is left out of KEEL_STATIC builds)");
            return 1;
#endif
          }};
}

}  // namespace keel::cli
