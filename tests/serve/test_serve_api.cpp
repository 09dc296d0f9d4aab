// keel serve without HTTP: request parsing and validation (each bad field a
// 400 naming it), the error and reply shapes of both APIs, the scheduler
// (queue bound, cancellation, draining) on a scripted backend, and requests ->
// jobs on stories260K (prompt rendering, the context bound).
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <iostream>
#include <thread>

#include "common/variant_model.h"
#include "engine/backends.h"
#include "engine/program_backend.h"
#include "model/model.h"
#include "serve/api.h"
#include "serve/replies.h"
#include "serve/scheduler.h"
#include "serve/served_model.h"
#include "serve/scripted_backend.h"

namespace keel::serve {
namespace {

using nlohmann::json;

/// The HttpError `f` throws (a failure when it throws none).
template <class F>
HttpError error_of(F f) {
  try {
    f();
  } catch (const HttpError& e) {
    return e;
  }
  ADD_FAILURE() << "no HttpError thrown";
  return HttpError(0, "");
}

TEST(ServeApi, ParseBodyRefusesMalformedJsonAndNonObjects) {
  for (const char* body : {"{bad", "", "[1, 2]", "\"text\"", "3"}) {
    HttpError e = error_of([&] { parse_body(body); });
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.code, "invalid_json") << body;
  }
  EXPECT_TRUE(parse_body("{\"a\": 1}").is_object());
}

TEST(ServeApi, OpenAICompletionDefaultsAndFields) {
  Request r = parse_openai_completion(json{{"model", "m"}, {"prompt", "hi"}});
  EXPECT_EQ(r.kind, Kind::Completion);
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_EQ(r.max_tokens, 16);  // OpenAI's default for completions
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.sampling.temperature, -1);  // not given: generation_config decides
  r = parse_openai_completion(json{{"prompt", json::array({1, 2, 3})}, {"max_tokens", 7}, {"temperature", 0.5},
                                   {"top_p", 0.9}, {"top_k", -1}, {"min_p", 0.1}, {"seed", 42}, {"stop", "\n"},
                                   {"stream", true}, {"stream_options", {{"include_usage", true}}}, {"n", 1}});
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_DOUBLE_EQ(r.sampling.temperature, 0.5);
  EXPECT_DOUBLE_EQ(r.sampling.top_p, 0.9);
  EXPECT_EQ(r.sampling.top_k, 0);  // -1 means off, as in vLLM
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n"});
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_FALSE(r.ignore_eos);
  EXPECT_TRUE(parse_openai_completion(json{{"prompt", "x"}, {"ignore_eos", true}}).ignore_eos);
  // A list holding one prompt is that prompt.
  EXPECT_EQ(parse_openai_completion(json{{"prompt", json::array({"one"})}}).prompt, "one");
}

TEST(ServeApi, OpenAIBadFieldsAre400NamingTheField) {
  struct Case {
    json body;
    std::string param;
  } cases[] = {
      {{{"prompt", "x"}, {"max_tokens", "ten"}}, "max_tokens"},
      {{{"prompt", "x"}, {"max_tokens", 0}}, "max_tokens"},
      {{{"prompt", "x"}, {"max_tokens", 1.5}}, "max_tokens"},
      {{{"prompt", "x"}, {"temperature", 3}}, "temperature"},
      {{{"prompt", "x"}, {"temperature", "hot"}}, "temperature"},
      {{{"prompt", "x"}, {"top_p", 0}}, "top_p"},
      {{{"prompt", "x"}, {"min_p", 2}}, "min_p"},
      {{{"prompt", "x"}, {"n", 2}}, "n"},
      {{{"prompt", "x"}, {"logprobs", 5}}, "logprobs"},  // top alternatives: not computed
      {{{"prompt", "x"}, {"logprobs", true}}, "logprobs"},
      {{{"prompt", "x"}, {"echo", true}}, "echo"},
      {{{"prompt", "x"}, {"stop", json::array({"a", 3})}}, "stop"},
      {{{"prompt", "x"}, {"stop", ""}}, "stop"},
      {{{"prompt", "x"}, {"stream", "yes"}}, "stream"},
      {{{"prompt", "x"}, {"presence_penalty", 0.5}}, "presence_penalty"},
      {{{"prompt", "x"}, {"model", 3}}, "model"},
      {{{"prompt", ""}}, "prompt"},
      {{{"prompt", json::array({1, -2})}}, "prompt"},
      {{{"prompt", json::array({"a", "b"})}}, "prompt"},
      {{{"max_tokens", 3}}, "prompt"},
  };
  for (const Case& c : cases) {
    HttpError e = error_of([&] { parse_openai_completion(c.body); });
    EXPECT_EQ(e.status, 400) << c.body.dump();
    EXPECT_EQ(e.param, c.param) << c.body.dump() << ": " << e.what();
    EXPECT_EQ(e.type, "invalid_request_error");
  }
  // Many stop strings: more than kMaxStops is refused.
  json many = json::array();
  for (size_t i = 0; i <= kMaxStops; ++i) many.push_back(std::to_string(i));
  EXPECT_EQ(error_of([&] { parse_openai_completion(json{{"prompt", "x"}, {"stop", many}}); }).param, "stop");
}

