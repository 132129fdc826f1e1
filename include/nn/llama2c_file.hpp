// SPDX-License-Identifier: MIT
#pragma once
// llama2.c checkpoints (shared/models/README.md) in and out of the neutral model_file form (nn/config.hpp):
// legacy v0 (run.c), v1 (fp32) and v2 (Q8_0, dequantized on load) are read; v1 is written.
// llama2.c stores wq/wk in Meta's adjacent-pair RoPE layout; they are permuted to HF's rotate-half layout on
// load (permute_rotary_rows, here too) and back on export. The reader checks the file size against the header
// before reading, ends with validate_model_file, and every error names the file and the field or tensor at fault.
// The few helpers every model-file format uses (JSON files, shortest decimals, shape strings, float dtypes)
// live here too.
#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "io/json.hpp"
#include "io/safetensors.hpp"
#include "nn/config.hpp"

namespace loralab::nn {

static_assert(std::endian::native == std::endian::little, "llama2.c checkpoints are little-endian");

// ---- helpers every model-file format uses (llama2.c here, nn/hf_dir.hpp, nn/meta_dir.hpp) ----------------

namespace detail {

using json = nlohmann::json;

inline json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot open");
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) fail(path.string(), ": read error");
  return io::parse_json(text, path.string());
}

/// The shortest decimal that reads back as f, as a double, so that a JSON file says 1e-05, not 9.99999974e-06.
inline double shortest_double(float f) {
  char buf[64];
  const auto end = std::to_chars(buf, buf + sizeof buf, f).ptr;
  double d = 0;
  std::from_chars(buf, end, d);
  return d;
}

/// "[2, 3]"
inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// torch's name of a float dtype ("float32"), as config.json and bnb's quant_state spell it.
inline std::string torch_dtype_name(io::dtype t) {
  LORALAB_CHECK(t == io::dtype::F32 || t == io::dtype::F16 || t == io::dtype::BF16,
                "model weights are written as F32, F16 or BF16, not ", io::dtype_name(t));
  return t == io::dtype::F32 ? "float32" : t == io::dtype::F16 ? "float16" : "bfloat16";
}

/// v as the bytes of `type`, rounded to nearest even (F16/BF16).
inline std::vector<std::byte> float_bytes(std::span<const float> v, io::dtype type) {
  std::vector<std::byte> out(v.size() * io::dtype_size(type));
  const auto put = [&]<class T>(std::type_identity<T>) {
    for (std::size_t i = 0; i < v.size(); ++i) {
      const T h(v[i]);
      std::memcpy(out.data() + sizeof(T) * i, &h, sizeof(T));
    }
  };
  if (torch_dtype_name(type) == "float32") std::memcpy(out.data(), v.data(), out.size());  // (it refuses non-floats)
  else if (type == io::dtype::F16) put(std::type_identity<Eigen::half>{});
  else put(std::type_identity<Eigen::bfloat16>{});
  return out;
}

/// v rounded to `type` and back: the values a model stored in that dtype holds.
inline std::vector<float> round_to(std::span<const float> v, io::dtype type) {
  std::vector<float> out(v.begin(), v.end());
  if (type == io::dtype::F16) for (float& x : out) x = static_cast<float>(Eigen::half(x));
  if (type == io::dtype::BF16) for (float& x : out) x = static_cast<float>(Eigen::bfloat16(x));
  return out;
}

}  // namespace detail

// ---- rotary row permutation -----------------------------------------------------------------------------

namespace detail {

/// Checks that w is (n_heads*D, K) with D even; returns D.
inline std::int64_t rotary_head_dim(const tensor_f32& w, int n_heads, const char* fn) {
  LORALAB_CHECK(w.shape.size() == 2, fn, ": expects a 2-d (n_heads*D, K) tensor, got ", w.shape.size(), " dims");
  LORALAB_CHECK(n_heads > 0 && w.shape[0] % n_heads == 0, fn, ": ", w.shape[0], " rows do not split into ", n_heads,
                " heads");
  const std::int64_t D = w.shape[0] / n_heads;
  LORALAB_CHECK(D % 2 == 0, fn, ": head_dim ", D, " must be even");
  LORALAB_CHECK(w.data.size() == static_cast<std::size_t>(w.shape[0] * w.shape[1]), fn, ": ", w.data.size(),
                " values for shape (", w.shape[0], ", ", w.shape[1], ")");
  return D;
}

/// Moves rows so that row h*D + half*(D/2) + i of the result is row h*D + 2*i + half of w (inverse: the other way).
inline void permute_rotary(tensor_f32& w, int n_heads, bool inverse) {
  const std::int64_t D = rotary_head_dim(w, n_heads, inverse ? "unpermute_rotary_rows" : "permute_rotary_rows");
  const std::int64_t K = w.shape[1];
  std::vector<float> out(w.data.size());
  for (std::int64_t h = 0; h < n_heads; ++h)
    for (std::int64_t half = 0; half < 2; ++half)
      for (std::int64_t i = 0; i < D / 2; ++i) {
        const std::int64_t hf = h * D + half * (D / 2) + i, meta = h * D + 2 * i + half;
        const std::int64_t to = inverse ? meta : hf, from = inverse ? hf : meta;
        std::copy_n(w.data.begin() + from * K, K, out.begin() + to * K);
      }
  w.data = std::move(out);
}

}  // namespace detail

