// SPDX-License-Identifier: MIT
// nn/model_io.hpp: the real stories260K checkpoint against its golden config; the rotary row permutation
// against run.c's interleaved RoPE (random vectors and the real wq/wk); round trips through HF directories
// (single file, shards, F16/BF16) and llama2.c v0/v1/v2 files; and every kind of bad input, each of which must
// name the file and the field or tensor. llama2.c v0/v2 files are made by a small writer here that follows
// llama2.c's export.py independently of the library's own tables.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include "io/safetensors.hpp"
#include "nn/model_io.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace loralab;
using namespace loralab::nn;

namespace {

const fs::path models_dir = fs::path(LORALAB_SHARED_DIR) / "models";
const fs::path stories_bin = models_dir / "stories260K.bin";
constexpr std::uint64_t stories_bytes = 1'056'540;  // 28 + 4 * 264,128 (models/README.md)

const model_file& stories() {
  static const model_file m = read_llama2c(stories_bin);
  return m;
}

/// stories260K with its own classifier (random values), to cover the untied paths.
model_file stories_untied() {
  model_file m = stories();
  m.config.tie_word_embeddings = false;
  auto g = testing::rng(7);
  std::normal_distribution<float> n(0.0f, 0.1f);
  tensor_f32 cls{{m.config.vocab_size, m.config.dim}, {}};
  cls.data.resize(std::size_t(m.config.vocab_size) * std::size_t(m.config.dim));
  for (auto& v : cls.data) v = n(g);
  m.tensors.emplace("lm_head.weight", std::move(cls));
  return m;
}

std::size_t count_params(const model_file& m) {
  std::size_t n = 0;
  for (const auto& [name, t] : m.tensors) n += t.data.size();
  return n;
}

/// Same config, same tensor names and shapes, bitwise-equal floats.
void check_same(const model_file& got, const model_file& want) {
  BOOST_TEST(got.config == want.config);
  BOOST_TEST(got.tensors.size() == want.tensors.size());
  for (const auto& [name, t] : want.tensors) {
    const auto it = got.tensors.find(name);
    BOOST_TEST_REQUIRE((it != got.tensors.end()), "tensor " << name << " missing");
    BOOST_TEST((it->second.shape == t.shape), "tensor " << name << ": shape differs");
    BOOST_TEST_REQUIRE(it->second.data.size() == t.data.size());
    BOOST_TEST(std::memcmp(it->second.data.data(), t.data.data(), 4 * t.data.size()) == 0,
               "tensor " << name << ": values differ");
  }
}

/// f() must throw loralab::error whose message contains every needle.
void check_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    BOOST_ERROR("no error; expected one mentioning '" << needles.front() << "'");
  } catch (const loralab::error& e) {
    const std::string msg = e.what();
    BOOST_TEST_MESSAGE("error as expected: " << msg);
    for (const auto& n : needles) BOOST_TEST(msg.find(n) != std::string::npos, "'" << msg << "' lacks '" << n << "'");
  }
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  BOOST_TEST_REQUIRE(bool(in), "cannot open " << p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  BOOST_TEST_REQUIRE(bool(out), "cannot write " << p);
}
json read_json(const fs::path& p) { return json::parse(read_bytes(p)); }
void write_json(const fs::path& p, const json& j) { write_bytes(p, j.dump(2)); }

/// A safetensors file of F32 tensors (or the Stored type, converted element by element).
template <class Stored = float>
void write_tensors(const fs::path& p, const std::map<std::string, tensor_f32>& ts) {
  std::vector<std::vector<Stored>> keep;
  keep.reserve(ts.size());
  io::safetensors_writer w;
  for (const auto& [name, t] : ts) {
    keep.emplace_back(t.data.size());
    std::transform(t.data.begin(), t.data.end(), keep.back().begin(), [](float x) { return Stored(x); });
    w.add<Stored>(name, t.shape, std::span<const Stored>(keep.back()));
  }
  w.write(p);
}

/// An HF directory of stories260K to break in one place.
fs::path hf_copy(const testing::temp_dir& tmp, const model_file& m = stories()) {
  const fs::path dir = tmp.path / "hf";
  write_hf_dir(m, dir);
  return dir;
}

// ---- RoPE as the two conventions apply it ----------------------------------------------------------------

