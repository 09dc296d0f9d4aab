// `keel tokenize`: text -> token ids (or ids -> text with --decode). Works on a
// folder that holds only tokenizer files.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "model_source.h"
#include "core/error.h"
#include "core/mapped_file.h"

namespace keel::cli {

namespace {
struct TokenizeArgs {
  std::string model, text, file, decode;
  bool json = false, no_special = false;
};

int run_tokenize(const TokenizeArgs& a) {
  auto tok = try_load_tokenizer(a.model);
  if (!tok) fail(a.model, ": no tokenizer.json (or vocab.json + merges.txt) found");
  if (!a.decode.empty()) {
    std::vector<int32_t> ids = parse_ids(a.decode, "--decode");
    KEEL_CHECK(!ids.empty(), "--decode: no token ids given (expected comma-separated integers)");
    for (int32_t id : ids)
      KEEL_CHECK(id < tok->vocab_size(), "--decode: token id ", id, " is outside the vocabulary (",
                 tok->vocab_size(), ")");
    std::string text = tok->decode(ids, a.no_special);
    if (a.json) {
      std::printf("%s\n", nlohmann::json{{"ids", ids}, {"text", text}}.dump().c_str());
    } else {
      std::printf("%s\n", text.c_str());
    }
    return 0;
  }
  std::string text = !a.file.empty() ? read_text_file(a.file) : a.text;
  std::vector<int32_t> ids = tok->encode(text, !a.no_special);
  if (a.json) {
    nlohmann::json pieces = nlohmann::json::array();
    for (int32_t id : ids) pieces.push_back(tok->token_text(id));
    std::printf("%s\n", nlohmann::json{{"ids", ids}, {"tokens", pieces}, {"count", ids.size()}}
                            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                            .c_str());
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? "," : "", ids[i]);
    std::printf("\n");
  }
  return 0;
}
}  // namespace

Command register_tokenize(CLI::App& root) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* c = root.add_subcommand("tokenize", "Text to token ids, or ids to text with --decode");
  c->add_option("--model", a->model, "Folder with tokenizer.json (or vocab.json + merges.txt), GGUF file, or ollama:NAME[:TAG]")->required()->transform(model_source());
  auto* t = c->add_option("--text", a->text, "Text to encode");
  auto* f = c->add_option("--file", a->file, "File whose text to encode")->check(CLI::ExistingFile);
  auto* d = c->add_option("--decode", a->decode, "Token ids to decode, e.g. 1,2,3, or @FILE");
  t->excludes(f)->excludes(d);
  f->excludes(d);
  c->add_flag("--no-special", a->no_special, "Encode without BOS / decode without special tokens");
  c->add_flag("--json", a->json, "Print JSON (ids and token pieces)");
  return {c, [a, c] {
            if (a->text.empty() && a->file.empty() && a->decode.empty() && c->count("--text") == 0)
              fail("tokenize: give --text T, --file F or --decode 1,2,3");
            return run_tokenize(*a);
          }};
}

}  // namespace keel::cli
