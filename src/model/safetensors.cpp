// safetensors parsing and the WeightStore. A safetensors file is an 8-byte
// little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets}, then the raw data. Nothing in the header is
// trusted: lengths, types, shapes, offsets and overlaps are all checked before
// a TensorView is handed out, since every later stage reads the data through
// these views without further checks. Files are mmap'd; views point into the
// mapping, so opening a 16 GB checkpoint copies nothing.
#include "model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/json_depth.h"

namespace keel::model {

namespace {

using nlohmann::json;

/// The largest header accepted; the reference implementation uses the same cap.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

/// dtype names of the safetensors format that keel does not read as weights.
constexpr std::string_view kKnownUnsupported[] = {"F64", "I64", "I32", "I16", "I8", "U64", "U32",
                                                  "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
                                                  "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};

DType parse_dtype(const json& v, const std::string& source, const std::string& name) {
  if (!v.is_string()) fail(source, ": tensor '", name, "': dtype must be a string, got ", v.type_name());
  const std::string& s = v.get_ref<const std::string&>();
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  for (std::string_view u : kKnownUnsupported)
    if (s == u) fail(source, ": tensor '", name, "': unsupported dtype ", s, " (supported: F32, F16, BF16)");
  fail(source, ": tensor '", name, "': unknown dtype '", s, "'");
}

/// A non-negative integer from a JSON value (shape dims, offsets).
uint64_t parse_count(const json& v, const std::string& source, const std::string& name,
                     const char* what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < 0) fail(source, ": tensor '", name, "': negative ", what, " (", i, ")");
    return uint64_t(i);
  }
  fail(source, ": tensor '", name, "': ", what, " must be an integer, got ", v.type_name());
}

const json& field(const json& entry, const char* key, const std::string& source, const std::string& name) {
  auto it = entry.find(key);
  if (it == entry.end()) fail(source, ": tensor '", name, "': missing '", key, "'");
  return *it;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> TensorView::to_f32() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = at(i);
  return out;
}

std::vector<TensorView> parse_safetensors(const std::byte* bytes, size_t size, const std::string& source) {
  if (size < 8) fail(source, ": file too short for a safetensors header (", size, " bytes)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint64_t(bytes[i]);
  if (header_len > kMaxHeaderBytes)
    fail(source, ": safetensors header length ", header_len, " is absurdly large (limit ",
         kMaxHeaderBytes, " bytes)");
  if (header_len > size - 8)
    fail(source, ": safetensors header length ", header_len, " runs past the end of the file (",
         size, " bytes)");
  const char* hbegin = reinterpret_cast<const char*>(bytes + 8);
  json header;
  check_json_depth(std::string_view(hbegin, header_len), source);
  try {
    header = json::parse(hbegin, hbegin + header_len);
  } catch (const json::exception& e) {
    fail(source, ": safetensors header is not valid JSON: ", e.what());
  }
  if (!header.is_object())
    fail(source, ": safetensors header must be a JSON object, got ", header.type_name());

  const std::byte* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<TensorView> views;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) with the view index
  std::vector<size_t> range_owner;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(source, ": '__metadata__' must be an object, got ", entry.type_name());
      continue;
    }
    if (!entry.is_object()) fail(source, ": tensor '", name, "': entry must be an object, got ", entry.type_name());
    TensorView v;
    v.name = name;
    v.file = source;
    v.dtype = parse_dtype(field(entry, "dtype", source, name), source, name);

    const json& shape = field(entry, "shape", source, name);
    if (!shape.is_array()) fail(source, ": tensor '", name, "': shape must be an array, got ", shape.type_name());
    uint64_t numel = 1;
    for (const json& d : shape) {
      uint64_t dim = parse_count(d, source, name, "shape dimension");
      if (dim > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel) || numel > uint64_t(INT64_MAX))
        fail(source, ": tensor '", name, "': shape dimension ", dim, " after ", shape_str(v.shape),
             " overflows the element count");
      v.shape.push_back(int64_t(dim));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, uint64_t(dtype_size(v.dtype)), &nbytes))
      fail(source, ": tensor '", name, "': shape ", shape_str(v.shape), " overflows the byte count");

    const json& offs = field(entry, "data_offsets", source, name);
    if (!offs.is_array() || offs.size() != 2)
      fail(source, ": tensor '", name, "': data_offsets must be an array of two integers, got ", offs.type_name(),
           offs.is_array() ? cat(" of ", offs.size(), " elements") : std::string());
    uint64_t begin = parse_count(offs[0], source, name, "data offset");
    uint64_t end = parse_count(offs[1], source, name, "data offset");
    if (end < begin) fail(source, ": tensor '", name, "': data_offsets [", begin, ", ", end, "] are reversed");
    if (end > data_size)
      fail(source, ": tensor '", name, "': data_offsets [", begin, ", ", end,
           "] run past the end of the file (data section is ", data_size, " bytes)");
    if (end - begin != nbytes)
      fail(source, ": tensor '", name, "': data_offsets [", begin, ", ", end, "] span ", end - begin,
           " bytes but shape ", shape_str(v.shape), " of ", dtype_name(v.dtype), " needs ", nbytes);
    v.data = data + begin;
    v.nbytes = size_t(nbytes);
    if (nbytes > 0 && reinterpret_cast<uintptr_t>(v.data) % dtype_size(v.dtype) != 0)
      fail(source, ": tensor '", name, "': data at offset ", begin, " is not aligned to its ",
           dtype_size(v.dtype), "-byte elements");
    if (nbytes > 0) {
      ranges.emplace_back(begin, end);
      range_owner.push_back(views.size());
    }
    views.push_back(std::move(v));
  }

  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t k = 1; k < order.size(); ++k) {
    size_t prev = order[k - 1], cur = order[k];
    if (ranges[cur].first < ranges[prev].second)
      fail(source, ": tensors '", views[range_owner[prev]].name, "' and '", views[range_owner[cur]].name,
           "' overlap (bytes [", ranges[prev].first, ", ", ranges[prev].second, ") and [",
           ranges[cur].first, ", ", ranges[cur].second, "))");
  }
  return views;
}

