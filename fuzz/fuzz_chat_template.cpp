// libFuzzer target: tokenizer_config.json (chat template, BOS/EOS tokens,
// add_bos_token, added_tokens_decoder) next to a fixed small byte-level
// tokenizer.json, then a chat rendered with it and encoded. Input: the
// tokenizer_config.json bytes, optionally followed by a NUL byte and messages
// separated by 0x01 (roles cycle system, user, assistant). A keel::Error from
// load is the expected answer to bad input; any other exception, a crash, a
// sanitizer report or an out-of-vocabulary id is a finding. Rendering runs
// the template through keel's Jinja engine; a keel::Error from it is an
// answer too.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

void write_file(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

/// A byte-level tokenizer: the 256 byte pieces, and the added tokens the chat
/// formats use (ChatML and Llama-3), so templates can name real tokens.
std::string tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    keel::tokenizer::append_utf8(s, keel::tokenizer::byte_level_char(uint8_t(b)));
    vocab[s] = b;
  }
  nlohmann::json added = nlohmann::json::array();
  int id = 256;
  for (const char* t : {"<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<|start_header_id|>",
                        "<|end_header_id|>", "<|eot_id|>", "<s>", "</s>"})
    added.push_back({{"id", id++}, {"content", t}, {"special", true}});
  return nlohmann::json{{"added_tokens", added},
                        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                        {"decoder", {{"type", "ByteLevel"}}},
                        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}}
      .dump();
}

std::string scratch_dir() {
  static const std::string dir = [] {
    std::string d = "/tmp/keel_fuzz_chat_" + std::to_string(::getpid());
    std::string cmd = "mkdir -p " + d;
    if (std::system(cmd.c_str()) != 0) __builtin_trap();
    write_file(d + "/tokenizer.json", tokenizer_json());
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string dir = scratch_dir();
  write_file(dir + "/tokenizer_config.json", input.substr(0, nul));
  keel::tokenizer::Tokenizer tok;
  try {
    tok = keel::tokenizer::Tokenizer::load(dir);
  } catch (const keel::Error&) {
    return 0;
  }
  std::vector<keel::tokenizer::ChatMessage> messages;
  if (nul != std::string_view::npos) {
    const char* roles[] = {"system", "user", "assistant"};
    std::string_view rest = input.substr(nul + 1);
    for (size_t i = 0;; ++i) {
      const size_t sep = rest.find('\x01');
      messages.push_back({roles[i % 3], std::string(rest.substr(0, sep))});
      if (sep == std::string_view::npos) break;
      rest.remove_prefix(sep + 1);
    }
  }
  const int64_t vocab = tok.vocab_size();
  for (bool generation_prompt : {true, false}) {
    std::string rendered;
    try {
      rendered = tok.render_chat(messages, generation_prompt);
    } catch (const keel::Error&) {
      continue;  // the template failed (raise_exception, an undefined value): an answer, not a finding
    }
    for (bool add_special : {true, false})
      for (int32_t id : tok.encode(rendered, add_special))
        if (id < 0 || id >= vocab) __builtin_trap();
  }
  for (int32_t id : tok.eos_ids())
    if (id < 0 || id >= vocab) __builtin_trap();
  if (auto bos = tok.bos_id(); bos && (*bos < 0 || *bos >= vocab)) __builtin_trap();
  return 0;
}