TEST(ServeApi, OpenAIChatMessages) {
  Request r = parse_openai_chat(json::parse(R"({"messages": [
      {"role": "developer", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]},
      {"role": "assistant", "content": "hi"}], "max_completion_tokens": 9, "logprobs": false})"));
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].role, "system");  // developer is OpenAI's newer name for it
  EXPECT_EQ(r.messages[1].content, "hello");
  EXPECT_EQ(r.max_tokens, 9);
  EXPECT_EQ(error_of([] { parse_openai_chat(json{{"messages", json::array()}}); }).param, "messages");
  EXPECT_EQ(error_of([] { parse_openai_chat(json::parse(R"({"messages": [{"role": "tool", "content": "x"}]})")); }).param,
            "messages[0].role");
  EXPECT_EQ(error_of([] { parse_openai_chat(json::parse(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})")); })
                .param,
            "messages[0].content");
  EXPECT_EQ(error_of([] { parse_openai_chat(json::parse(R"({"messages": [{"role": "user", "content": "x"}], "tools": [{}]})")); })
                .param,
            "tools");
  // The sampled tokens' log-probabilities, not the top alternatives.
  EXPECT_TRUE(parse_openai_chat(json::parse(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
                                                "top_logprobs": 0})")).logprobs);
  EXPECT_FALSE(r.logprobs);
  EXPECT_EQ(error_of([] { parse_openai_chat(json::parse(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
                                                            "top_logprobs": 2})")); }).param,
            "top_logprobs");
  EXPECT_EQ(error_of([] { parse_openai_chat(json::parse(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 0})")); })
                .param,
            "top_logprobs");
  EXPECT_TRUE(parse_openai_completion(json{{"prompt", "x"}, {"logprobs", 0}}).logprobs);
  EXPECT_FALSE(parse_openai_completion(json{{"prompt", "x"}, {"logprobs", nullptr}}).logprobs);
}

TEST(ServeApi, OllamaDefaultsAndOptions) {
  Request r = parse_ollama_generate(json{{"model", "m"}, {"prompt", "hi"}});
  EXPECT_EQ(r.api, Api::Ollama);
  EXPECT_TRUE(r.stream);           // Ollama streams unless told not to
  EXPECT_EQ(r.max_tokens, -1);     // until EOS or the context ends
  r = parse_ollama_chat(json::parse(R"({"messages": [{"role": "user", "content": "x"}], "stream": false,
      "options": {"num_predict": 5, "temperature": 0, "top_k": 3, "repeat_penalty": 1.1, "seed": 9, "stop": ["a"], "num_ctx": 4096}})"));
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.max_tokens, 5);
  EXPECT_EQ(r.sampling.temperature, 0);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_DOUBLE_EQ(r.sampling.repetition_penalty, 1.1);
  EXPECT_EQ(r.stop, std::vector<std::string>{"a"});
  EXPECT_EQ(parse_ollama_generate(json{{"prompt", "x"}, {"options", {{"num_predict", -2}}}}).max_tokens, -1);
  EXPECT_EQ(error_of([] { parse_ollama_generate(json{{"prompt", "x"}, {"options", {{"num_predict", 0}}}}); }).param, "num_predict");
  EXPECT_EQ(error_of([] { parse_ollama_generate(json{{"prompt", "x"}, {"format", "json"}}); }).param, "format");
  EXPECT_EQ(error_of([] { parse_ollama_generate(json{{"prompt", "x"}, {"options", 3}}); }).param, "options");
  // Empty prompt / message list: Ollama's "load the model" requests parse.
  EXPECT_TRUE(parse_ollama_generate(json{{"model", "m"}}).prompt.empty());
  EXPECT_TRUE(parse_ollama_chat(json{{"model", "m"}, {"messages", json::array()}}).messages.empty());
}

TEST(ServeApi, ErrorShapes) {
  HttpError e(400, "bad max_tokens", "max_tokens", "invalid_value");
  json o = error_json(Api::OpenAI, e);
  EXPECT_EQ(o, json::parse(R"({"error": {"message": "bad max_tokens", "type": "invalid_request_error",
                                         "param": "max_tokens", "code": "invalid_value"}})"));
  EXPECT_EQ(error_json(Api::OpenAI, HttpError(401, "key"))["error"]["param"], nullptr);
  EXPECT_EQ(error_json(Api::OpenAI, HttpError(401, "key"))["error"]["type"], "authentication_error");
  EXPECT_EQ(error_json(Api::OpenAI, HttpError(429, "full"))["error"]["type"], "rate_limit_error");
  EXPECT_EQ(error_json(Api::OpenAI, HttpError(404, "no"))["error"]["type"], "not_found_error");
  EXPECT_EQ(error_json(Api::Ollama, e), json::parse(R"({"error": "bad max_tokens"})"));
  EXPECT_TRUE(model_matches("", "m"));
  EXPECT_TRUE(model_matches("m:latest", "m"));
  EXPECT_FALSE(model_matches("gpt-4", "m"));
}

TEST(ServeApi, ReplyShapes) {
  ReplyContext c{Api::OpenAI, Kind::Chat, "chatcmpl-1", "m", 100, true};
  Outcome o{"length", "hello", 3, 2, 0, 1, 2, 1, {}};
  json full = full_reply(c, o);
  EXPECT_EQ(full["object"], "chat.completion");
  EXPECT_EQ(full["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(full["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(full["usage"], json::parse(R"({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                                           "prompt_tokens_details": {"cached_tokens": 1}})"));
  EXPECT_EQ(stream_open(c).rfind("data: ", 0), 0u);
  std::string close = stream_close(c, o);
  EXPECT_NE(close.find("\"usage\""), std::string::npos);  // include_usage
  EXPECT_EQ(close.substr(close.size() - 14), "data: [DONE]\n\n");
  c = {Api::OpenAI, Kind::Completion, "cmpl-1", "m", 100, false};
  EXPECT_EQ(stream_open(c), "");
  json piece = json::parse(stream_piece(c, "hi").substr(6));
  EXPECT_EQ(piece["choices"][0]["text"], "hi");
  EXPECT_EQ(stream_close(c, o).find("\"usage\""), std::string::npos);
  c.api = Api::Ollama;
  json last = json::parse(stream_close(c, o));
  EXPECT_EQ(last["done"], true);
  EXPECT_EQ(last["done_reason"], "length");
  EXPECT_EQ(last["eval_count"], 2);
  EXPECT_EQ(last["prompt_eval_count"], 3);
  EXPECT_EQ(last["eval_duration"], 2000000);  // 2 ms in ns
  EXPECT_EQ(json::parse(stream_piece(c, "x"))["response"], "x");
  // Output bytes that are not UTF-8 never break the JSON.
  EXPECT_NO_THROW(json::parse(stream_piece(c, std::string("\xff\xfe"))));
  // Log-probabilities of the sampled tokens: OpenAI's shapes, in pieces and whole replies; null when not asked.
  const std::vector<TokenLogprob> lps = {{"he", -0.25f, 0}, {"llo", -1.5f, 2}};
  c = {Api::OpenAI, Kind::Completion, "cmpl-1", "m", 100, false, true};
  json p = json::parse(stream_piece(c, "hello", lps).substr(6))["choices"][0]["logprobs"];
  EXPECT_EQ(p, json::parse(R"({"tokens": ["he", "llo"], "token_logprobs": [-0.25, -1.5],
                               "top_logprobs": [{"he": -0.25}, {"llo": -1.5}], "text_offset": [0, 2]})"));
  Outcome ol = o;
  ol.logprobs = lps;
  EXPECT_EQ(full_reply(c, ol)["choices"][0]["logprobs"], p);
  c.kind = Kind::Chat;
  p = json::parse(stream_piece(c, "hello", lps).substr(6))["choices"][0]["logprobs"];
  EXPECT_EQ(p["content"][1], json::parse(R"({"token": "llo", "logprob": -1.5, "bytes": [108, 108, 111],
                                              "top_logprobs": []})"));
  EXPECT_EQ(full_reply(c, ol)["choices"][0]["logprobs"], p);
  c.logprobs = false;
  EXPECT_TRUE(full_reply(c, ol)["choices"][0]["logprobs"].is_null());
  // Ollama: the entries OpenAI chat has, as "logprobs" of each object.
  c = {Api::Ollama, Kind::Completion, "x", "m", 100, false, true};
  EXPECT_EQ(json::parse(stream_piece(c, "hello", lps))["logprobs"], p["content"]);
  EXPECT_EQ(full_reply(c, ol)["logprobs"], p["content"]);
  c.logprobs = false;
  EXPECT_FALSE(full_reply(c, ol).contains("logprobs"));
  EXPECT_TRUE(parse_ollama_chat(json::parse(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})")).logprobs);
  EXPECT_EQ(error_of([] { parse_ollama_generate(json::parse(R"({"prompt": "x", "logprobs": true, "top_logprobs": 3})")); })
                .param,
            "top_logprobs");
}

const tokenizer::Tokenizer& stories_tokenizer() {
  static tokenizer::Tokenizer t = tokenizer::Tokenizer::load(std::string(KEEL_SHARED_DIR) + "/models/stories260K");
  return t;
}

std::shared_ptr<Job> scripted_job(int max_tokens) {
  engine::GenerateRequest g;
  g.prompt = {1};
  g.max_tokens = max_tokens;
  return std::make_shared<Job>(g, std::make_unique<engine::TextStream>(stories_tokenizer(), std::vector<std::string>{}));
}

/// Reads a job's events to its end; returns the last.
Event last_event(Job& j) {
  Event e;
  while (!j.next(e, std::chrono::seconds(30)) || e.type == Event::Type::Text) {
  }
  return e;
}

TEST(ServeScheduler, RunsJobsInOrderAndBoundsTheQueue) {
  ScriptedBackend backend(5, std::chrono::milliseconds(20));
  Scheduler s(std::make_unique<SerialRunner>(backend), 2);
  auto a = scripted_job(5), b = scripted_job(5), c = scripted_job(5), d = scripted_job(5);
  ASSERT_EQ(s.submit(a), Scheduler::Admit::Queued);
  // Wait until a runs, so b and c fill the queue of 2 and d is refused.
  while (s.stats().running == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(s.submit(b), Scheduler::Admit::Queued);
  EXPECT_EQ(s.submit(c), Scheduler::Admit::Queued);
  EXPECT_EQ(s.submit(d), Scheduler::Admit::Full);
  for (auto* j : {&a, &b, &c}) {
    Event e = last_event(**j);
    ASSERT_EQ(e.type, Event::Type::Done);
    EXPECT_EQ(e.outcome.completion_tokens, 5);
    EXPECT_EQ(e.outcome.finish_reason, "length");
  }
  s.wait_idle();
  SchedulerStats st = s.stats();
  EXPECT_EQ(st.completed, 3);
  EXPECT_EQ(st.rejected, 1);
  EXPECT_EQ(st.slots, 1);
}

TEST(ServeScheduler, CancelledJobStopsAndTheNextRuns) {
  // 1000 tokens x 5 ms would take 5 s; cancelled after its first token the
  // job must end at once and the next job run.
  ScriptedBackend backend(1000, std::chrono::milliseconds(5));
  Scheduler s(std::make_unique<SerialRunner>(backend), 4);
  auto slow = scripted_job(1000), next = scripted_job(3), gone = scripted_job(3);
  ASSERT_EQ(s.submit(slow), Scheduler::Admit::Queued);
  ASSERT_EQ(s.submit(gone), Scheduler::Admit::Queued);
  ASSERT_EQ(s.submit(next), Scheduler::Admit::Queued);
  gone->cancel();  // left while it waited: never runs
  Event e;
  ASSERT_TRUE(slow->next(e, std::chrono::seconds(30)));
  auto t0 = std::chrono::steady_clock::now();
  slow->cancel();
  Event end = last_event(*slow);
  EXPECT_EQ(end.outcome.finish_reason, "cancelled");
  EXPECT_LT(end.outcome.completion_tokens, 1000);
  EXPECT_EQ(last_event(*next).type, Event::Type::Done);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));  // far below the 5 s uncancelled
  EXPECT_EQ(last_event(*gone).type, Event::Type::Error);
  s.wait_idle();
  EXPECT_EQ(backend.calls, 2);  // slow and next; the job that left never ran
  EXPECT_EQ(s.stats().cancelled, 2);
  EXPECT_EQ(s.stats().completed, 1);
}

TEST(ServeScheduler, DrainFailsQueuedJobsAndFinishesTheRunningOne) {
  ScriptedBackend backend(20, std::chrono::milliseconds(5));
  Scheduler s(std::make_unique<SerialRunner>(backend), 4);
  auto running = scripted_job(20), queued = scripted_job(20);
  ASSERT_EQ(s.submit(running), Scheduler::Admit::Queued);
  while (s.stats().running == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(s.submit(queued), Scheduler::Admit::Queued);
  s.drain(false);
  EXPECT_EQ(s.submit(scripted_job(1)), Scheduler::Admit::Draining);
  Event q = last_event(*queued);
  EXPECT_EQ(q.type, Event::Type::Error);
  EXPECT_EQ(q.status, 503);
  Event r = last_event(*running);
  ASSERT_EQ(r.type, Event::Type::Done);
  EXPECT_EQ(r.outcome.completion_tokens, 20);  // finished, not cut
  s.wait_idle();
}

TEST(ServeJobs, PromptsAndTheContextBound) {
  ServedModel m;
  model::Model weights = model::Model::load(std::string(KEEL_SHARED_DIR) + "/models/stories260K");
  engine::BackendConfig cfg;
  cfg.max_context = 64;
  m.backend = engine::make_backend("reference", weights, cfg);
  m.tokenizer = std::make_unique<tokenizer::Tokenizer>(
      tokenizer::Tokenizer::load(std::string(KEEL_SHARED_DIR) + "/models/stories260K"));
  m.vocab = weights.config.vocab;
  m.eos_ids = {2};
  Request r = parse_openai_completion(json{{"prompt", "Once upon a time"}});
  EXPECT_EQ(prompt_tokens(r, m), (std::vector<int32_t>{1, 403, 407, 261, 378}));  // BOS + text, as keel generate
  // No chat format in this checkpoint: the contents, with BOS (as keel chat).
  r = parse_openai_chat(json::parse(R"({"messages": [{"role": "user", "content": "Once upon a time"}]})"));
  EXPECT_EQ(prompt_tokens(r, m), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  auto job = make_job(r, m);
  EXPECT_EQ(job->request().max_tokens, 64 - 5);  // no max_tokens: the room left in the context
  // Ids outside the vocabulary, and prompts that leave no room, are 400s.
  r = parse_openai_completion(json{{"prompt", json::array({1, 512})}});
  EXPECT_EQ(error_of([&] { prompt_tokens(r, m); }).param, "prompt");
  r = parse_openai_completion(json{{"prompt", std::vector<int>(64, 300)}});
  HttpError e = error_of([&] { prompt_tokens(r, m); });
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.code, "context_length_exceeded");
  r = parse_openai_completion(json{{"prompt", std::vector<int>(63, 300)}, {"max_tokens", 100}});
  EXPECT_EQ(make_job(r, m)->request().max_tokens, 1);  // capped by the context
  // Sampling the sampler refuses is a 400 too (temperature below the minimum).
  r = parse_openai_completion(json{{"prompt", "x"}, {"temperature", 1e-5}});
  EXPECT_EQ(error_of([&] { make_job(r, m); }).status, 400);
}

/// stories260K served on the cpu backend (`cfg`), with a batch-1 twin to run
/// each request alone.
struct StoriesServed {
  model::Model weights = model::Model::load(std::string(KEEL_SHARED_DIR) + "/models/stories260K");
  ServedModel m;
  std::unique_ptr<engine::Backend> alone;
  explicit StoriesServed(const engine::BackendConfig& cfg) {
    m.tokenizer = std::make_unique<tokenizer::Tokenizer>(
        tokenizer::Tokenizer::load(std::string(KEEL_SHARED_DIR) + "/models/stories260K"));
    m.vocab = weights.config.vocab;
    m.eos_ids = {2};
    m.backend = engine::make_backend("cpu", weights, cfg);
    engine::BackendConfig one = cfg;
    one.batch = 1;
    alone = engine::make_backend("cpu", weights, one);
  }
  std::shared_ptr<Job> request(const json& body) { return make_job(parse_openai_completion(body), m); }
  /// What each request gets alone (the serial runner on the batch-1 twin).
  std::vector<Outcome> each_alone(const std::vector<json>& bodies) {
    std::vector<Outcome> out;
    Scheduler serial(make_runner(*alone, 4), 8);
    for (const json& b : bodies) {
      auto j = request(b);
      EXPECT_EQ(serial.submit(j), Scheduler::Admit::Queued);
      const Event e = last_event(*j);
      EXPECT_EQ(e.type, Event::Type::Done) << e.text;
      out.push_back(e.outcome);
    }
    return out;
  }
};

TEST(ServeScheduler, BatchRunnerServesWaitingRequestsTogether) {
  // The cpu backend with a Program of 4 sequences: four requests submitted at
  // once run as one batch, each getting what it gets alone (greedy and a
  // seeded sample); a stop string and a client that leaves end their own job
  // without stopping the others.
  engine::BackendConfig cfg;
  cfg.max_context = 96;
  cfg.batch = 4;
  StoriesServed st(cfg);
  ServedModel& m = st.m;
  ASSERT_EQ(m.backend->max_batch(), 4);
  auto& alone_backend = st.alone;
  auto request = [&](const json& body) { return st.request(body); };
  const std::vector<json> bodies = {
      json{{"prompt", "Once upon a time"}, {"max_tokens", 24}, {"temperature", 0}},
      json{{"prompt", "Lily saw a"}, {"max_tokens", 16}, {"temperature", 0.8}, {"seed", 7}},
      json{{"prompt", "Once upon a time"}, {"max_tokens", 40}, {"temperature", 0}, {"stop", "girl"}},
      json{{"prompt", "The dog"}, {"max_tokens", 60}, {"temperature", 0}}};
  // Each alone (serial runner on a batch-1 backend).
  std::vector<Outcome> alone;
  {
    Scheduler serial(make_runner(*alone_backend, 4), 8);
    EXPECT_EQ(serial.stats().slots, 1);
    for (const json& b : bodies) {
      auto j = request(b);
      ASSERT_EQ(serial.submit(j), Scheduler::Admit::Queued);
      Event e = last_event(*j);
      ASSERT_EQ(e.type, Event::Type::Done) << e.text;
      alone.push_back(e.outcome);
    }
  }
  EXPECT_EQ(alone[2].finish_reason, "stop");  // the stop string cut it
  Scheduler s(make_runner(*m.backend, 8), 8);
  EXPECT_EQ(s.stats().slots, 4);  // the backend's batch bounds --max-batch
  std::vector<std::shared_ptr<Job>> jobs;
  for (const json& b : bodies) jobs.push_back(request(b));
  auto leaves = request(json{{"prompt", "Once"}, {"max_tokens", 80}, {"temperature", 0}});
  // Submitted while nothing runs: the first starts a batch alone, so hold the
  // runner with a first batch and queue the rest behind it.
  ASSERT_EQ(s.submit(leaves), Scheduler::Admit::Queued);
  for (auto& j : jobs) ASSERT_EQ(s.submit(j), Scheduler::Admit::Queued);
  Event first;
  ASSERT_TRUE(leaves->next(first, std::chrono::seconds(30)));
  leaves->cancel();
  EXPECT_EQ(last_event(*leaves).outcome.finish_reason, "cancelled");
  for (size_t i = 0; i < jobs.size(); ++i) {
    Event e = last_event(*jobs[i]);
    ASSERT_EQ(e.type, Event::Type::Done) << i << ": " << e.text;
    EXPECT_EQ(e.outcome.text, alone[i].text) << "request " << i;
    EXPECT_EQ(e.outcome.finish_reason, alone[i].finish_reason) << "request " << i;
    EXPECT_EQ(e.outcome.completion_tokens, alone[i].completion_tokens) << "request " << i;
  }
  s.wait_idle();
  EXPECT_EQ(s.stats().completed, 4);
  EXPECT_EQ(s.stats().cancelled, 1);
}

// A backend that takes 2 ms over every token (the tokens of stories260K come
// too fast to watch a batch change otherwise).
class SlowBackend : public engine::Backend {
 public:
  explicit SlowBackend(engine::Backend& inner) : inner_(inner) {}
  std::string_view name() const override { return inner_.name(); }
  int64_t max_context() const override { return inner_.max_context(); }
  int max_batch() const override { return inner_.max_batch(); }
  engine::GenerateResult generate(const engine::GenerateRequest& req, const engine::TokenCallback& cb) override {
    return inner_.generate(req, [&](int32_t t) { return slow() && cb(t); });
  }
  std::vector<engine::GenerateResult> generate_batch(std::span<const engine::GenerateRequest> reqs,
                                                     const engine::BatchTokenCallback& cb) override {
    return inner_.generate_batch(reqs, [&](int i, int32_t t) { return slow() && cb(i, t); });
  }
  std::vector<float> score(std::span<const int32_t> ids) override { return inner_.score(ids); }
  int64_t cached_prefix(std::span<const int32_t> prompt) const override { return inner_.cached_prefix(prompt); }

 private:
  static bool slow() {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return true;
  }
  engine::Backend& inner_;
};

// Continuous batching: a job submitted while a batch runs joins it between
// steps (the runner stops the launch and resumes the unfinished jobs beside
// it), so its text arrives long before the running job ends; a joiner's long
// prompt is prefilled beside the others' decoding (the mixed Program); every
// job still gets the text it gets alone, greedy and sampled (the resumed
// draws go on).
TEST(ServeScheduler, JobsJoinARunningBatch) {
  engine::BackendConfig cfg;
  cfg.max_context = 256;
  cfg.batch = 4;
  cfg.workers = 1;  // one order of the fp32 sums: the texts compare exactly
  cfg.prefill_chunk = 8;  // the long joiner is prefilled beside the others' decoding (a mixed Program)
  StoriesServed st(cfg);
  ServedModel& m = st.m;
  auto& alone_backend = st.alone;
  auto request = [&](const json& body) { return st.request(body); };
  const json long_body = {{"prompt", "Once upon a time"}, {"max_tokens", 200}, {"temperature", 0.9}, {"seed", 3},
                          {"ignore_eos", true}};
  const std::vector<json> joiners = {
      json{{"prompt", "The dog"}, {"max_tokens", 12}, {"temperature", 0}},
      json{{"prompt", "Lily saw a big red ball in the park. She ran to get it, but a small dog took it first. The "
                      "dog was"},
           {"max_tokens", 20}, {"temperature", 0.8}, {"seed", 7}}};
  std::vector<Outcome> alone;
  {
    Scheduler serial(make_runner(*alone_backend, 4), 8);
    for (const json& b : {long_body, joiners[0], joiners[1]}) {
      auto j = request(b);
      ASSERT_EQ(serial.submit(j), Scheduler::Admit::Queued);
      const Event e = last_event(*j);
      ASSERT_EQ(e.type, Event::Type::Done) << e.text;
      alone.push_back(e.outcome);
    }
  }
  SlowBackend slow(*m.backend);
  auto runner = std::make_unique<BatchRunner>(slow, 4);
  BatchRunner* batch = runner.get();
  Scheduler s(std::move(runner), 8);
  auto first = request(long_body);
  ASSERT_EQ(s.submit(first), Scheduler::Admit::Queued);
  Event e;
  ASSERT_TRUE(first->next(e, std::chrono::seconds(30)));  // it runs
  std::vector<std::shared_ptr<Job>> jobs;
  for (const json& b : joiners) {
    jobs.push_back(request(b));
    ASSERT_EQ(s.submit(jobs.back()), Scheduler::Admit::Queued);
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Event done = last_event(*jobs[i]);
    ASSERT_EQ(done.type, Event::Type::Done) << done.text;
    EXPECT_FALSE(first->ended()) << "joiner " << i << " waited for the running job";
    EXPECT_EQ(done.outcome.text, alone[1 + i].text) << "joiner " << i;
    EXPECT_EQ(done.outcome.completion_tokens, alone[1 + i].completion_tokens) << "joiner " << i;
  }
  const Event last = last_event(*first);
  ASSERT_EQ(last.type, Event::Type::Done) << last.text;
  EXPECT_EQ(last.outcome.text, alone[0].text);
  EXPECT_EQ(last.outcome.completion_tokens, 200);
  EXPECT_EQ(last.outcome.finish_reason, "length");
  EXPECT_GT(last.outcome.cached_tokens, -1);
  s.wait_idle();
  EXPECT_GE(batch->launches(), 2);
  EXPECT_EQ(s.stats().completed, 3);
}

// Log-probabilities through the scheduler (serial and batch runners): the
// Text events carry the tokens they release, the Done outcome every one, one
// per generated token; their texts make the reply's text at their offsets;
// the values are the backend's (GenerateResult::logprobs of the same request).
TEST(ServeScheduler, LogprobsGoWithTheirText) {
  engine::BackendConfig cfg;
  cfg.max_context = 128;
  cfg.batch = 2;
  cfg.workers = 1;
  StoriesServed st(cfg);
  const json body = {{"prompt", "Once upon a time"}, {"max_tokens", 24}, {"temperature", 0.7}, {"seed", 4},
                     {"logprobs", 0}, {"ignore_eos", true}};
  for (int batch : {1, 2}) {
    auto runner = batch == 1 ? std::unique_ptr<Runner>(std::make_unique<SerialRunner>(*st.m.backend))
                             : std::unique_ptr<Runner>(std::make_unique<BatchRunner>(*st.m.backend, 2));
    Scheduler s(std::move(runner), 4);
    auto job = st.request(body);
    ASSERT_EQ(s.submit(job), Scheduler::Admit::Queued);
    std::vector<TokenLogprob> streamed;
    std::string text;
    Event e;
    while (job->next(e, std::chrono::seconds(30)) && e.type == Event::Type::Text) {
      text += e.text;
      streamed.insert(streamed.end(), e.logprobs.begin(), e.logprobs.end());
    }
    ASSERT_EQ(e.type, Event::Type::Done) << e.text;
    const Outcome& o = e.outcome;
    EXPECT_EQ(o.text, text);
    ASSERT_EQ(int64_t(o.logprobs.size()), o.completion_tokens) << "batch " << batch;
    ASSERT_EQ(streamed.size(), o.logprobs.size());
    std::string joined;
    for (size_t i = 0; i < o.logprobs.size(); ++i) {
      EXPECT_EQ(o.logprobs[i].offset, int64_t(joined.size())) << i;
      joined += o.logprobs[i].token;
      EXPECT_LE(o.logprobs[i].logprob, 0.0f);
      EXPECT_EQ(streamed[i].logprob, o.logprobs[i].logprob);
    }
    EXPECT_EQ(joined, o.text);
    engine::GenerateRequest g = job->request();
    g.on_logprob = nullptr;
    const engine::GenerateResult want = st.alone->generate(g, nullptr);
    ASSERT_EQ(want.logprobs.size(), o.logprobs.size());
    for (size_t i = 0; i < want.logprobs.size(); ++i) EXPECT_NEAR(want.logprobs[i], o.logprobs[i].logprob, 1e-5) << i;
  }
}

// A KV cache smaller than the batch's contexts (--kv-tokens): the runner
// launches the jobs that fit it together and holds the rest until a launched
// one ends; every job gets its text.
TEST(ServeScheduler, JobsWaitForRoomInTheKvCache) {
  engine::BackendConfig cfg;
  cfg.max_context = 128;  // two pages of 64 a sequence
  cfg.batch = 4;
  cfg.workers = 1;
  cfg.kv_tokens = 256;  // four pages and one for idle lanes: two long jobs at once
  StoriesServed st(cfg);
  std::vector<json> bodies;
  for (int i = 0; i < 4; ++i)
    bodies.push_back(json{{"prompt", i % 2 ? "Once upon a time" : "The dog"}, {"max_tokens", 80 + i},
                          {"temperature", i < 2 ? 0.0 : 0.7}, {"seed", i}, {"ignore_eos", true}});
  const std::vector<Outcome> alone = st.each_alone(bodies);
  auto runner = std::make_unique<BatchRunner>(*st.m.backend, 4);
  BatchRunner* batch = runner.get();
  Scheduler s(std::move(runner), 8);
  std::vector<std::shared_ptr<Job>> jobs;
  for (const json& b : bodies) {
    jobs.push_back(st.request(b));
    ASSERT_EQ(s.submit(jobs.back()), Scheduler::Admit::Queued);
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Event e = last_event(*jobs[i]);
    ASSERT_EQ(e.type, Event::Type::Done) << e.text;
    EXPECT_EQ(e.outcome.text, alone[i].text) << "job " << i;
    EXPECT_EQ(e.outcome.completion_tokens, 80 + int64_t(i)) << "job " << i;
  }
  s.wait_idle();
  EXPECT_GE(batch->launches(), 2);  // four jobs of two pages do not fit five pages at once
  EXPECT_EQ(batch->peak_jobs(), 2);  // the default horizon (256 tokens) is their whole output: no gain
}

// Pages as the jobs grow (--kv-grow): in the cache above, jobs whose prompt
// and max_tokens take two pages each lease their prompt and the next 40
// tokens (one page) first, so all four start together; each stops the launch
// at its horizon, and the next launches lease on (the jobs that no longer
// fit wait, their K/V in the prefix cache or evicted and recomputed). Every
// job still gets its text alone; with --kv-grow 0 only two run at once.
TEST(ServeScheduler, JobsLeaseKvPagesAsTheyGrow) {
  engine::BackendConfig cfg;
  cfg.max_context = 128;  // two pages of 64 a sequence
  cfg.batch = 4;
  cfg.workers = 1;
  cfg.kv_tokens = 256;  // four pages and one for idle lanes
  StoriesServed st(cfg);
  std::vector<json> bodies;
  for (int i = 0; i < 4; ++i)
    bodies.push_back(json{{"prompt", i % 2 ? "Once upon a time" : "The dog"}, {"max_tokens", 70 + 3 * i},
                          {"temperature", i < 2 ? 0.0 : 0.7}, {"seed", i}, {"ignore_eos", true}});
  const std::vector<Outcome> alone = st.each_alone(bodies);
  for (const int grow : {40, 0}) {
    SCOPED_TRACE("kv_grow " + std::to_string(grow));
    auto runner = std::make_unique<BatchRunner>(*st.m.backend, 4, grow);
    BatchRunner* batch = runner.get();
    Scheduler s(std::move(runner), 8);
    std::vector<std::shared_ptr<Job>> jobs;
    for (const json& b : bodies) jobs.push_back(st.request(b));
    // Submitted behind a first job that holds the runner until all are queued.
    for (auto& j : jobs) ASSERT_EQ(s.submit(j), Scheduler::Admit::Queued);
    for (size_t i = 0; i < jobs.size(); ++i) {
      const Event e = last_event(*jobs[i]);
      ASSERT_EQ(e.type, Event::Type::Done) << e.text;
      EXPECT_EQ(e.outcome.text, alone[i].text) << "job " << i;
      EXPECT_EQ(e.outcome.completion_tokens, 70 + 3 * int64_t(i)) << "job " << i;
      EXPECT_EQ(e.outcome.finish_reason, alone[i].finish_reason) << "job " << i;
    }
    s.wait_idle();
    std::cout << "[ figures ] kv_grow " << grow << ": " << batch->launches() << " launches, at most "
              << batch->peak_jobs() << " jobs in one\n";
    if (grow > 0) {
      EXPECT_GE(batch->peak_jobs(), 3) << "leasing 40 tokens at a time, more jobs fit at once";
    } else {
      EXPECT_EQ(batch->peak_jobs(), 2);
    }
  }
}

/// tiny-qwen3 at 8192 positions (past the 4096-position decode Programs of
/// engine::decode_variants), served with the Qwen3 tokenizer, and a request of
/// 40 prompt ids and 4100 greedy tokens: it outgrows those Programs.
struct LongQwen {
  testing::VariantModel v = testing::load_variant(std::string(KEEL_SHARED_DIR) + "/fixtures/tiny-qwen3",
                                                  [](json& c) { c["max_position_embeddings"] = 8192; });
  engine::BackendConfig config(int batch) const {
    engine::BackendConfig cfg;
    cfg.max_context = 8192;
    cfg.workers = 1;  // one order of the split-K adds
    cfg.prefill_chunk = 32;
    cfg.mixed_prefill = 0;
    cfg.batch = batch;
    return cfg;
  }
  ServedModel served(std::unique_ptr<engine::Backend> backend) const {
    ServedModel m;
    m.tokenizer = std::make_unique<tokenizer::Tokenizer>(
        tokenizer::Tokenizer::load(std::string(KEEL_SHARED_DIR) + "/models/qwen3-tokenizer"));
    m.vocab = v.model.config.vocab;
    m.eos_ids = {2};
    m.backend = std::move(backend);
    return m;
  }
  json body() const {
    json ids = json::array();
    for (int32_t t : testing::random_ids(40, v.model.config.vocab, 9)) ids.push_back(t);
    return {{"prompt", ids}, {"max_tokens", 4100}, {"temperature", 0.0}, {"ignore_eos", true}};
  }
  /// The request through `runner`, to its end; `inspect` sees the runner
  /// while the scheduler (its owner) still lives.
  Event serve(ServedModel& m, std::unique_ptr<Runner> runner,
              const std::function<void(const Runner&)>& inspect = {}) const {
    const Runner& r = *runner;
    Scheduler s(std::move(runner), 4);
    auto job = make_job(parse_openai_completion(body()), m);
    EXPECT_EQ(s.submit(job), Scheduler::Admit::Queued);
    Event e = last_event(*job);
    s.wait_idle();
    if (inspect) inspect(r);
    return e;
  }
};

// A long-context backend's decode Programs of engine::kShortContext positions
// take a launch only when every job's prompt and max_tokens fit them: a job
// that would outgrow them stops at their context (a horizon) and goes on in a
// second launch on the full context's Program, with the tokens a batch-1
// backend gives it in one run (the full context's Program throughout).
TEST(ServeScheduler, JobsStartOnTheShortContextProgram) {
  const LongQwen q;
  ServedModel m = q.served(engine::make_backend("cpu", q.v.model, q.config(2)));
  ASSERT_EQ(m.backend->decode_programs().at(2).context, engine::kShortContext);  // 1x4096, 1x8192, 2x4096, 2x8192
  int64_t launches = 0;
  const Event e = q.serve(m, std::make_unique<BatchRunner>(*m.backend, 2), [&](const Runner& r) {
    launches = dynamic_cast<const BatchRunner&>(r).launches();
  });
  ASSERT_EQ(e.type, Event::Type::Done) << e.text;
  EXPECT_EQ(e.outcome.completion_tokens, 4100);
  EXPECT_EQ(launches, 2) << "a horizon at " << engine::kShortContext << " positions";
  // The same request on a batch-1 backend, one generate() on the 8192-position Program.
  auto one = engine::make_backend("cpu", q.v.model, q.config(1));
  const engine::GenerateResult whole = one->generate(make_job(parse_openai_completion(q.body()), m)->request(), nullptr);
  EXPECT_EQ(whole.program_context, 8192);
  EXPECT_EQ(e.outcome.text, m.tokenizer->decode(whole.output));
}

/// Forwards to another backend, recording each generate() call's Program context.
class RecordingBackend : public engine::Backend {
 public:
  explicit RecordingBackend(engine::Backend& b) : b_(b) {}
  std::string_view name() const override { return b_.name(); }
  int64_t max_context() const override { return b_.max_context(); }
  int max_batch() const override { return b_.max_batch(); }
  std::vector<DecodeProgram> decode_programs() const override { return b_.decode_programs(); }
  int64_t cached_prefix(std::span<const int32_t> p) const override { return b_.cached_prefix(p); }
  int64_t kv_pages_total() const override { return b_.kv_pages_total(); }
  int64_t kv_pages_for(int64_t positions) const override { return b_.kv_pages_for(positions); }
  engine::GenerateResult generate(const engine::GenerateRequest& r, const engine::TokenCallback& cb) override {
    engine::GenerateResult g = b_.generate(r, cb);
    contexts.push_back(g.program_context);
    tokens.insert(tokens.end(), g.output.begin(), g.output.end());
    return g;
  }
  std::vector<float> score(std::span<const int32_t> ids) override { return b_.score(ids); }
  std::vector<int64_t> contexts;
  std::vector<int32_t> tokens;  // every call's output, in order

 private:
  engine::Backend& b_;
};

// The same with one request at a time (SerialRunner, the default --max-batch
// 1): two generate() calls, on the 4096-position Program and then on the full
// context's, giving the tokens of one call on the full context's.
TEST(ServeScheduler, ASerialJobStartsOnTheShortContextProgram) {
  const LongQwen q;
  auto inner = engine::make_backend("cpu", q.v.model, q.config(1));
  ServedModel m = q.served(std::make_unique<RecordingBackend>(*inner));
  auto* rec = static_cast<RecordingBackend*>(m.backend.get());
  const Event e = q.serve(m, make_runner(*m.backend, 1));
  ASSERT_EQ(e.type, Event::Type::Done) << e.text;
  EXPECT_EQ(e.outcome.completion_tokens, 4100);
  EXPECT_EQ(e.outcome.finish_reason, "length");
  EXPECT_EQ(rec->contexts, (std::vector<int64_t>{engine::kShortContext, 8192}));
  const engine::GenerateResult whole = inner->generate(make_job(parse_openai_completion(q.body()), m)->request(), nullptr);
  EXPECT_EQ(whole.program_context, 8192);
  EXPECT_EQ(rec->tokens, whole.output);
}

}  // namespace
}  // namespace keel::serve
