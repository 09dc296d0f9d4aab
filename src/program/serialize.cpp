// Program <-> bytes. Every array is written as a count-prefixed run of fixed-size
// records so a reader can bound every read before it happens; a trailing FNV-1a
// checksum over everything before it catches corruption.
#include "program/serialize.h"

#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/mapped_file.h"

namespace keel::program {

namespace {

constexpr uint32_t kArrayTag = 0x41525259u;  // "YRRA": precedes each array

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

struct Writer {
  std::vector<uint8_t> out;
  void raw(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  }
  template <class T>
  void array(const std::vector<T>& v) {
    uint32_t tag = kArrayTag, rec = sizeof(T);
    uint64_t n = v.size();
    raw(&tag, 4);
    raw(&rec, 4);
    raw(&n, 8);
    if (n) raw(v.data(), n * sizeof(T));
  }
};

struct Reader {
  const uint8_t* data;
  size_t size, pos = 0;
  const std::string& source;
  void raw(void* p, size_t n, const char* what) {
    KEEL_CHECK(n <= size - pos, source, ": truncated program file (reading ", what, " at byte ",
               pos, ", need ", n, " more bytes, have ", size - pos, ")");
    std::memcpy(p, data + pos, n);
    pos += n;
  }
  template <class T>
  void array(std::vector<T>& v, uint64_t expect, const char* what) {
    uint32_t tag = 0, rec = 0;
    uint64_t n = 0;
    raw(&tag, 4, what);
    raw(&rec, 4, what);
    raw(&n, 8, what);
    KEEL_CHECK(tag == kArrayTag, source, ": corrupt program file (no array tag before ", what, ")");
    KEEL_CHECK(rec == sizeof(T), source, ": ", what, " records are ", rec, " bytes, expected ",
               sizeof(T), " (incompatible program format)");
    KEEL_CHECK(n == expect, source, ": ", what, " has ", n, " records, header says ", expect);
    KEEL_CHECK(n <= (size - pos) / sizeof(T), source, ": truncated program file (", what, ")");
    v.resize(n);
    if (n) raw(v.data(), n * sizeof(T), what);
  }
};

}  // namespace

std::vector<uint8_t> serialize(const Program& p) {
  Writer w;
  w.raw(&p.h, sizeof(ProgramHeader));
  w.array(p.tasks);
  w.array(p.waits);
  w.array(p.signals);
  w.array(p.buffers);
  w.array(p.ops);
  w.array(p.worker_offsets);
  w.array(p.worker_tasks);
  w.array(p.constants);
  uint64_t sum = fnv1a(w.out.data(), w.out.size());
  w.raw(&sum, 8);
  return std::move(w.out);
}

Program deserialize(const uint8_t* data, size_t size, const std::string& source) {
  Program p;
  Reader r{data, size, 0, source};
  KEEL_CHECK(size >= 16, source, ": not a keel program (", size, " bytes)");
  uint32_t magic = 0, version = 0, header_bytes = 0, task_bytes = 0;
  std::memcpy(&magic, data, 4);
  std::memcpy(&version, data + 4, 4);
  std::memcpy(&header_bytes, data + 8, 4);
  std::memcpy(&task_bytes, data + 12, 4);
  KEEL_CHECK(magic == kProgramMagic, source, ": not a keel program (bad magic)");
  KEEL_CHECK(version == kProgramVersion, source, ": program format version ", version,
             ", this keel reads version ", kProgramVersion, " (recompile the model)");
  KEEL_CHECK(header_bytes == sizeof(ProgramHeader) && task_bytes == sizeof(TaskDesc), source,
             ": program header/task record sizes ", header_bytes, "/", task_bytes,
             " do not match this keel (", sizeof(ProgramHeader), "/", sizeof(TaskDesc), ")");
  KEEL_CHECK(size >= sizeof(ProgramHeader) + 8, source, ": truncated program file (header)");
  uint64_t sum = 0;
  std::memcpy(&sum, data + size - 8, 8);
  r.size = size - 8;
  r.raw(&p.h, sizeof(ProgramHeader), "header");
  const ProgramHeader& h = p.h;
  r.array(p.tasks, h.n_tasks, "tasks");
  r.array(p.waits, h.n_waits, "waits");
  r.array(p.signals, h.n_signals, "signals");
  r.array(p.buffers, h.n_buffers, "buffers");
  r.array(p.ops, h.n_ops, "ops");
  r.array(p.worker_offsets, uint64_t(h.n_workers) + 1, "worker_offsets");
  r.array(p.worker_tasks, h.n_worker_entries, "worker_tasks");
  r.array(p.constants, h.constants_bytes, "constants");
  KEEL_CHECK(r.pos == r.size, source, ": ", r.size - r.pos, " unexpected bytes after the arrays");
  KEEL_CHECK(fnv1a(data, size - 8) == sum, source, ": checksum mismatch (corrupt program file)");
  try {
    p.validate();
  } catch (const Error& e) {
    fail(source, ": ", e.what());
  }
  return p;
}

uint64_t program_hash(const Program& p) {
  const std::vector<uint8_t> bytes = serialize(p);
  uint64_t sum = 0;
  std::memcpy(&sum, bytes.data() + bytes.size() - 8, 8);
  return sum;
}

std::string hash_hex(uint64_t hash) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(hash));
  return buf;
}

void save(const Program& p, const std::string& path) {
  std::vector<uint8_t> bytes = serialize(p);
  FILE* f = std::fopen(path.c_str(), "wb");
  KEEL_CHECK(f, path, ": cannot open for writing");
  size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f);
  int rc = std::fclose(f);
  KEEL_CHECK(n == bytes.size() && rc == 0, path, ": write failed");
}

Program load(const std::string& path) {
  KEEL_CHECK(file_exists(path), path, ": no such program file");
  MappedFile f(path);
  return deserialize(reinterpret_cast<const uint8_t*>(f.data()), f.size(), path);
}

}  // namespace keel::program
