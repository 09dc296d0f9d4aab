// Progress bar implementation: one carriage-return-redrawn line on stderr.
#include "core/progress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace keel {

namespace {
bool progress_enabled() {
  if (const char* e = std::getenv("KEEL_PROGRESS")) return std::strcmp(e, "0") != 0;
  return ::isatty(STDERR_FILENO) == 1;
}
std::string human(double v, const std::string& unit) {
  const char* suffix[] = {"", "K", "M", "G", "T"};
  int i = 0;
  while (v >= 1000.0 && i < 4) {
    v /= (unit == "B" ? 1024.0 : 1000.0);
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f %s%s", v, suffix[i], unit.c_str());
  return buf;
}
}  // namespace

Progress::Progress(std::string label, uint64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total),
      start_(std::chrono::steady_clock::now()), last_draw_(start_), enabled_(progress_enabled()) {}

Progress::~Progress() { finish(); }

void Progress::update(uint64_t done) {
  done_ = done;
  if (!enabled_ || finished_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - start_ < std::chrono::seconds(1)) return;
  if (drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (drawn_) {
    done_ = total_;
    draw(true);
  }
}

void Progress::draw(bool final_line) {
  drawn_ = true;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double frac = total_ ? double(done_) / double(total_) : 1.0;
  if (frac > 1.0) frac = 1.0;
  const int width = 30;
  int fill = int(frac * width);
  char bar[width + 1];
  for (int i = 0; i < width; ++i) bar[i] = i < fill ? '#' : '.';
  bar[width] = 0;
  std::fprintf(stderr, "\r%s [%s] %3d%% %s / %s  %.1fs%s", label_.c_str(), bar, int(frac * 100),
               human(double(done_), unit_).c_str(), human(double(total_), unit_).c_str(), secs,
               final_line ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace keel
