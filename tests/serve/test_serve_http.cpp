// keel serve over HTTP on a scripted backend (no model): 503 while loading in
// each API's error shape, 429 when the queue is full, and a shutdown that lets
// the running and queued-before-it requests finish.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "serve/scripted_backend.h"
#include "serve/server.h"

namespace keel::serve {
namespace {

using nlohmann::json;

TEST(ServeHttp, LoadingThenQueueFullThenShutdown) {
  ServerOptions o;
  o.port = 0;
  o.queue = 1;
  Server server(o);
  const int port = server.bind();
  server.start();
  httplib::Client c("127.0.0.1", port);
  auto r = c.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(json::parse(r->body)["status"], "loading");
  r = c.Post("/v1/completions", R"({"prompt": "x"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "loading");
  r = c.Post("/api/generate", R"({"prompt": "x"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_TRUE(json::parse(r->body)["error"].is_string());  // Ollama's shape

  // 100 tokens x 5 ms: each request runs for about half a second.
  auto m = std::make_unique<ServedModel>();
  m->backend = std::make_unique<ScriptedBackend>(1000, std::chrono::milliseconds(5));
  m->tokenizer = std::make_unique<tokenizer::Tokenizer>(
      tokenizer::Tokenizer::load(std::string(KEEL_SHARED_DIR) + "/models/stories260K"));
  m->vocab = 512;
  m->card.name = "scripted";
  server.set_model(std::move(m));
  const std::string body = R"({"prompt": "Once", "max_tokens": 100})";
  int status[2] = {0, 0};
  json replies[2];
  std::vector<std::thread> clients;
  json h;
  auto wait_for = [&](const char* key, int value) {
    for (int tries = 0; tries < 5000; ++tries) {
      h = json::parse(c.Get("/health")->body);
      if (h[key] == value) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  // One request runs, then one waits: the queue (1) is full.
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      httplib::Client ci("127.0.0.1", port);
      ci.set_read_timeout(30, 0);
      auto ri = ci.Post("/v1/completions", body, "application/json");
      if (!ri) return;
      status[i] = ri->status;
      replies[i] = json::parse(ri->body);
    });
    wait_for(i == 0 ? "running" : "queued", 1);
  }
  r = c.Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << h.dump();
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "queue_full");
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "rate_limit_error");
  for (auto& t : clients) t.join();
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(status[i], 200) << replies[i].dump();
    EXPECT_EQ(replies[i]["usage"]["completion_tokens"], 100);
  }
  server.request_shutdown(false);
  SchedulerStats s = server.wait();
  EXPECT_EQ(s.completed, 2);
  EXPECT_EQ(s.rejected, 1);
}

}  // namespace
}  // namespace keel::serve
