// A Backend for the serve tests: emits `n` tokens (A, B, C, ...), one every
// `delay`, until the callback says stop; counts its generate() calls.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "engine/backend.h"

namespace keel::serve {

class ScriptedBackend : public engine::Backend {
 public:
  ScriptedBackend(int n, std::chrono::milliseconds delay) : n_(n), delay_(delay) {}
  std::string_view name() const override { return "scripted"; }
  int64_t max_context() const override { return 1 << 20; }
  engine::GenerateResult generate(const engine::GenerateRequest& req, const engine::TokenCallback& cb) override {
    engine::GenerateResult r;
    ++calls;
    for (int i = 0; i < std::min(n_, req.max_tokens); ++i) {
      std::this_thread::sleep_for(delay_);
      r.output.push_back(65 + i % 26);
      if (!cb(r.output.back())) {
        r.stop_reason = "stopped";
        return r;
      }
    }
    r.stop_reason = "max_tokens";
    return r;
  }
  std::vector<float> score(std::span<const int32_t>) override { return {}; }
  std::atomic<int> calls{0};

 private:
  int n_;
  std::chrono::milliseconds delay_;
};

}  // namespace keel::serve
