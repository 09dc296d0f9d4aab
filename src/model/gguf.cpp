// GGUF parsing. The layout (ggml/docs/gguf.md): magic "GGUF", u32 version,
// u64 tensor count, u64 metadata count; the metadata as (string key, u32 type,
// value); the tensor index as (string name, u32 n_dims, u64 dims[n_dims], u32
// type, u64 offset); then padding to general.alignment (default 32) and the
// tensor data. Strings are a u64 length and bytes. A Reader walks the bytes
// with every read checked against what is left, and counts are checked
// against the bytes that could hold them before anything is reserved, so a
// hostile count cannot make the parser allocate gigabytes.
#include "model/gguf.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace keel::model {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kMaxStringBytes = 64ull << 20;
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kDefaultAlignment = 32;

const char* type_word(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::Bool: return "bool";
    case GgufType::String: return "string";
    case GgufType::Array: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "?";
}

/// Bytes a scalar of type t takes (strings: the minimum, their length field).
uint64_t min_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: case GgufType::String: return 8;
    case GgufType::Array: return 12;
  }
  return 1;
}

class Reader {
 public:
  Reader(const std::byte* p, size_t n, const std::string& source) : p_(p), n_(n), source_(source) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }

  void need(uint64_t bytes, const std::string& what) const {
    if (bytes > left())
      fail(source_, ": truncated GGUF: ", what, " needs ", bytes, " bytes at offset ", pos_, " but only ", left(),
           " remain");
  }
  template <class T>
  T scalar(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    uint64_t len = scalar<uint64_t>(what + " (length)");
    if (len > kMaxStringBytes) fail(source_, ": ", what, ": string length ", len, " is absurdly large");
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }
  GgufType type(const std::string& what) {
    uint32_t t = scalar<uint32_t>(what);
    if (t > uint32_t(GgufType::F64)) fail(source_, ": ", what, ": unknown metadata type ", t);
    return GgufType(t);
  }

  /// Reads one scalar of type t into v (ints / floats / s).
  void value(GgufType t, GgufValue& v, const std::string& what) {
    switch (t) {
      case GgufType::U8: v.i = scalar<uint8_t>(what); break;
      case GgufType::I8: v.i = scalar<int8_t>(what); break;
      case GgufType::U16: v.i = scalar<uint16_t>(what); break;
      case GgufType::I16: v.i = scalar<int16_t>(what); break;
      case GgufType::U32: v.i = scalar<uint32_t>(what); break;
      case GgufType::I32: v.i = scalar<int32_t>(what); break;
      case GgufType::I64: v.i = scalar<int64_t>(what); break;
      case GgufType::U64: {
        uint64_t u = scalar<uint64_t>(what);
        if (u > uint64_t(INT64_MAX)) fail(source_, ": ", what, ": u64 value ", u, " is out of range");
        v.i = int64_t(u);
        break;
      }
      case GgufType::Bool: {
        uint8_t b = scalar<uint8_t>(what);
        if (b > 1) fail(source_, ": ", what, ": bool value ", int(b), " is neither 0 nor 1");
        v.i = b;
        break;
      }
      case GgufType::F32: v.f = scalar<float>(what); break;
      case GgufType::F64: v.f = scalar<double>(what); break;
      case GgufType::String: v.s = string(what); break;
      case GgufType::Array: fail(source_, ": ", what, ": nested arrays are not supported");
    }
  }

 private:
  const std::byte* p_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& source_;
};

bool int_type(GgufType t) {
  return t == GgufType::U8 || t == GgufType::I8 || t == GgufType::U16 || t == GgufType::I16 ||
         t == GgufType::U32 || t == GgufType::I32 || t == GgufType::U64 || t == GgufType::I64;
}