/// Row permutation Meta/llama2.c (adjacent-pair RoPE) -> HF rotate-half, for a (n_heads*D, K) wq or
/// (n_kv_heads*D, K) wk: new row h*D + half*(D/2) + i  <-  old row h*D + 2*i + half (HF's
/// convert_llama_weights_to_hf `permute`). Then q_hf = P q_meta, and rotate-half RoPE on q_hf equals P applied
/// to run.c's interleaved RoPE on q_meta.
inline void permute_rotary_rows(tensor_f32& w, int n_heads) { detail::permute_rotary(w, n_heads, false); }

/// The inverse of permute_rotary_rows: HF rotate-half rows -> Meta/llama2.c adjacent-pair rows.
inline void unpermute_rotary_rows(tensor_f32& w, int n_heads) { detail::permute_rotary(w, n_heads, true); }

// ---- llama2.c checkpoints -------------------------------------------------------------------------------

namespace detail {

inline constexpr std::uint32_t llama2c_magic = 0x616b3432;  // "24ka" on disk
inline constexpr std::size_t llama2c_header_bytes = 256;     // v1 and v2
inline constexpr std::size_t llama2c_v0_header_bytes = 7 * 4;

/// One kind of llama2.c tensor: its name in run.c, the HF name it becomes, and whether it is stored once per layer.
/// The shape comes from expected_tensors; rope_heads says whose heads permute its rows (0: none).
enum class l2c { embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis, wcls };

struct l2c_row {
  l2c kind;
  std::string_view name;       // run.c's name, for messages
  std::string_view hf_suffix;  // "model.layers.{l}." + suffix when per_layer, else the full HF name
  bool per_layer;
};
inline constexpr std::array<l2c_row, 13> l2c_table = {{
    {l2c::embedding, "token_embedding_table", "model.embed_tokens.weight", false},
    {l2c::rms_att, "rms_att_weight", "input_layernorm.weight", true},
    {l2c::wq, "wq", "self_attn.q_proj.weight", true},
    {l2c::wk, "wk", "self_attn.k_proj.weight", true},
    {l2c::wv, "wv", "self_attn.v_proj.weight", true},
    {l2c::wo, "wo", "self_attn.o_proj.weight", true},
    {l2c::rms_ffn, "rms_ffn_weight", "post_attention_layernorm.weight", true},
    {l2c::w1, "w1", "mlp.gate_proj.weight", true},
    {l2c::w2, "w2", "mlp.down_proj.weight", true},
    {l2c::w3, "w3", "mlp.up_proj.weight", true},
    {l2c::rms_final, "rms_final_weight", "model.norm.weight", false},
    {l2c::freq_cis, "freq_cis_real/imag", "", false},  // v0 only, skipped: run.c recomputes RoPE
    {l2c::wcls, "wcls", "lm_head.weight", false},
}};
constexpr bool l2c_table_in_enum_order() {
  for (std::size_t i = 0; i < l2c_table.size(); ++i)
    if (static_cast<std::size_t>(l2c_table[i].kind) != i) return false;
  return true;
}
static_assert(l2c_table_in_enum_order(), "l2c_table rows must follow the order of enum class l2c");

inline const l2c_row& row_of(l2c k) { return l2c_table[static_cast<std::size_t>(k)]; }

/// Storage order of each version (the classifier is only present when untied; v2's first three are fp32).
inline constexpr std::array<l2c, 13> l2c_order_v0 = {l2c::embedding, l2c::rms_att, l2c::wq,  l2c::wk, l2c::wv,
                                                     l2c::wo,        l2c::rms_ffn, l2c::w1,  l2c::w2, l2c::w3,
                                                     l2c::rms_final, l2c::freq_cis, l2c::wcls};
inline constexpr std::array<l2c, 12> l2c_order_v1 = {l2c::rms_att, l2c::rms_ffn, l2c::rms_final, l2c::embedding,
                                                     l2c::wq,      l2c::wk,      l2c::wv,        l2c::wo,
                                                     l2c::w1,      l2c::w2,      l2c::w3,        l2c::wcls};
inline constexpr std::size_t l2c_v2_fp32_count = 3;  // v2 uses l2c_order_v1: norms fp32, the rest Q8_0

inline std::string hf_name(l2c k, int layer) {
  const l2c_row& r = row_of(k);
  return r.per_layer ? "model.layers." + std::to_string(layer) + "." + std::string(r.hf_suffix)
                     : std::string(r.hf_suffix);
}

inline std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

/// Shape of one instance of kind k (per layer for per-layer kinds). Sizes fit int64 because the config holds
/// ints (three int factors at most).
inline std::vector<std::int64_t> l2c_shape(l2c k, const llama_config& c) {
  const std::int64_t C = c.dim, F = c.hidden_dim, V = c.vocab_size, KV = c.kv_dim();
  switch (k) {
    case l2c::embedding: case l2c::wcls: return {V, C};
    case l2c::rms_att: case l2c::rms_ffn: case l2c::rms_final: return {C};
    case l2c::wq: case l2c::wo: return {C, C};
    case l2c::wk: case l2c::wv: return {KV, C};
    case l2c::w1: case l2c::w3: return {F, C};
    case l2c::w2: return {C, F};
    case l2c::freq_cis: return {2, c.max_seq_len, c.head_dim() / 2};
  }
  return {};
}

/// Heads whose rows get the rotary permutation (0: not a rotary projection).
inline int rope_heads(l2c k, const llama_config& c) {
  return k == l2c::wq ? c.n_heads : k == l2c::wk ? c.n_kv_heads : 0;
}

/// Whether kind k is stored in a file of this config and version.
inline bool l2c_present(l2c k, const llama_config& c, int version) {
  if (k == l2c::wcls) return !c.tie_word_embeddings;
  if (k == l2c::freq_cis) return version == 0;
  return true;
}

/// a * b + c, or nullopt when it overflows 64 bits (a header can claim any sizes).
inline std::optional<std::uint64_t> mul_add(std::uint64_t a, std::uint64_t b, std::uint64_t c) {
  std::uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r)) return std::nullopt;
  return r;
}

