// `keel chat`: a multi-turn conversation on stdin/stdout rendered with the
// checkpoint's own chat template (tokenizer_config.json, chat_template.jinja
// or the GGUF's), or keel's built-in ChatML / Llama-3 format when it has none;
// plain continuation when the tokenizer has no chat format at all. Each turn
// re-renders the conversation and generates until an end-of-turn token.
// Ctrl-D (end of input) ends it. When the conversation outgrows the context,
// the oldest turns (after the system message) are dropped, with a note on
// stderr; a message that does not fit even alone is an error.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cli_common.h"
#include "model_source.h"
#include "core/error.h"
#include "engine/text_stream.h"
#include "program/rules.h"

namespace keel::cli {

namespace {
struct ChatArgs {
  std::string model, system;
  int32_t max_tokens = 512;
  SamplingFlags sampling;
  BackendOptions backend;
};

int run_chat(const ChatArgs& a) {
  auto tok = try_load_tokenizer(a.model);
  if (!tok) fail("chat needs a tokenizer (tokenizer.json or vocab.json + merges.txt) in ", a.model);
  model::Model m = model::Model::load(a.model, gguf_dtype(a.backend.backend));
  check_tokenizer_fits_model(*tok, m, a.model);
  auto backend = make_backend(m, a.backend);
  const bool interactive = ::isatty(STDIN_FILENO) == 1;
  const auto format = tok->chat_format();
  const bool templated = tok->has_chat_template();
  std::vector<tokenizer::ChatMessage> messages;
  if (!a.system.empty()) messages.push_back({"system", a.system});
  if (!tok->chat_template_error().empty())
    std::fprintf(stderr, "keel chat: the checkpoint's chat template is not used: %s\n",
                 tok->chat_template_error().c_str());
  const char* family = format == tokenizer::ChatFormat::ChatML   ? "ChatML"
                       : format == tokenizer::ChatFormat::Llama3 ? "Llama-3"
                                                                 : nullptr;
  const std::string how = templated ? std::string("the checkpoint's chat template") + (family ? cat(" (", family, ")") : "")
                          : family  ? cat("built-in ", family, " format")
                                    : std::string("plain (no chat template)");
  std::fprintf(stderr, "keel chat: %s, %s, backend %s. Ctrl-D ends.\n",
               std::string(model::arch_name(m.config.arch)).c_str(), how.c_str(), std::string(backend->name()).c_str());
  std::string line;
  uint64_t turn = 0;
  for (;;) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    messages.push_back({"user", line});
    // Templates and the Llama-3 format write BOS themselves; plain
    // continuation still gets the tokenizer's BOS.
    bool add_special = !templated && format == tokenizer::ChatFormat::None;
    engine::GenerateRequest req;
    const size_t first = a.system.empty() ? 0 : 1;  // the system message is kept
    for (;;) {
      req.prompt = tok->encode(tok->render_chat(messages, true), add_special);
      if (!program::context_full(int64_t(req.prompt.size()), backend->max_context())) break;  // room for a reply
      if (messages.size() - first <= 1)
        fail("chat: the message (", req.prompt.size(), " tokens with the chat format) does not fit the context (",
             backend->max_context(), " tokens); raise --context or send a shorter message");
      // Drop the oldest turn: a user message and the reply that followed it.
      size_t n = messages.size() - first > 2 && messages[first + 1].role == "assistant" ? 2 : 1;
      messages.erase(messages.begin() + std::ptrdiff_t(first), messages.begin() + std::ptrdiff_t(first + n));
      std::fprintf(stderr, "keel chat: dropped the oldest turn so the conversation fits the context (%lld tokens)\n",
                   (long long)backend->max_context());
    }
    check_ids_fit_model(req.prompt, m, a.model);
    req.max_tokens = a.max_tokens;
    req.sampling = resolve_sampling(a.sampling, m.generation);
    req.sampling.seed += turn++;
    req.eos_ids = eos_ids(m, tok.get());
    engine::TextStream stream(*tok, {}, req.prompt);
    backend->generate(req, [&](int32_t t) {
      std::string piece = stream.push(t);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::string tail = stream.finish();
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    messages.push_back({"assistant", stream.text()});
  }
  if (interactive) std::fputc('\n', stdout);
  return 0;
}
}  // namespace

Command register_chat(CLI::App& root) {
  auto a = std::make_shared<ChatArgs>();
  CLI::App* c = root.add_subcommand("chat", "Multi-turn chat with the checkpoint's chat template (Ctrl-D ends)");
  c->add_option("--model", a->model, "Checkpoint folder or GGUF file (or ollama:NAME[:TAG])")->required()->transform(model_source());
  c->add_option("--system", a->system, "System message");
  c->add_option("--max-tokens", a->max_tokens, "Tokens per reply at most")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  add_sampling_flags(*c, a->sampling);
  add_backend_flags(*c, a->backend);
  return {c, [a] { return run_chat(*a); }};
}

}  // namespace keel::cli