GgufValue read_value(Reader& r, GgufType t, const std::string& what) {
  GgufValue v;
  v.type = t;
  if (t != GgufType::Array) {
    r.value(t, v, what);
    return v;
  }
  v.elem = r.type(what + " (array element type)");
  uint64_t count = r.scalar<uint64_t>(what + " (array length)");
  if (v.elem == GgufType::Array) r.value(GgufType::Array, v, what);
  const uint64_t each = min_size(v.elem);
  if (count > r.left() / each)
    r.need(r.left() + 1, what + " (" + std::to_string(count) + " array elements of at least " + std::to_string(each) +
                             " bytes)");
  GgufValue e;
  if (v.elem == GgufType::String) v.strings.reserve(size_t(count));
  else if (v.elem == GgufType::F32 || v.elem == GgufType::F64) v.floats.reserve(size_t(count));
  else v.ints.reserve(size_t(count));
  for (uint64_t k = 0; k < count; ++k) {
    r.value(v.elem, e, what);
    if (v.elem == GgufType::String) v.strings.push_back(std::move(e.s));
    else if (v.elem == GgufType::F32 || v.elem == GgufType::F64) v.floats.push_back(e.f);
    else v.ints.push_back(e.i);
  }
  return v;
}

}  // namespace

bool GgufValue::is_int() const { return int_type(type); }
bool GgufValue::is_float() const { return type == GgufType::F32 || type == GgufType::F64; }
size_t GgufValue::array_size() const { return strings.size() + floats.size() + ints.size(); }

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::string_view GgufTensor::type_name() const {
  const quant::TypeInfo* t = quant::type_info(uint32_t(type));
  return t ? t->name : "?";
}

GgufFile GgufFile::parse(const std::byte* bytes, size_t size, const std::string& source) {
  GgufFile g;
  g.source_ = source;
  Reader r(bytes, size, source);
  if (size < 4) fail(source, ": not a GGUF file (", size, " bytes, too short for the magic)");
  uint32_t magic = r.scalar<uint32_t>("magic");
  if (magic != kMagic) fail(source, ": not a GGUF file (bad magic; expected \"GGUF\")");
  g.version_ = r.scalar<uint32_t>("version");
  if (g.version_ != 2 && g.version_ != 3)
    fail(source, ": GGUF version ", g.version_, " is not supported (keel reads versions 2 and 3)");
  uint64_t n_tensors = r.scalar<uint64_t>("tensor count");
  uint64_t n_kv = r.scalar<uint64_t>("metadata count");
  // Each entry takes at least a key length, a type and a value of 1 byte.
  if (n_kv > r.left() / 13)
    fail(source, ": truncated or corrupt GGUF: metadata count ", n_kv, " does not fit in the file (", size, " bytes)");
  if (n_tensors > r.left() / 24)
    fail(source, ": truncated or corrupt GGUF: tensor count ", n_tensors, " does not fit in the file (", size,
         " bytes)");

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = r.string("metadata key #" + std::to_string(k));
    const std::string what = "metadata '" + key + "'";
    GgufType t = r.type(what + " (type)");
    GgufValue v = read_value(r, t, what);
    if (!g.kv_.emplace(key, std::move(v)).second) fail(source, ": ", what, " appears twice");
  }

  uint64_t alignment = kDefaultAlignment;
  if (const GgufValue* a = g.find("general.alignment")) {
    if (!a->is_int() || a->i <= 0 || (a->i & (a->i - 1)) != 0 || a->i > (1 << 20))
      fail(source, ": metadata 'general.alignment' must be a power of two, got ", a->is_int() ? a->i : -1);
    alignment = uint64_t(a->i);
  }

  g.tensors_.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor t;
    t.name = r.string("tensor #" + std::to_string(k) + " name");
    const std::string what = "tensor '" + t.name + "'";
    uint32_t n_dims = r.scalar<uint32_t>(what + " (n_dims)");
    if (n_dims == 0 || n_dims > kMaxDims) fail(source, ": ", what, ": ", n_dims, " dimensions (expected 1 to 4)");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = r.scalar<uint64_t>(what + " (dims)");
      if (dim == 0 || dim > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel) ||
          numel > uint64_t(INT64_MAX))
        fail(source, ": ", what, ": dimension ", d, " (", dim, ") is zero or overflows the element count");
      t.dims.push_back(int64_t(dim));
    }
    t.shape.assign(t.dims.rbegin(), t.dims.rend());
    uint32_t type = r.scalar<uint32_t>(what + " (type)");
    const quant::TypeInfo* info = quant::type_info(type);
    if (!info) fail(source, ": ", what, ": unknown element type ", type);
    if (!info->supported)
      fail(source, ": ", what, ": element type ", info->name,
           " is not supported (keel reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)");
    t.type = info->type;
    if (uint64_t(t.dims[0]) % info->block_elems != 0)
      fail(source, ": ", what, ": row length ", t.dims[0], " is not a multiple of the ", info->name, " block (",
           info->block_elems, ")");
    if (__builtin_mul_overflow(numel / info->block_elems, uint64_t(info->block_bytes), &t.nbytes))
      fail(source, ": ", what, ": ", numel, " elements of ", info->name, " overflow the byte count");
    t.offset = r.scalar<uint64_t>(what + " (offset)");
    if (t.offset % alignment != 0)
      fail(source, ": ", what, ": offset ", t.offset, " is not a multiple of the alignment (", alignment, ")");
    if (g.by_name_.count(t.name)) fail(source, ": ", what, " appears twice");
    g.by_name_[t.name] = g.tensors_.size();
    g.tensors_.push_back(std::move(t));
  }

  uint64_t data_start = (uint64_t(r.pos()) + alignment - 1) / alignment * alignment;
  if (data_start > size && !g.tensors_.empty())
    fail(source, ": truncated GGUF: the data section would start at ", data_start, " but the file has ", size,
         " bytes");
  const uint64_t data_size = data_start <= size ? size - data_start : 0;
  std::vector<size_t> order(g.tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (GgufTensor& t : g.tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail(source, ": tensor '", t.name, "': data [", t.offset, ", ", t.offset + t.nbytes,
           ") runs past the end of the file (data section is ", data_size, " bytes)");
    t.data = bytes + data_start + t.offset;
  }
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return g.tensors_[a].offset < g.tensors_[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensor& a = g.tensors_[order[k - 1]];
    const GgufTensor& b = g.tensors_[order[k]];
    if (b.offset < a.offset + a.nbytes)
      fail(source, ": tensors '", a.name, "' and '", b.name, "' overlap (offsets ", a.offset, " and ", b.offset, ")");
  }
  return g;
}

