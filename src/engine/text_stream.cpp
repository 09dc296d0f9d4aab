// TextStream: stop-string matching over streamed, UTF-8-safe decoded text.
#include "engine/text_stream.h"

#include <algorithm>

namespace keel::engine {

TextStream::TextStream(const tokenizer::Tokenizer& tok, std::vector<std::string> stop_strings,
                       const std::vector<int32_t>& context, bool skip_special)
    : dec_(tok, skip_special), stops_(std::move(stop_strings)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
  for (int32_t id : context) dec_.push(id);
}

std::string TextStream::release(size_t n) {
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  released_ += out;
  return out;
}

std::string TextStream::push(int32_t id) {
  last_decoded_.clear();
  if (stopped_) return {};
  last_decoded_ = dec_.push(id);
  pending_ += last_decoded_;
  // A complete stop string: release what precedes its first occurrence.
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    std::string out = release(first);
    pending_.clear();
    stopped_ = true;
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_) {
    size_t max_len = std::min(s.size() - 1, pending_.size());
    for (size_t len = max_len; len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  return release(pending_.size() - hold);
}

std::string TextStream::finish() {
  if (stopped_) return {};
  pending_ += dec_.flush();
  return release(pending_.size());
}

}  // namespace keel::engine