/// Bytes of one instance of k: fp32, or (v2 quantized) int8 values plus one fp32 scale per group.
inline std::optional<std::uint64_t> l2c_bytes(l2c k, const llama_config& c, bool q8, int group_size) {
  const auto n = static_cast<std::uint64_t>(numel(l2c_shape(k, c)));  // <= 2^62: two int factors at most
  return q8 ? mul_add(4, n / static_cast<std::uint64_t>(group_size), n) : mul_add(4, n, 0);
}

/// Sequential reads from a checkpoint whose size has already been checked; short reads are I/O errors.
struct bin_reader {
  std::string where;
  std::ifstream in;
  std::uint64_t offset = 0;

  explicit bin_reader(const std::filesystem::path& path) : where(path.string()), in(path, std::ios::binary) {
    if (!in) fail(where, ": cannot open");
  }
  void read(void* dst, std::uint64_t bytes, std::string_view what) {
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
    if (static_cast<std::uint64_t>(in.gcount()) != bytes)
      fail(where, ": read error in ", what, " at offset ", offset, " (", bytes, " bytes wanted, ", in.gcount(),
           " read)");
    offset += bytes;
  }
  void skip(std::uint64_t bytes, std::string_view what) {
    in.seekg(static_cast<std::streamoff>(bytes), std::ios::cur);
    if (!in) fail(where, ": cannot skip ", what, " at offset ", offset);
    offset += bytes;
  }
};

/// The config a llama2.c header describes (the fixed parts: eps 1e-5, theta 10000, as run.c).
inline llama_config llama2c_config(const std::array<std::int32_t, 7>& h, bool tied) {
  llama_config c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = h[5];
  c.max_seq_len = h[6];
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tie_word_embeddings = tied;
  return c;
}

