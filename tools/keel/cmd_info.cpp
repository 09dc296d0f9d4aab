// `keel info`: what a checkpoint is (architecture, sizes, parameter count, bytes
// streamed per decoded token, dtypes, tokenizer, context) and which GPUs this
// machine has.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "model/rope.h"
#include "model_source.h"
#include "core/error.h"
#if KEEL_EXEC_CUDA_AVAILABLE
#include "exec/cuda/device_info.h"
#endif

namespace keel::cli {

namespace {
struct InfoArgs {
  std::string model;
  bool json = false;
};

std::string human_bytes(double b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, ++i;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", b, u[i]);
  return buf;
}

nlohmann::json gpus_json() {
  nlohmann::json g = nlohmann::json::array();
#if KEEL_EXEC_CUDA_AVAILABLE
  for (const auto& d : exec::cuda::list_gpus())
    g.push_back({{"name", d.name}, {"compute_capability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor)},
                 {"sms", d.sm_count}, {"memory_bytes", d.total_memory}, {"l2_bytes", d.l2_bytes}});
#endif
  return g;
}

std::string chat_format_name(tokenizer::ChatFormat f) {
  switch (f) {
    case tokenizer::ChatFormat::ChatML: return "ChatML";
    case tokenizer::ChatFormat::Llama3: return "Llama-3";
    case tokenizer::ChatFormat::None: break;
  }
  return "none";
}

int run_info(const InfoArgs& a) {
  // GGUF weights are shown as the reference backend converts them (f32).
  model::Model m = model::Model::load(a.model, gguf_dtype("reference"));
  const auto& c = m.config;
  std::map<std::string, uint64_t> dtype_bytes;
  for (const auto& [name, t] : m.weights.all()) dtype_bytes[std::string(dtype_name(t.dtype))] += t.nbytes;
  auto tok = try_load_tokenizer(a.model);
  nlohmann::json gpus = gpus_json();
  if (a.json) {
    nlohmann::json j = {{"architecture", std::string(model::arch_name(c.arch))}, {"model_type", c.model_type},
                        {"hidden_size", c.hidden}, {"intermediate_size", c.intermediate}, {"layers", c.n_layers},
                        {"heads", c.n_heads}, {"kv_heads", c.n_kv_heads}, {"head_dim", c.head_dim},
                        {"vocab_size", c.vocab}, {"context_length", c.max_position},
                        {"rope", model::rope_summary(c)}, {"sliding_window", c.sliding_window},
                        {"attention", model::attention_summary(c)},
                        {"parameters", c.param_count()}, {"bytes_per_token", m.bytes_per_token()},
                        {"weight_bytes", m.weights.total_bytes()}, {"dtypes", dtype_bytes},
                        {"tied_embeddings", c.tie_embeddings}, {"qkv_bias", c.qkv_bias}, {"qk_norm", c.qk_norm},
                        {"tokenizer", tok ? std::string(tok->kind_name()) : std::string("none")},
                        {"chat_format", tok ? chat_format_name(tok->chat_format()) : std::string("none")},
                        {"gguf_quantization", m.gguf_quantization.empty() ? nlohmann::json() : nlohmann::json(m.gguf_quantization)},
                        {"gpus", gpus}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model          %s\n", a.model.c_str());
  std::printf("architecture   %s (model_type %s)\n", std::string(model::arch_name(c.arch)).c_str(), c.model_type.c_str());
  std::printf("shape          hidden %lld, intermediate %lld, layers %lld, heads %lld/%lld kv, head_dim %lld, vocab %lld\n",
              (long long)c.hidden, (long long)c.intermediate, (long long)c.n_layers, (long long)c.n_heads,
              (long long)c.n_kv_heads, (long long)c.head_dim, (long long)c.vocab);
  std::printf("features       %s%s%s\n", c.tie_embeddings ? "tied embeddings " : "untied LM head ",
              c.qkv_bias ? "qkv-bias " : "", c.qk_norm ? "qk-norm" : "");
  std::printf("parameters     %.3f M\n", double(c.param_count()) / 1e6);
  std::printf("weights        %s", human_bytes(double(m.weights.total_bytes())).c_str());
  for (const auto& [d, b] : dtype_bytes) std::printf("  [%s %s]", d.c_str(), human_bytes(double(b)).c_str());
  std::printf("\nper token      %s streamed per decoded token (batch 1)\n", human_bytes(double(m.bytes_per_token())).c_str());
  std::printf("context        %lld tokens\n", (long long)c.max_position);
  std::printf("rope           %s\n", model::rope_summary(c).c_str());
  std::printf("attention      %s\n", model::attention_summary(c).c_str());
  if (!m.gguf_quantization.empty())
    std::printf("quantization   GGUF %s; dequantized at load to F32 (reference backend) or BF16 (cpu, cuda)\n",
                m.gguf_quantization.c_str());
  std::printf("tokenizer      %s", tok ? std::string(tok->kind_name()).c_str() : "none found");
  if (tok) std::printf(", chat format %s", chat_format_name(tok->chat_format()).c_str());
  std::printf("\n");
  if (gpus.empty()) {
#if KEEL_EXEC_CUDA_AVAILABLE
    std::printf("gpus           none visible\n");
#else
    std::printf("gpus           none (this keel was built without CUDA)\n");
#endif
  }
  for (const auto& g : gpus) {
    std::printf("gpu            %s (sm_%s, %d SMs, %s, L2 %s)\n", g["name"].get<std::string>().c_str(),
                g["compute_capability"].get<std::string>().c_str(), g["sms"].get<int>(),
                human_bytes(g["memory_bytes"].get<double>()).c_str(), human_bytes(g["l2_bytes"].get<double>()).c_str());
  }
  return 0;
}
}  // namespace

Command register_info(CLI::App& root) {
  auto a = std::make_shared<InfoArgs>();
  CLI::App* c = root.add_subcommand("info", "Describe a checkpoint and the GPUs this machine has");
  c->add_option("--model", a->model, "Checkpoint folder or GGUF file (or ollama:NAME[:TAG])")->required()->transform(model_source());
  c->add_flag("--json", a->json, "Print JSON");
  return {c, [a] { return run_info(*a); }};
}

}  // namespace keel::cli
