// Binary save/load of a Program (format in docs/program-format.md): the header
// record followed by each array as raw little-endian records, then an FNV-1a
// checksum. Loading checks magic, version, record sizes, truncation, the
// checksum and every id (Program::validate), and names the file at fault.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "program/program.h"

namespace keel::program {

/// The Program as the bytes of a .keel file. Deterministic: the same Program
/// always gives the same bytes.
std::vector<uint8_t> serialize(const Program& p);

/// Parses and validates the bytes of a .keel file; `source` names it in errors.
Program deserialize(const uint8_t* data, size_t size, const std::string& source);

/// A stable 64-bit hash of the Program: FNV-1a over its serialized bytes (the
/// .keel file's trailing checksum), so equal Programs (same model, options and
/// target) have equal hashes on every machine and in every tool.
uint64_t program_hash(const Program& p);
/// The hash as 16 lowercase hex digits (how `keel compile --report` and
/// `keel bench --json` print it).
std::string hash_hex(uint64_t hash);

/// Writes a Program to `path`; throws keel::Error naming the path on failure.
void save(const Program& p, const std::string& path);

/// Reads a Program from `path`; throws keel::Error on a missing, truncated or
/// malformed file.
Program load(const std::string& path);

}  // namespace keel::program
