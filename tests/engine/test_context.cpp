// The default context rule (engine/context.h): the model's
// max_position_embeddings when its KV cache fits the budget, else the most
// tokens that fit (multiples of 1024 above 2048), with a reason naming the
// figures; an error when not even 2 tokens fit.
#include <gtest/gtest.h>

#include "common/tiny_config.h"
#include "core/error.h"
#include "engine/context.h"

namespace keel::engine {
namespace {

TEST(DefaultContext, KvBytesPerToken) {
  model::ModelConfig c = testing::tiny_config(model::Arch::Qwen3);  // 2 layers, 2 kv heads of 16
  EXPECT_EQ(kv_bytes_per_token(c, 2), 2u * 2 * 32 * 2);
  // Qwen3-8B: 36 layers, 8 kv heads of 128, bf16: 144 KiB a token.
  c.n_layers = 36;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  EXPECT_EQ(kv_bytes_per_token(c, 2), 144u * 1024);
}

TEST(DefaultContext, FullContextWhenItFits) {
  model::ModelConfig c = testing::tiny_config(model::Arch::Llama);
  c.max_position = 40960;
  const ContextChoice r = choose_context(c, 1000, 40960 * 1000 * 3, "GPU memory");
  EXPECT_EQ(r.tokens, 40960);
  EXPECT_EQ(r.budget_tokens, 3 * 40960);  // what a batch may share (--kv-tokens' default when contexts do not fit)
  EXPECT_NE(r.why.find("context 40960 (the model's max_position_embeddings"), std::string::npos) << r.why;
}

TEST(DefaultContext, BoundedByTheBudget) {
  model::ModelConfig c = testing::tiny_config(model::Arch::Llama);
  c.max_position = 40960;
  const uint64_t per = 144 * 1024;
  ContextChoice r = choose_context(c, per, uint64_t(23500) * per, "GPU memory free after the weights");
  EXPECT_EQ(r.tokens, 23552 - 1024);  // 23500 rounded down to a multiple of 1024
  EXPECT_EQ(r.budget_tokens, 23500);
  EXPECT_NE(r.why.find("context 22528: KV for the model's 40960 tokens needs 5.6"), std::string::npos) << r.why;
  EXPECT_NE(r.why.find("GPU memory free after the weights"), std::string::npos) << r.why;
  r = choose_context(c, per, uint64_t(1500) * per, "host memory");  // small: not rounded
  EXPECT_EQ(r.tokens, 1500);
  EXPECT_THROW(choose_context(c, per, per, "GPU memory"), Error);
}

}  // namespace
}  // namespace keel::engine