/// run.c: adjacent pairs (i, i+1) of every head rotate by pos * 10000^(-(i % D)/D).
std::vector<float> rope_run_c(std::vector<float> v, int D, int pos) {
  for (std::size_t i = 0; i < v.size(); i += 2) {
    const int j = int(i) % D;
    const float freq = 1.0f / std::pow(10000.0f, float(j) / float(D));
    const float val = float(pos) * freq, fcr = std::cos(val), fci = std::sin(val);
    const float v0 = v[i], v1 = v[i + 1];
    v[i] = v0 * fcr - v1 * fci;
    v[i + 1] = v0 * fci + v1 * fcr;
  }
  return v;
}

/// HF LlamaRotaryEmbedding + apply_rotary_pos_emb: x*cos + rotate_half(x)*sin, i pairs with i + D/2,
/// inv_freq[i] = 1 / 10000^(2i/D).
std::vector<float> rope_hf(const std::vector<float>& x, int D, int pos) {
  std::vector<float> out(x.size());
  const int h = D / 2;
  for (std::size_t base = 0; base < x.size(); base += std::size_t(D))
    for (int i = 0; i < h; ++i) {
      const float inv_freq = 1.0f / std::pow(10000.0f, float(2 * i) / float(D));
      const float a = float(pos) * inv_freq, c = std::cos(a), s = std::sin(a);
      const float x1 = x[base + i], x2 = x[base + i + h];
      out[base + i] = x1 * c + (-x2) * s;
      out[base + i + h] = x2 * c + x1 * s;
    }
  return out;
}

/// P v for a vector of n_heads heads (a (n_heads*D, 1) tensor through the library's permutation).
std::vector<float> permute_vector(const std::vector<float>& v, int n_heads) {
  tensor_f32 t{{std::int64_t(v.size()), 1}, v};
  permute_rotary_rows(t, n_heads);
  return t.data;
}

/// W x for W (N, K) row-major, summed in index order.
std::vector<float> matvec(const std::vector<float>& W, const std::vector<float>& x) {
  std::vector<float> y(W.size() / x.size());
  for (std::size_t r = 0; r < y.size(); ++r) {
    float s = 0;
    for (std::size_t k = 0; k < x.size(); ++k) s += W[r * x.size() + k] * x[k];
    y[r] = s;
  }
  return y;
}

// ---- llama2.c writers after export.py (v0 legacy_export, v2 version2_export) ------------------------------

