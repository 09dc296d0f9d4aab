// Tokenizer: encode (added tokens -> normalizer -> pre-tokenizer -> BPE),
// decode (token bytes, decoder strip, lossy UTF-8), chat rendering and the
// streaming decoder. Loading lives in load.cpp.
#include "tokenizer/tokenizer.h"

#include <deque>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "jinja/template.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace keel::tokenizer {

Tokenizer Tokenizer::load(const std::string& dir) {
  Tokenizer t;
  t.impl_ = is_gguf_path(dir) ? load_impl_gguf(dir) : load_impl(dir);
  return t;
}

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

namespace {

const Tokenizer::Impl& get(const std::unique_ptr<Tokenizer::Impl>& impl) {
  KEEL_CHECK(impl, "tokenizer: used before Tokenizer::load");
  return *impl;
}

}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  const Impl& im = get(impl_);
  std::string cleaned;
  if (!utf8_valid(text)) {
    utf8_clean(text, cleaned, true);
    text = cleaned;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special) out = im.prefix_ids;

  auto cache_lock = im.bpe->try_lock_cache();
  bool use_cache = cache_lock.owns_lock();
  std::vector<Segment> segments, inner;
  std::deque<std::string> arena;
  std::vector<std::string_view> words;

  auto encode_plain = [&](std::string_view s, bool first) {
    words.clear();
    arena.clear();
    im.pre.split(s, first, arena, words);
    for (std::string_view w : words) im.bpe->encode_word(w, out, use_cache);
  };

  if (im.raw_added.empty()) segments.push_back(Segment{0, text.size(), -1});
  else im.raw_added.split(text, segments);
  for (const Segment& seg : segments) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    std::string_view raw = text.substr(seg.begin, seg.end - seg.begin);
    std::string norm;
    if (!im.normalizer.empty()) {
      norm = im.normalizer.apply(raw);
      raw = norm;
    }
    if (im.normalized_added.empty()) {
      encode_plain(raw, seg.begin == 0);
      continue;
    }
    inner.clear();
    im.normalized_added.split(raw, inner);
    for (const Segment& s : inner) {
      if (s.id >= 0) out.push_back(s.id);
      else encode_plain(raw.substr(s.begin, s.end - s.begin), seg.begin == 0 && s.begin == 0);
    }
  }
  if (add_special) out.insert(out.end(), im.suffix_ids.begin(), im.suffix_ids.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const Impl& im = get(impl_);
  std::string bytes;
  for (int32_t id : ids) {
    // Ids outside the vocabulary (e.g. the padding rows of a larger embedding
    // table) decode to nothing, as in Hugging Face tokenizers.
    if (!im.valid_id(id) || (skip_special && im.special(id))) continue;
    bytes += im.bytes[id];
  }
  for (int n = 0; n < im.strip_count && !im.strip_char.empty() && bytes.compare(0, im.strip_char.size(), im.strip_char) == 0; ++n)
    bytes.erase(0, im.strip_char.size());
  std::string out;
  out.reserve(bytes.size());
  utf8_clean(bytes, out, true);
  return out;
}

Kind Tokenizer::kind() const { return get(impl_).kind; }

std::string_view Tokenizer::kind_name() const {
  return kind() == Kind::ByteLevelBpe ? "byte-level BPE" : "SentencePiece BPE";
}

int64_t Tokenizer::vocab_size() const { return int64_t(get(impl_).pieces.size()); }

std::optional<int32_t> Tokenizer::bos_id() const { return get(impl_).bos; }

std::vector<int32_t> Tokenizer::eos_ids() const { return get(impl_).eos; }

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  const Impl& im = get(impl_);
  auto a = im.added_ids.find(token);
  if (a != im.added_ids.end()) return a->second;
  const StringIdMap& v = im.bpe->vocab();
  if (im.kind == Kind::ByteLevelBpe) {
    auto b = byte_level_to_bytes(token);
    if (!b) return std::nullopt;
    auto it = v.find(*b);
    if (it != v.end()) return it->second;
    return std::nullopt;
  }
  auto it = v.find(token);
  if (it != v.end()) return it->second;
  return std::nullopt;
}

std::string Tokenizer::token_text(int32_t id) const {
  const Impl& im = get(impl_);
  KEEL_CHECK(im.valid_id(id), "tokenizer: token id ", id, " is not in the vocabulary (size ", im.pieces.size(), ")");
  return im.pieces[id];
}

bool Tokenizer::is_special(int32_t id) const { return get(impl_).special(id); }

ChatFormat Tokenizer::chat_format() const { return get(impl_).chat; }

bool Tokenizer::has_chat_template() const { return get(impl_).chat_template != nullptr; }

const std::string& Tokenizer::chat_template_error() const { return get(impl_).chat_template_error; }

namespace {

std::string_view trim(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string Tokenizer::render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  return render_chat(messages, add_generation_prompt, nlohmann::ordered_json::object());
}

std::string Tokenizer::render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                   const nlohmann::ordered_json& extra) const {
  const Impl& im = get(impl_);
  KEEL_CHECK(extra.is_object() || extra.is_null(), "render_chat: extra template variables must be a JSON object, got ",
             extra.type_name());
  if (im.chat_template) {
    // The variables transformers' apply_chat_template gives a template.
    nlohmann::ordered_json vars = nlohmann::ordered_json::object();
    nlohmann::ordered_json& msgs = vars["messages"] = nlohmann::ordered_json::array();
    for (const ChatMessage& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
    vars["tools"] = nullptr;
    vars["documents"] = nullptr;
    vars["add_generation_prompt"] = add_generation_prompt;
    if (im.bos_text) vars["bos_token"] = *im.bos_text;
    if (im.eos_text) vars["eos_token"] = *im.eos_text;
    if (extra.is_object())
      for (const auto& [k, v] : extra.items()) vars[k] = v;
    return im.chat_template->render(vars);
  }
  std::string out;
  switch (im.chat) {
    case ChatFormat::ChatML:
      if (!im.default_system.empty() && (messages.empty() || messages.front().role != "system"))
        out += "<|im_start|>system\n" + im.default_system + "<|im_end|>\n";
      for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    case ChatFormat::Llama3:
      // Meta's template: BOS once, then each turn with its content trimmed.
      out += im.bos ? im.pieces[*im.bos] : std::string("<|begin_of_text|>");
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
        out += trim(m.content);
        out += "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::None:
      for (const ChatMessage& m : messages) out += m.content;
      break;
  }
  return out;
}

// ------------------------------------------------------------- StreamDecoder

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special), strip_left_(get(tok.impl_).strip_count) {}

std::string StreamDecoder::push(int32_t id) {
  const Tokenizer::Impl& im = *tok_.impl_;
  if (!im.valid_id(id) || (skip_special_ && im.special(id))) return {};
  std::string_view b = im.bytes[id];
  // The decoder's leading strip applies to the start of the whole text, so it
  // is consumed by the first bytes that arrive, whichever token they come from.
  while (strip_left_ > 0 && !b.empty()) {
    if (b.compare(0, im.strip_char.size(), im.strip_char) == 0) {
      b.remove_prefix(im.strip_char.size());
      --strip_left_;
    } else {
      strip_left_ = 0;
    }
  }
  pending_.append(b);
  std::string out;
  size_t used = utf8_clean(pending_, out, false);
  pending_.erase(0, used);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  utf8_clean(pending_, out, true);
  pending_.clear();
  return out;
}

}  // namespace keel::tokenizer