inline std::string header_string(const llama_config& c) {
  return "dim=" + std::to_string(c.dim) + " hidden_dim=" + std::to_string(c.hidden_dim) +
         " n_layers=" + std::to_string(c.n_layers) + " n_heads=" + std::to_string(c.n_heads) +
         " n_kv_heads=" + std::to_string(c.n_kv_heads) + " vocab_size=" + std::to_string(c.vocab_size) +
         " seq_len=" + std::to_string(c.max_seq_len) + (c.tie_word_embeddings ? " shared classifier" : " own classifier");
}

/// Reads the tensors of `order` (after the header) into m, checking the file size first.
template <std::size_t N>
void read_llama2c_body(bin_reader& r, model_file& m, std::uint64_t file_size, std::uint64_t header_bytes,
                       const std::array<l2c, N>& order, int version, int group_size) {
  const llama_config& c = m.config;
  const auto q8 = [&](std::size_t pos) { return version == 2 && pos >= l2c_v2_fp32_count; };
  std::uint64_t expect = header_bytes;
  for (std::size_t pos = 0; pos < order.size(); ++pos) {
    const l2c k = order[pos];
    if (!l2c_present(k, c, version)) continue;
    if (q8(pos)) {
      const std::int64_t n = numel(l2c_shape(k, c));
      LORALAB_CHECK(n % group_size == 0, r.where, ": ", row_of(k).name, " has ", n, " values",
                    row_of(k).per_layer ? " per layer" : "", ", not a multiple of the header field 'group_size' ",
                    group_size);
    }
    const std::optional<std::uint64_t> bytes = l2c_bytes(k, c, q8(pos), group_size);
    const std::optional<std::uint64_t> sum =
        bytes ? mul_add(row_of(k).per_layer ? std::uint64_t(c.n_layers) : 1, *bytes, expect) : bytes;
    if (!sum) fail(r.where, ": the header (", header_string(c), ") implies more than 2^64 bytes");
    expect = *sum;
  }
  if (expect != file_size)
    fail(r.where, ": file is ", file_size, " bytes, but a llama2.c v", version, " checkpoint with header (",
         header_string(c), ") is ", expect, " bytes (", file_size < expect ? "truncated" : "trailing bytes", ")");

  for (std::size_t pos = 0; pos < order.size(); ++pos) {
    const l2c k = order[pos];
    if (!l2c_present(k, c, version)) continue;
    const int copies = row_of(k).per_layer ? c.n_layers : 1;
    if (k == l2c::freq_cis) {
      r.skip(*l2c_bytes(k, c, false, 0), row_of(k).name);
      continue;
    }
    for (int l = 0; l < copies; ++l) {
      tensor_f32 t;
      t.shape = l2c_shape(k, c);
      const auto n = static_cast<std::size_t>(numel(t.shape));
      t.data.resize(n);
      if (q8(pos)) {
        // Q8_0 (llama2.c export.py version2_export): n int8 values, then n/group_size fp32 scales.
        std::vector<std::int8_t> q(n);
        std::vector<float> s(n / static_cast<std::size_t>(group_size));
        r.read(q.data(), n, row_of(k).name);
        r.read(s.data(), 4 * s.size(), row_of(k).name);
        for (std::size_t i = 0; i < n; ++i) t.data[i] = static_cast<float>(q[i]) * s[i / std::size_t(group_size)];
      } else {
        r.read(t.data.data(), 4 * n, row_of(k).name);
      }
      if (const int heads = rope_heads(k, c)) permute_rotary_rows(t, heads);
      m.tensors.emplace(hf_name(k, l), std::move(t));
    }
  }
}

}  // namespace detail