struct byte_buffer {
  std::string bytes;
  template <class T>
  void put(const T& v) {
    bytes.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  template <class T>
  void put(const std::vector<T>& v) {
    bytes.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  void pad_to(std::size_t n) { bytes.resize(n, '\0'); }
};

std::string layer_name(int l, const char* suffix) { return "model.layers." + std::to_string(l) + "." + suffix; }

/// A tensor's values in llama2.c's layout: q/k rows back to adjacent pairs.
std::vector<float> meta_values(const model_file& m, const std::string& name) {
  tensor_f32 t = m.tensors.at(name);
  if (name.ends_with("q_proj.weight")) unpermute_rotary_rows(t, m.config.n_heads);
  if (name.ends_with("k_proj.weight")) unpermute_rotary_rows(t, m.config.n_kv_heads);
  return t.data;
}

constexpr const char* layer_matrices[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                          "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                          "mlp.gate_proj.weight",    "mlp.down_proj.weight",
                                          "mlp.up_proj.weight"};  // wq wk wv wo w1 w2 w3

std::string llama2c_v0_bytes(const model_file& m) {
  const llama_config& c = m.config;
  byte_buffer b;
  for (int v : {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                c.tie_word_embeddings ? c.vocab_size : -c.vocab_size, c.max_seq_len})
    b.put(std::int32_t(v));
  b.put(meta_values(m, "model.embed_tokens.weight"));
  for (int l = 0; l < c.n_layers; ++l) b.put(meta_values(m, layer_name(l, "input_layernorm.weight")));
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < c.n_layers; ++l) b.put(meta_values(m, layer_name(l, layer_matrices[i])));
  for (int l = 0; l < c.n_layers; ++l) b.put(meta_values(m, layer_name(l, "post_attention_layernorm.weight")));
  for (int i = 4; i < 7; ++i)
    for (int l = 0; l < c.n_layers; ++l) b.put(meta_values(m, layer_name(l, layer_matrices[i])));
  b.put(meta_values(m, "model.norm.weight"));
  const int D = c.head_dim();
  std::vector<float> fcr, fci;  // freq_cis_real / imag (seq_len, D/2)
  for (int p = 0; p < c.max_seq_len; ++p)
    for (int i = 0; i < D / 2; ++i) {
      const float a = float(p) / std::pow(10000.0f, float(2 * i) / float(D));
      fcr.push_back(std::cos(a));
      fci.push_back(std::sin(a));
    }
  b.put(fcr);
  b.put(fci);
  if (!c.tie_word_embeddings) b.put(meta_values(m, "lm_head.weight"));
  return b.bytes;
}

struct q8_tensor {
  std::vector<std::int8_t> q;
  std::vector<float> scale;  // one per group
};
/// export.py quantize_q80: scale = max|w| / 127 per group, q = round(w / scale) (torch.round: half to even).
q8_tensor quantize_q80(const std::vector<float>& w, int gs) {
  q8_tensor t{std::vector<std::int8_t>(w.size()), std::vector<float>(w.size() / std::size_t(gs))};
  for (std::size_t g = 0; g < t.scale.size(); ++g) {
    float wmax = 0;
    for (int i = 0; i < gs; ++i) wmax = std::max(wmax, std::abs(w[g * gs + i]));
    t.scale[g] = wmax / 127.0f;
    for (int i = 0; i < gs; ++i)
      t.q[g * gs + i] = t.scale[g] == 0 ? 0 : std::int8_t(std::nearbyint(w[g * gs + i] / t.scale[g]));
  }
  return t;
}

/// The v2 bytes, and each quantized tensor (llama2.c layout) keyed by HF name.
std::pair<std::string, std::map<std::string, q8_tensor>> llama2c_v2_bytes(const model_file& m, int gs) {
  const llama_config& c = m.config;
  byte_buffer b;
  b.put(std::uint32_t(0x616b3432));
  b.put(std::int32_t(2));
  for (int v : {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len})
    b.put(std::int32_t(v));
  b.put(std::uint8_t(c.tie_word_embeddings ? 1 : 0));
  b.put(std::int32_t(gs));
  b.pad_to(256);
  for (int l = 0; l < c.n_layers; ++l) b.put(meta_values(m, layer_name(l, "input_layernorm.weight")));
  for (int l = 0; l < c.n_layers; ++l) b.put(meta_values(m, layer_name(l, "post_attention_layernorm.weight")));
  b.put(meta_values(m, "model.norm.weight"));
  std::vector<std::string> names = {"model.embed_tokens.weight"};
  for (const char* suffix : layer_matrices)
    for (int l = 0; l < c.n_layers; ++l) names.push_back(layer_name(l, suffix));
  if (!c.tie_word_embeddings) names.push_back("lm_head.weight");
  std::map<std::string, q8_tensor> quantized;
  for (const auto& name : names) {
    q8_tensor t = quantize_q80(meta_values(m, name), gs);
    b.put(t.q);
    b.put(t.scale);
    quantized.emplace(name, std::move(t));
  }
  return {b.bytes, quantized};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(model_io)

// ---- the real checkpoint ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(stories260K_config_matches_golden) {
  const json g = read_json(models_dir / "stories260K.golden.json").at("config");
  llama_config want;
  want.dim = g.at("dim");
  want.hidden_dim = g.at("hidden_dim");
  want.n_layers = g.at("n_layers");
  want.n_heads = g.at("n_heads");
  want.n_kv_heads = g.at("n_kv_heads");
  want.vocab_size = g.at("vocab_size");
  want.max_seq_len = g.at("seq_len");
  want.rms_norm_eps = g.at("rms_norm_eps").get<float>();
  want.rope_theta = g.at("rope_theta").get<float>();
  want.tie_word_embeddings = g.at("shared_classifier");

  BOOST_TEST(fs::file_size(stories_bin) == stories_bytes);
  const model_file& m = stories();
  BOOST_TEST(m.config == want);
  BOOST_TEST(m.config.head_dim() == g.at("head_size").get<int>());
  BOOST_TEST(m.config.kv_dim() == g.at("kv_dim").get<int>());
  BOOST_TEST(count_params(m) == 260'032u);  // embedding 32,768 + 5 x 45,440 + final norm 64
  BOOST_TEST(m.tensors.size() == 1 + 9 * 5 + 1u);
  BOOST_TEST(!m.tensors.contains("lm_head.weight"));
  check_same(load_model_file(stories_bin), m);
}

// ---- the rotary permutation ------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(permutation_turns_run_c_rope_into_rotate_half) {
  auto g = testing::rng(1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_int_distribution<int> position(0, 511);
  // (heads, head_dim): stories260K's q and k, and a wider head.
  for (const auto& [H, D] : {std::pair{8, 8}, std::pair{4, 8}, std::pair{3, 64}}) {
    std::vector<float> v(std::size_t(H * D));
    for (auto& x : v) x = n(g);
    for (int pos : {0, 1, position(g), 511}) {
      // q_hf = P q_meta, and rotate-half RoPE of q_hf is P (run.c RoPE of q_meta), exactly.
      const std::vector<float> want = permute_vector(rope_run_c(v, D, pos), H);
      const std::vector<float> got = rope_hf(permute_vector(v, H), D, pos);
      BOOST_TEST(got == want, boost::test_tools::per_element());
    }
  }
}

BOOST_AUTO_TEST_CASE(permutation_on_real_wq_wk_layer0) {
  const model_file& m = stories();
  const llama_config& c = m.config;
  const std::int64_t C = c.dim, V = c.vocab_size, L = c.n_layers, KV = c.kv_dim();
  // The raw rows from the v0 file: header, embedding, rms_att (L, C), then wq (L, C, C), wk (L, KV, C).
  const auto raw = [&](std::int64_t float_offset, std::int64_t count) {
    std::ifstream in(stories_bin, std::ios::binary);
    in.seekg(28 + 4 * float_offset);
    std::vector<float> out(static_cast<std::size_t>(count));
    in.read(reinterpret_cast<char*>(out.data()), 4 * count);
    BOOST_TEST_REQUIRE(in.gcount() == 4 * count);
    return out;
  };
  const std::int64_t wq_at = V * C + L * C, wk_at = wq_at + L * C * C;
  const struct {
    const char* name;
    std::vector<float> meta;
    int heads;
  } cases[] = {{"model.layers.0.self_attn.q_proj.weight", raw(wq_at, C * C), c.n_heads},
               {"model.layers.0.self_attn.k_proj.weight", raw(wk_at, KV * C), c.n_kv_heads}};

  auto g = testing::rng(2);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (const auto& t : cases) {
    BOOST_TEST_CONTEXT(t.name) {
      const tensor_f32& hf = m.tensors.at(t.name);
      std::vector<float> x(static_cast<std::size_t>(C));
      for (auto& v : x) v = n(g);
      const std::vector<float> q_meta = matvec(t.meta, x), q_hf = matvec(hf.data, x);
      BOOST_TEST(q_hf == permute_vector(q_meta, t.heads), boost::test_tools::per_element());
      for (int pos : {0, 7, 300}) {
        const std::vector<float> want = permute_vector(rope_run_c(q_meta, c.head_dim(), pos), t.heads);
        BOOST_TEST(rope_hf(q_hf, c.head_dim(), pos) == want, boost::test_tools::per_element());
      }
      tensor_f32 back = hf;
      unpermute_rotary_rows(back, t.heads);
      BOOST_TEST(back.data == t.meta);  // the loader permuted exactly once
      permute_rotary_rows(back, t.heads);
      BOOST_TEST(back.data == hf.data);  // permute after unpermute is the identity
    }
  }
  tensor_f32 r{{12, 5}, {}};
  for (int i = 0; i < 60; ++i) r.data.push_back(float(i));
  tensor_f32 p = r;
  permute_rotary_rows(p, 3);  // D = 4: rows 0 2 1 3 | 4 6 5 7 | 8 10 9 11
  BOOST_TEST(p.data[1 * 5] == r.data[2 * 5]);
  BOOST_TEST(p.data[6 * 5] == r.data[5 * 5]);
  BOOST_TEST(p.data != r.data);
  unpermute_rotary_rows(p, 3);
  BOOST_TEST(p.data == r.data);
}

// ---- round trips -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(hf_dir_round_trip) {
  testing::temp_dir tmp;
  const fs::path dir = tmp.path / "new" / "stories260K-hf";  // created, parents too
  write_hf_dir(stories(), dir);
  check_same(read_hf_dir(dir), stories());
  check_same(load_model_file(dir), stories());

  const json j = read_json(dir / "config.json");
  BOOST_TEST(j.at("architectures") == json::array({"LlamaForCausalLM"}));
  BOOST_TEST(j.at("model_type") == "llama");
  BOOST_TEST(j.at("hidden_act") == "silu");
  BOOST_TEST(j.at("hidden_size") == 64);
  BOOST_TEST(j.at("intermediate_size") == 172);
  BOOST_TEST(j.at("num_hidden_layers") == 5);
  BOOST_TEST(j.at("num_attention_heads") == 8);
  BOOST_TEST(j.at("num_key_value_heads") == 4);
  BOOST_TEST(j.at("head_dim") == 8);
  BOOST_TEST(j.at("vocab_size") == 512);
  BOOST_TEST(j.at("max_position_embeddings") == 512);
  BOOST_TEST(j.at("rms_norm_eps") == 1e-5);  // the shortest decimal of 1e-5f, so the text reads 1e-05
  BOOST_TEST(j.at("rope_theta") == 10000.0);
  BOOST_TEST(j.at("tie_word_embeddings") == true);
  BOOST_TEST(j.at("bos_token_id") == 1);
  BOOST_TEST(j.at("eos_token_id") == 2);
  BOOST_TEST(j.at("torch_dtype") == "float32");
  BOOST_TEST(j.at("attention_bias") == false);
  BOOST_TEST(j.at("mlp_bias") == false);
  BOOST_TEST(j.at("rope_scaling").is_null());
  BOOST_TEST(read_bytes(dir / "config.json").find("\"rms_norm_eps\": 1e-05") != std::string::npos);

  const auto st = io::safetensors_file::open(dir / "model.safetensors");
  BOOST_TEST(st.tensors().size() == stories().tensors.size());
  BOOST_TEST(!st.contains("lm_head.weight"));
  BOOST_TEST(st.metadata().at("format") == "pt");
  for (const auto& t : st.tensors()) BOOST_TEST((t.type == io::dtype::F32), t.name);

  // Untied: lm_head.weight is written and read back.
  const model_file untied = stories_untied();
  write_hf_dir(untied, tmp.path / "untied");
  BOOST_TEST(read_json(tmp.path / "untied" / "config.json").at("tie_word_embeddings") == false);
  check_same(read_hf_dir(tmp.path / "untied"), untied);

  // A tied model whose file still stores lm_head.weight (= the embedding) reads as tied.
  const fs::path dup = hf_copy(tmp);
  auto ts = stories().tensors;
  ts.emplace("lm_head.weight", ts.at("model.embed_tokens.weight"));
  write_tensors(dup / "model.safetensors", ts);
  check_same(read_hf_dir(dup), stories());
}

BOOST_AUTO_TEST_CASE(llama2c_v1_round_trip) {
  testing::temp_dir tmp;
  for (const model_file& m : {stories(), stories_untied()}) {
    BOOST_TEST_CONTEXT("tied " << m.config.tie_word_embeddings) {
      const fs::path bin = tmp.path / "v1.bin";
      write_llama2c_v1(m, bin);
      BOOST_TEST(fs::file_size(bin) == 256 + 4 * count_params(m));
      check_same(read_llama2c(bin), m);
      check_same(load_model_file(bin), m);
    }
  }
  // Fields llama2.c cannot store are refused, not dropped.
  model_file m = stories();
  m.config.rope_theta = 500000.0f;
  check_error([&] { write_llama2c_v1(m, tmp.path / "theta.bin"); }, {"theta.bin", "rope_theta"});
  BOOST_TEST(!fs::exists(tmp.path / "theta.bin"));
}

BOOST_AUTO_TEST_CASE(llama2c_v0_written_like_export_py) {
  // The library has no v0 writer; this one rebuilds stories260K.bin byte for byte (RoPE tables included),
  // and its untied form exercises the negative vocab_size flag.
  testing::temp_dir tmp;
  const std::string v0 = llama2c_v0_bytes(stories());
  BOOST_TEST(v0.size() == stories_bytes);
  const std::string real = read_bytes(stories_bin);
  // The writer's RoPE tables need not match the stored ones bit for bit (cos/sin may differ in the last ulp),
  // so only the header and the weights are compared; those prove the reader's offsets and the permutation.
  const std::size_t weights_end = 28 + 4 * 260'032;
  BOOST_TEST((v0.compare(0, weights_end, real, 0, weights_end) == 0));

  const model_file untied = stories_untied();
  write_bytes(tmp.path / "untied_v0.bin", llama2c_v0_bytes(untied));
  check_same(read_llama2c(tmp.path / "untied_v0.bin"), untied);
}

BOOST_AUTO_TEST_CASE(llama2c_v2_q8_reads_within_half_a_step) {
  testing::temp_dir tmp;
  constexpr int gs = 64;
  for (const model_file& m : {stories(), stories_untied()}) {
    BOOST_TEST_CONTEXT("tied " << m.config.tie_word_embeddings) {
      const auto [bytes, quantized] = llama2c_v2_bytes(m, gs);
      const fs::path bin = tmp.path / "v2.bin";
      write_bytes(bin, bytes);
      const model_file got = read_llama2c(bin);
      BOOST_TEST(got.config == m.config);
      BOOST_TEST(got.tensors.size() == m.tensors.size());
      for (const auto& [name, want] : m.tensors) {
        BOOST_TEST_CONTEXT(name) {
          const auto q = quantized.find(name);
          if (q == quantized.end()) {  // norms stay fp32
            BOOST_TEST(got.tensors.at(name).data == want.data);
            continue;
          }
          // Compared in llama2.c's layout, where the groups are.
          const std::vector<float> orig = meta_values(m, name), deq = meta_values(got, name);
          std::size_t bad = 0, inexact = 0;
          for (std::size_t i = 0; i < orig.size(); ++i) {
            const float s = q->second.scale[i / gs];
            // |round(w/s) - w/s| <= 1/2 plus the rounding of w/s (<= 127 eps) and of q*s (<= 127 eps) in units of s.
            const float bound = s * (0.5f + 256 * std::numeric_limits<float>::epsilon());
            bad += std::abs(deq[i] - orig[i]) > bound;
            inexact += deq[i] != float(q->second.q[i]) * s;  // runq.c: x = q * scale
          }
          BOOST_TEST(bad == 0u);
          BOOST_TEST(inexact == 0u);
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(hf_sharded_index) {
  testing::temp_dir tmp;
  const fs::path dir = hf_copy(tmp);
  fs::remove(dir / "model.safetensors");
  std::map<std::string, tensor_f32> shard1, shard2;
  json weight_map = json::object();
  std::size_t total = 0;
  for (const auto& [name, t] : stories().tensors) {
    const bool first = name == "model.embed_tokens.weight" || name.starts_with("model.layers.0.") ||
                       name.starts_with("model.layers.1.");
    (first ? shard1 : shard2).emplace(name, t);
    weight_map[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    total += 4 * t.data.size();
  }
  write_tensors(dir / "model-00001-of-00002.safetensors", shard1);
  write_tensors(dir / "model-00002-of-00002.safetensors", shard2);
  write_json(dir / "model.safetensors.index.json", {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
  check_same(read_hf_dir(dir), stories());
  check_same(load_model_file(dir), stories());

  // A tensor listed under the wrong shard.
  json moved = weight_map;
  moved["model.norm.weight"] = "model-00001-of-00002.safetensors";
  write_json(dir / "model.safetensors.index.json", {{"weight_map", moved}});
  check_error([&] { read_hf_dir(dir); }, {"model.safetensors.index.json", "model.norm.weight"});

  // An index that points at a shard that is not there.
  json missing = weight_map;
  missing["model.norm.weight"] = "model-00003-of-00002.safetensors";
  write_json(dir / "model.safetensors.index.json", {{"weight_map", missing}});
  check_error([&] { read_hf_dir(dir); },
              {"model.safetensors.index.json", "model-00003-of-00002.safetensors", "model.norm.weight"});

  // An index without weight_map, and one that is not JSON.
  write_json(dir / "model.safetensors.index.json", {{"metadata", json::object()}});
  check_error([&] { read_hf_dir(dir); }, {"model.safetensors.index.json", "weight_map"});
  write_bytes(dir / "model.safetensors.index.json", "{\"weight_map\": {");
  check_error([&] { read_hf_dir(dir); }, {"model.safetensors.index.json", "JSON"});
}

using half_types = std::tuple<Eigen::half, Eigen::bfloat16>;
BOOST_AUTO_TEST_CASE_TEMPLATE(hf_half_precision_reads_as_float, T, half_types) {
  testing::temp_dir tmp;
  const fs::path dir = hf_copy(tmp);
  write_tensors<T>(dir / "model.safetensors", stories().tensors);
  const model_file got = read_hf_dir(dir);
  model_file want = stories();
  for (auto& [name, t] : want.tensors)
    for (auto& v : t.data) v = static_cast<float>(T(v));  // exactly the stored 16-bit value
  check_same(got, want);
}

// ---- bad input -------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(bad_llama2c_files) {
  testing::temp_dir tmp;
  const std::string real = read_bytes(stories_bin);
  const fs::path bin = tmp.path / "bad.bin";

  write_bytes(bin, real.substr(0, real.size() - 3));
  check_error([&] { read_llama2c(bin); }, {"bad.bin", "1056537", "1056540", "truncated"});
  write_bytes(bin, real + std::string(4, '\0'));
  check_error([&] { read_llama2c(bin); }, {"bad.bin", "1056544", "1056540", "trailing"});
  write_bytes(bin, real.substr(0, 20));
  check_error([&] { read_llama2c(bin); }, {"bad.bin", "too short"});
  std::string zero_dim = real;
  std::memset(zero_dim.data(), 0, 4);
  write_bytes(bin, zero_dim);
  check_error([&] { read_llama2c(bin); }, {"bad.bin", "dim"});

  write_llama2c_v1(stories(), tmp.path / "v1.bin");
  const std::string v1 = read_bytes(tmp.path / "v1.bin");
  std::string bad_magic = v1;
  bad_magic[0] ^= 0x01;
  write_bytes(bin, bad_magic);
  check_error([&] { read_llama2c(bin); }, {"bad.bin", "magic"});
  std::string bad_version = v1;
  bad_version[4] = 7;
  write_bytes(bin, bad_version);
  check_error([&] { read_llama2c(bin); }, {"bad.bin", "version 7"});
  write_bytes(bin, v1.substr(0, v1.size() - 4));
  check_error([&] { read_llama2c(bin); }, {"bad.bin", "v1", "truncated"});
  std::string bad_flag = v1;
  bad_flag[36] = 2;
  write_bytes(bin, bad_flag);
  check_error([&] { read_llama2c(bin); }, {"bad.bin", "shared_classifier"});

  auto [v2, unused] = llama2c_v2_bytes(stories(), 64);
  std::int32_t gs = 48;  // 64 divides every tensor; 48 does not divide the 64-value rows
  std::memcpy(v2.data() + 37, &gs, 4);
  write_bytes(bin, v2);
  check_error([&] { read_llama2c(bin); }, {"bad.bin", "group_size"});

  check_error([&] { read_llama2c(tmp.path / "absent.bin"); }, {"absent.bin"});
  check_error([&] { load_model_file(tmp.path / "absent"); }, {"absent"});
}

BOOST_AUTO_TEST_CASE(bad_hf_config) {
  const struct {
    const char* what;
    std::function<void(json&)> edit;
    std::vector<std::string> needles;
  } cases[] = {
      {"missing hidden_size", [](json& j) { j.erase("hidden_size"); }, {"hidden_size", "missing"}},
      {"missing rms_norm_eps", [](json& j) { j.erase("rms_norm_eps"); }, {"rms_norm_eps"}},
      {"GPT-2", [](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; }, {"architectures", "GPT2LMHeadModel"}},
      {"heads do not divide", [](json& j) { j["num_attention_heads"] = 7; }, {"num_attention_heads", "hidden_size"}},
      {"kv heads do not divide", [](json& j) { j["num_key_value_heads"] = 3; }, {"num_key_value_heads"}},
      {"string size", [](json& j) { j["intermediate_size"] = "172"; }, {"intermediate_size", "integer"}},
      {"gelu", [](json& j) { j["hidden_act"] = "gelu"; }, {"hidden_act", "gelu"}},
      {"rope scaling", [](json& j) { j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}}; }, {"rope_scaling"}},
      {"attention bias", [](json& j) { j["attention_bias"] = true; }, {"attention_bias"}},
      {"mlp bias", [](json& j) { j["mlp_bias"] = true; }, {"mlp_bias"}},
      {"head_dim", [](json& j) { j["head_dim"] = 16; }, {"head_dim"}},
      {"untied without lm_head", [](json& j) { j.erase("tie_word_embeddings"); },
       {"tie_word_embeddings", "lm_head.weight", "model.safetensors"}},
      {"vocab_size mismatch", [](json& j) { j["vocab_size"] = 500; },
       {"model.safetensors", "model.embed_tokens.weight", "shape"}},
  };
  testing::temp_dir tmp;
  const fs::path dir = hf_copy(tmp);
  const json good = read_json(dir / "config.json");
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.what) {
      json j = good;
      c.edit(j);
      write_json(dir / "config.json", j);
      std::vector<std::string> needles = c.needles;
      needles.push_back("config.json");
      check_error([&] { read_hf_dir(dir); }, needles);
    }
  }
  // Accepted variations: no architectures, no num_key_value_heads (= heads, MHA), no rope_theta.
  json j = good;
  j.erase("architectures");
  j.erase("rope_theta");
  write_json(dir / "config.json", j);
  check_same(read_hf_dir(dir), stories());

  write_bytes(dir / "config.json", "{\"hidden_size\": 64,");
  check_error([&] { read_hf_dir(dir); }, {"config.json", "JSON"});
  // Hostile JSON: nesting 10^5 deep is refused while parsing (dump or copy would recurse once per level), a number
  // beyond a double is invalid JSON, not an escaping nlohmann exception.
  write_bytes(dir / "config.json", "{\"rope_scaling\": " + std::string(100000, '[') + std::string(100000, ']') + "}");
  check_error([&] { read_hf_dir(dir); }, {"config.json", "nested deeper than the limit of 512 levels"});
  write_bytes(dir / "config.json", "{\"rms_norm_eps\": 1e400}");
  check_error([&] { read_hf_dir(dir); }, {"config.json", "not valid JSON", "1e400"});
  fs::remove(dir / "config.json");
  check_error([&] { read_hf_dir(dir); }, {"config.json"});
}

BOOST_AUTO_TEST_CASE(bad_hf_tensors) {
  using tensors = std::map<std::string, tensor_f32>;
  const struct {
    const char* what;
    std::function<void(tensors&)> edit;
    std::vector<std::string> needles;
  } cases[] = {
      {"wrong shape", [](tensors& ts) { ts.at("model.layers.2.self_attn.q_proj.weight").shape = {32, 128}; },
       {"model.layers.2.self_attn.q_proj.weight", "shape", "[32, 128]", "[64, 64]"}},
      {"missing", [](tensors& ts) { ts.erase("model.layers.4.mlp.up_proj.weight"); },
       {"model.layers.4.mlp.up_proj.weight", "missing"}},
      {"extra", [](tensors& ts) { ts.emplace("model.layers.0.self_attn.q_proj.bias", tensor_f32{{64}, std::vector<float>(64)}); },
       {"model.layers.0.self_attn.q_proj.bias", "unexpected"}},
      {"tied but a different lm_head",
       [](tensors& ts) { ts.emplace("lm_head.weight", tensor_f32{{512, 64}, std::vector<float>(512 * 64)}); },
       {"lm_head.weight", "tie_word_embeddings"}},
  };
  testing::temp_dir tmp;
  const fs::path dir = hf_copy(tmp);
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.what) {
      tensors ts = stories().tensors;
      c.edit(ts);
      write_tensors(dir / "model.safetensors", ts);
      std::vector<std::string> needles = c.needles;
      needles.push_back("model.safetensors");
      check_error([&] { read_hf_dir(dir); }, needles);
    }
  }
  // Integer weights are refused by name.
  io::safetensors_writer w;
  const std::vector<std::int8_t> q(64);
  w.add<std::int8_t>("model.norm.weight", {64}, std::span<const std::int8_t>(q));
  w.write(dir / "model.safetensors");
  check_error([&] { read_hf_dir(dir); }, {"model.safetensors", "model.norm.weight", "I8"});

  fs::remove(dir / "model.safetensors");
  check_error([&] { read_hf_dir(dir); }, {"model.safetensors.index.json"});
  check_error([&] { read_hf_dir(tmp.path / "nowhere"); }, {"nowhere"});
}

BOOST_AUTO_TEST_SUITE_END()
