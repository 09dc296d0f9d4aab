// TextStream: streamed text equals the whole decode, stop strings cut the text
// exactly before their first occurrence even when split across tokens, and text
// that might begin a stop string is held back until it is known not to.
#include <gtest/gtest.h>

#include "engine/text_stream.h"
#include "tokenizer/tokenizer.h"

using keel::engine::TextStream;
using keel::tokenizer::Tokenizer;

namespace {
const Tokenizer& stories() {
  static Tokenizer t = Tokenizer::load(std::string(KEEL_SHARED_DIR) + "/models/stories260K");
  return t;
}
// The golden greedy continuation of "Once upon a time" (fixtures/stories260K).
const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378};
const std::vector<int32_t> kGreedy = {432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267,
                                      337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385};
}  // namespace

TEST(TextStream, StreamedTextEqualsDecodeInContext) {
  TextStream s(stories(), {}, kPrompt);
  std::string streamed;
  for (int32_t t : kGreedy) streamed += s.push(t);
  streamed += s.finish();
  EXPECT_EQ(streamed.rfind(", there was a little girl named Lily. She loved to play outside in the park.", 0), 0u)
      << streamed;
  EXPECT_EQ(streamed, s.text());
}

TEST(TextStream, StopStringCutsBeforeItsFirstOccurrence) {
  for (const std::string stop : {"Lily", "y. She", "park", "girl named"}) {
    TextStream s(stories(), {"never appears", stop}, kPrompt);
    std::string streamed;
    for (int32_t t : kGreedy) {
      std::string piece = s.push(t);
      // Nothing released may contain the stop string.
      streamed += piece;
      if (s.stopped()) break;
    }
    streamed += s.finish();
    ASSERT_TRUE(s.stopped()) << stop;
    std::string full = ", there was a little girl named Lily. She loved to play outside in the park.";
    EXPECT_EQ(streamed, full.substr(0, full.find(stop))) << stop;
  }
}

TEST(TextStream, HoldsBackAPossibleStopPrefix) {
  // The story says "named Lily": everything up to "named L" is a prefix of
  // this stop string, so nothing may be released before the "i" arrives.
  const std::string stop = ", there was a little girl named Lucy";
  TextStream s(stories(), {stop}, kPrompt);
  std::string streamed;
  for (size_t i = 0; i < 3; ++i) streamed += s.push(kGreedy[i]);
  EXPECT_EQ(streamed, "");
  for (size_t i = 3; i < kGreedy.size(); ++i) streamed += s.push(kGreedy[i]);
  streamed += s.finish();
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(streamed.rfind(", there was a little girl named Lily.", 0), 0u) << streamed;
}
