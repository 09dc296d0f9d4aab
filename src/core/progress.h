// A terminal progress bar for long work (loading large checkpoints, compiling).
// It stays silent for the first second, so short work prints nothing, and draws
// to stderr only when stderr is a terminal (or KEEL_PROGRESS=1 forces it).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace keel {

class Progress {
 public:
  /// `label` names the work; `total` is in `unit`s (e.g. bytes).
  Progress(std::string label, uint64_t total, std::string unit = "B");
  ~Progress();
  /// Sets the amount done so far and redraws at most ~10 times a second.
  void update(uint64_t done);
  /// Marks the work finished (draws the final line if anything was drawn).
  void finish();

 private:
  void draw(bool final_line);
  std::string label_, unit_;
  uint64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool enabled_, drawn_ = false, finished_ = false;
};

}  // namespace keel