WeightStore WeightStore::open_files(const std::vector<std::string>& files) {
  WeightStore ws;
  for (size_t i = 0; i < files.size(); ++i) ws.where_ += (i ? ", " : "") + files[i];
  for (const std::string& path : files) {
    auto mf = std::make_unique<MappedFile>(path);
    for (TensorView& v : parse_safetensors(mf->data(), mf->size(), path)) {
      auto it = ws.tensors_.find(v.name);
      if (it != ws.tensors_.end())
        fail(path, ": tensor '", v.name, "' is also stored in ", it->second.file);
      std::string name = v.name;
      ws.tensors_.emplace(std::move(name), std::move(v));
    }
    ws.files_.push_back(std::move(mf));
  }
  return ws;
}

WeightStore WeightStore::open_dir(const std::string& dir) {
  std::string single = path_join(dir, "model.safetensors");
  if (file_exists(single)) {
    WeightStore ws = open_files({single});
    ws.where_ = dir;
    return ws;
  }
  std::string index_path = path_join(dir, "model.safetensors.index.json");
  if (!file_exists(index_path))
    fail(dir, ": no model.safetensors or model.safetensors.index.json (not a safetensors checkpoint)");

  json index;
  const std::string index_text = read_text_file(index_path);
  check_json_depth(index_text, index_path);
  try {
    index = json::parse(index_text);
  } catch (const json::exception& e) {
    fail(index_path, ": not valid JSON: ", e.what());
  }
  if (!index.is_object()) fail(index_path, ": expected a JSON object at the top level");
  auto wm = index.find("weight_map");
  if (wm == index.end()) fail(index_path, ": field 'weight_map' is missing");
  if (!wm->is_object()) fail(index_path, ": field 'weight_map' must be an object, got ", wm->type_name());

  std::vector<std::string> shards;  // distinct, in order of first mention
  std::set<std::string> seen;
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string())
      fail(index_path, ": weight_map['", tensor, "'] must be a file name, got ", shard.type_name());
    const std::string& s = shard.get_ref<const std::string&>();
    if (s.empty() || s.front() == '/' || s.find("..") != std::string::npos)
      fail(index_path, ": weight_map['", tensor, "'] names an invalid shard file '", s, "'");
    if (seen.insert(s).second) shards.push_back(s);
  }
  if (shards.empty()) fail(index_path, ": weight_map lists no tensors");

  std::vector<std::string> paths;
  for (const std::string& s : shards) {
    std::string p = path_join(dir, s);
    if (!file_exists(p)) fail(index_path, ": shard file '", s, "' is missing (expected at ", p, ")");
    paths.push_back(p);
  }
  WeightStore ws = open_files(paths);
  ws.where_ = dir;
  for (const auto& [tensor, shard] : wm->items()) {
    std::string p = path_join(dir, shard.get<std::string>());
    auto it = ws.tensors_.find(tensor);
    if (it == ws.tensors_.end() || it->second.file != p)
      fail(index_path, ": tensor '", tensor, "' is listed in shard '", shard.get<std::string>(),
           "' but that shard does not hold it");
  }
  return ws;
}

std::byte* WeightStore::add_owned(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                  const std::string& file) {
  TensorView v;
  v.name = name;
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.file = file;
  v.nbytes = size_t(v.numel()) * dtype_size(dtype);
  owned_.push_back(std::make_unique<std::byte[]>(v.nbytes));
  v.data = owned_.back().get();
  auto [it, fresh] = tensors_.emplace(name, std::move(v));
  KEEL_CHECK(fresh, file, ": tensor '", name, "' appears twice");
  return owned_.back().get();
}

bool WeightStore::has(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorView& WeightStore::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(where_, ": tensor '", name, "' not found in the checkpoint");
  return it->second;
}

uint64_t WeightStore::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, v] : tensors_) n += v.nbytes;
  return n;
}

void write_safetensors_f32(const std::string& path,
                           const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes,
                           const std::vector<const float*>& data) {
  KEEL_CHECK(shapes.size() == data.size(), path, ": ", shapes.size(), " tensor shapes but ", data.size(),
             " data pointers");
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const auto& [name, shape] : shapes) {
    KEEL_CHECK(name != "__metadata__" && !header.contains(name), path, ": tensor name '", name,
               "' is reserved or repeated");
    uint64_t numel = 1;
    for (int64_t d : shape) {
      KEEL_CHECK(d >= 0, path, ": tensor '", name, "' has a negative dimension ", d);
      numel *= uint64_t(d);
    }
    uint64_t nbytes = numel * 4;
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + nbytes}}};
    sizes.push_back(nbytes);
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, ": cannot open for writing");
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), std::streamsize(text.size()));
  for (size_t i = 0; i < data.size(); ++i)
    if (sizes[i]) out.write(reinterpret_cast<const char*>(data[i]), std::streamsize(sizes[i]));
  out.flush();
  if (!out) fail(path, ": write failed");
}

}  // namespace keel::model