GgufFile GgufFile::open(const std::string& path) {
  auto file = std::make_shared<MappedFile>(path);
  GgufFile g = parse(file->data(), file->size(), path);
  g.file_ = std::move(file);
  return g;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_int()) fail(source_, ": metadata '", key, "' must be an integer, got ", type_word(v->type));
  return v->i;
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->is_float()) return v->f;
  if (v->is_int()) return double(v->i);
  fail(source_, ": metadata '", key, "' must be a number, got ", type_word(v->type));
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::String) fail(source_, ": metadata '", key, "' must be a string, got ", type_word(v->type));
  return v->s;
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::Bool && !v->is_int())
    fail(source_, ": metadata '", key, "' must be a bool, got ", type_word(v->type));
  return v->i != 0;
}

int64_t GgufFile::need_int(const std::string& key) const {
  auto v = get_int(key);
  if (!v) fail(source_, ": metadata '", key, "' is missing");
  return *v;
}

std::string GgufFile::need_string(const std::string& key) const {
  auto v = get_string(key);
  if (!v) fail(source_, ": metadata '", key, "' is missing");
  return *v;
}

bool looks_like_gguf(const std::string& path) {
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return true;
  if (!is_regular_file(path)) return false;
  std::ifstream f(path, std::ios::binary);
  char m[4] = {};
  f.read(m, 4);
  return f.gcount() == 4 && std::memcmp(m, "GGUF", 4) == 0;
}

}  // namespace keel::model
