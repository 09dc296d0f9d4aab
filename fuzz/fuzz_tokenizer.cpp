// libFuzzer target: a tokenizer.json, loaded, then used to encode and decode.
// Input: the tokenizer.json bytes, optionally followed by a NUL byte and a text
// to encode (its bytes also serve as token ids to decode). The file is written
// to a scratch folder per process, since Tokenizer::load reads a folder.
// A keel::Error from load is the expected answer to bad input; any other
// exception, a crash, a sanitizer report, an out-of-vocabulary id from encode,
// or a streaming decode that disagrees with decode is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace {

std::string scratch_dir() {
  static const std::string dir = [] {
    std::string d = "/tmp/keel_fuzz_tokenizer_" + std::to_string(::getpid());
    std::string cmd = "mkdir -p " + d;
    if (std::system(cmd.c_str()) != 0) __builtin_trap();
    return d;
  }();
  return dir;
}

void write_file(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);
  const std::string_view text = nul == std::string_view::npos ? std::string_view("Hello, world!") : input.substr(nul + 1);
  const std::string dir = scratch_dir();
  write_file(dir + "/tokenizer.json", json);
  keel::tokenizer::Tokenizer tok;
  try {
    tok = keel::tokenizer::Tokenizer::load(dir);
  } catch (const keel::Error&) {
    return 0;
  }
  const int64_t vocab = tok.vocab_size();
  for (bool add_special : {true, false}) {
    std::vector<int32_t> ids = tok.encode(text, add_special);
    for (int32_t id : ids)
      if (id < 0 || id >= vocab) __builtin_trap();
    const std::string whole = tok.decode(ids, true);
    keel::tokenizer::StreamDecoder stream(tok, true);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    if (streamed != whole) __builtin_trap();
  }
  // Arbitrary ids, in and out of the vocabulary, decode without failing.
  std::vector<int32_t> raw;
  for (size_t i = 0; i + 1 < text.size(); i += 2)
    raw.push_back(int32_t(uint8_t(text[i]) | uint8_t(text[i + 1]) << 8) - 1000);
  (void)tok.decode(raw, false);
  (void)tok.decode(raw, true);
  return 0;
}
