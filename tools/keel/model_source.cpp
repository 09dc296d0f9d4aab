// Resolving --model (see model_source.h). An Ollama store keeps each model as a
// JSON manifest (an OCI image manifest) whose layers are content-addressed
// blobs; the weights are the layer of mediaType
// application/vnd.ollama.image.model, a plain GGUF file.
#include "model_source.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"

namespace keel::cli {

namespace fs = std::filesystem;

std::string resolve_ollama(const std::string& spec) {
  const std::string body = spec.substr(std::string("ollama:").size());
  if (body.empty()) fail("--model ", spec, ": expected ollama:NAME[:TAG]");
  std::string name = body, tag = "latest";
  size_t colon = body.rfind(':');
  if (colon != std::string::npos && body.find('/', colon) == std::string::npos) {
    name = body.substr(0, colon);
    tag = body.substr(colon + 1);
  }
  if (name.empty() || tag.empty() || name.find("..") != std::string::npos || tag.find('/') != std::string::npos)
    fail("--model ", spec, ": expected ollama:NAME[:TAG]");
  std::string store;
  if (const char* env = std::getenv("OLLAMA_MODELS"); env && *env) store = env;
  else if (const char* home = std::getenv("HOME"); home && *home) store = std::string(home) + "/.ollama/models";
  else fail("--model ", spec, ": neither $OLLAMA_MODELS nor $HOME is set, so the Ollama store cannot be found");

  // NAME, NAMESPACE/NAME or HOST/NAMESPACE/NAME, as Ollama spells model names.
  int slashes = int(std::count(name.begin(), name.end(), '/'));
  std::string rel = slashes == 0 ? "registry.ollama.ai/library/" + name
                    : slashes == 1 ? "registry.ollama.ai/" + name
                                   : name;
  const std::string manifest = store + "/manifests/" + rel + "/" + tag;
  if (!file_exists(manifest))
    fail("--model ", spec, ": no Ollama manifest at ", manifest, " (is the model pulled? `ollama pull ", name, ":",
         tag, "`; set $OLLAMA_MODELS if the store is elsewhere)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(manifest));
  } catch (const nlohmann::json::exception& e) {
    fail(manifest, ": invalid JSON: ", e.what());
  }
  if (!j.is_object() || !j.contains("layers") || !j["layers"].is_array())
    fail(manifest, ": expected an object with a 'layers' array");
  for (const auto& layer : j["layers"]) {
    if (!layer.is_object() || layer.value("mediaType", "") != "application/vnd.ollama.image.model") continue;
    std::string digest = layer.value("digest", "");
    if (digest.rfind("sha256:", 0) != 0 || digest.size() != 7 + 64 ||
        digest.find_first_not_of("0123456789abcdef", 7) != std::string::npos)
      fail(manifest, ": the model layer's digest '", digest, "' is not sha256:<64 hex digits>");
    const std::string blob = store + "/blobs/sha256-" + digest.substr(7);
    if (!file_exists(blob)) fail(manifest, ": the model layer's blob ", blob, " is missing");
    std::fprintf(stderr, "keel: %s is %s\n", spec.c_str(), blob.c_str());
    return blob;
  }
  fail(manifest, ": no layer of mediaType application/vnd.ollama.image.model");
}

CLI::Validator model_source() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        if (v.rfind("ollama:", 0) == 0) {
          try {
            v = resolve_ollama(v);
          } catch (const Error& e) {
            return e.what();
          }
          return {};
        }
        std::error_code ec;
        if (fs::is_directory(v, ec) || fs::is_regular_file(v, ec)) return {};
        return "no such folder or file: " + v;
      },
      "FOLDER|FILE.gguf|ollama:NAME[:TAG]");
}

DType gguf_dtype(const std::string& backend) { return backend == "reference" ? DType::F32 : DType::BF16; }

}  // namespace keel::cli
