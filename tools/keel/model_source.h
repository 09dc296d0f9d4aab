// What `--model` may name: a Hugging Face checkpoint folder, a GGUF file, or an
// Ollama model as ollama:NAME[:TAG], which is resolved to the GGUF blob in the
// local Ollama store. The validator rewrites the flag's value to the resolved
// path, so every subcommand just loads what it is handed.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "core/dtype.h"

namespace keel::cli {

/// Resolves ollama:NAME[:TAG] (TAG defaults to "latest") in the store at
/// $OLLAMA_MODELS, else ~/.ollama/models: the manifest at
/// manifests/registry.ollama.ai/library/NAME/TAG (NAME may be NAMESPACE/NAME,
/// or HOST/NAMESPACE/NAME), its layer of mediaType
/// application/vnd.ollama.image.model, and that layer's blob
/// blobs/sha256-<hex>. Throws keel::Error naming what is missing.
std::string resolve_ollama(const std::string& spec);

/// A CLI11 validator for --model: accepts an existing folder or file, resolves
/// ollama: names (and says on stderr which file it chose).
CLI::Validator model_source();

/// The dtype GGUF weights are dequantized to for a backend: f32 for the fp32
/// reference forward pass, bf16 for the compiled ones.
DType gguf_dtype(const std::string& backend);

}  // namespace keel::cli