/// Reads a llama2.c checkpoint: legacy v0 (run.c), v1 (fp32) or v2 (Q8_0, dequantized: int8 * group scale).
/// wq/wk rows are permuted to the rotate-half layout; a shared classifier gives tie_word_embeddings = true and no
/// lm_head.weight. rms_norm_eps = 1e-5 and rope_theta = 10000 (run.c's constants), max_seq_len = header seq_len.
inline model_file read_llama2c(const std::filesystem::path& bin) {
  using namespace detail;
  const std::string where = bin.string();
  std::error_code ec;
  const std::uint64_t size = std::filesystem::file_size(bin, ec);
  if (ec) fail(where, ": cannot read the size: ", ec.message());
  bin_reader r(bin);
  if (size < llama2c_v0_header_bytes) fail(where, ": file is ", size, " bytes, too short for a llama2.c header");

  std::uint32_t magic = 0;
  r.read(&magic, 4, "header");
  model_file m;
  if (magic == llama2c_magic) {
    if (size < llama2c_header_bytes) fail(where, ": file is ", size, " bytes, too short for the 256-byte v1/v2 header");
    std::array<std::byte, llama2c_header_bytes> hb{};
    std::memcpy(hb.data(), &magic, 4);
    r.read(hb.data() + 4, llama2c_header_bytes - 4, "header");
    std::int32_t version = 0;
    std::array<std::int32_t, 7> h{};
    std::memcpy(&version, hb.data() + 4, 4);
    std::memcpy(h.data(), hb.data() + 8, 28);
    const auto shared = static_cast<std::uint8_t>(hb[36]);
    if (version != 1 && version != 2)
      fail(where, ": unsupported llama2.c checkpoint version ", version, " (header field 'version'; 1 and 2 are read)");
    LORALAB_CHECK(shared <= 1, where, ": header field 'shared_classifier' is ", int(shared), ", not 0 or 1");
    std::int32_t group_size = 0;
    if (version == 2) {
      std::memcpy(&group_size, hb.data() + 37, 4);  // packed right after the flag byte (struct.pack('i'))
      LORALAB_CHECK(group_size > 0, where, ": header field 'group_size' is ", group_size, ", must be > 0");
    }
    m.config = llama2c_config(h, shared == 1);
    m.config.validate(where + " (header)");
    read_llama2c_body(r, m, size, llama2c_header_bytes, l2c_order_v1, version, group_size);
  } else {
    std::array<std::int32_t, 7> h{};
    std::memcpy(h.data(), &magic, 4);
    r.read(h.data() + 1, 24, "header");
    try {
      // The sign of vocab_size is the classifier flag: positive = shared with the embedding.
      LORALAB_CHECK(h[5] != 0 && h[5] != std::numeric_limits<std::int32_t>::min(), where,
                    ": header field 'vocab_size' is ", h[5]);
      const bool tied = h[5] > 0;
      h[5] = std::abs(h[5]);
      m.config = llama2c_config(h, tied);
      m.config.validate(where + " (header)");
      read_llama2c_body(r, m, size, llama2c_v0_header_bytes, l2c_order_v0, 0, 0);
    } catch (const loralab::error& e) {
      fail(e.what(), " [no v1/v2 magic 0x616b3432 at offset 0 (found 0x", [&] {
        char buf[9];
        std::snprintf(buf, sizeof buf, "%08x", magic);
        return std::string(buf);
      }(), "), so the file was read as a legacy v0 checkpoint]");
    }
  }
  validate_model_file(m, where);
  return m;
}

/// Writes a llama2.c v1 (fp32) checkpoint: wq/wk rows back in the adjacent-pair layout, the classifier stored
/// only when untied. The format fixes rms_norm_eps = 1e-5 and rope_theta = 10000, so other values are refused
/// rather than silently lost. Atomic (temp file + rename).
inline void write_llama2c_v1(const model_file& m, const std::filesystem::path& bin) {
  using namespace detail;
  const std::string where = bin.string();
  validate_model_file(m, where);
  const llama_config& c = m.config;
  LORALAB_CHECK(c.rms_norm_eps == 1e-5f, where, ": llama2.c fixes rms_norm_eps at 1e-5, the model has ",
                c.rms_norm_eps);
  LORALAB_CHECK(c.rope_theta == 10000.0f, where, ": llama2.c fixes rope_theta at 10000, the model has ", c.rope_theta);

  std::array<std::byte, llama2c_header_bytes> hb{};
  const std::int32_t version = 1;
  const std::array<std::int32_t, 7> h = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                                         c.max_seq_len};
  std::memcpy(hb.data(), &llama2c_magic, 4);
  std::memcpy(hb.data() + 4, &version, 4);
  std::memcpy(hb.data() + 8, h.data(), 28);
  hb[36] = std::byte{c.tie_word_embeddings ? std::uint8_t(1) : std::uint8_t(0)};

  atomic_file out(bin);
  out.write(hb);
  for (const l2c k : l2c_order_v1) {
    if (!l2c_present(k, c, 1)) continue;
    for (int l = 0; l < (row_of(k).per_layer ? c.n_layers : 1); ++l) {
      const tensor_f32& t = m.tensors.at(hf_name(k, l));
      if (const int heads = rope_heads(k, c)) {
        tensor_f32 meta = t;
        unpermute_rotary_rows(meta, heads);
        out.write(std::as_bytes(std::span(meta.data)));
      } else {
        out.write(std::as_bytes(std::span(t.data)));
      }
    }
  }
  out.commit();
}

}  // namespace loralab::nn
