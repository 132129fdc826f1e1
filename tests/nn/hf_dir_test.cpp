// SPDX-License-Identifier: MIT
// nn/hf_dir.hpp: HF directories written in F32/F16/BF16, sharded as transformers' save_pretrained shards (file
// names, index, greedy split, oversize tensors alone, stale files removed), pre-quantized bitsandbytes 4-bit
// directories (bnb's keys, quantization_config, statistics split across shards, dequantized values equal to
// blockwise_tensor's dequantize bit for bit), transformers 5 configs, and hostile directories, whose errors must
// name the file and the field or tensor at fault.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include "io/safetensors.hpp"
#include "nn/model_io.hpp"
#include "quant/quant.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace loralab;
using namespace loralab::nn;
namespace q = loralab::quant;

namespace {

const model_file& stories() {
  static const model_file m = read_llama2c(fs::path(LORALAB_SHARED_DIR) / "models" / "stories260K.bin");
  return m;
}

/// stories260K with its own classifier (random values), to cover the untied paths.
model_file stories_untied() {
  model_file m = stories();
  m.config.tie_word_embeddings = false;
  auto g = testing::rng(11);
  std::normal_distribution<float> n(0.0f, 0.1f);
  tensor_f32 cls{{m.config.vocab_size, m.config.dim}, std::vector<float>(std::size_t(m.config.vocab_size) * m.config.dim)};
  for (auto& v : cls.data) v = n(g);
  m.tensors.emplace("lm_head.weight", std::move(cls));
  return m;
}

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

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}
void write_json(const fs::path& p, const json& j) { std::ofstream(p) << j.dump(2); }
std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Bitwise-equal floats, name by name, and the same config.
void check_values(const model_file& got, const model_file& want) {
  BOOST_TEST(got.config == want.config);
  BOOST_TEST_REQUIRE(got.tensors.size() == want.tensors.size());
  for (const auto& [name, t] : want.tensors) {
    BOOST_TEST_REQUIRE(got.tensors.contains(name), name);
    const tensor_f32& g = got.tensors.at(name);
    BOOST_TEST((g.shape == t.shape), name);
    BOOST_TEST_REQUIRE(g.data.size() == t.data.size());
    BOOST_TEST(std::memcmp(g.data.data(), t.data.data(), 4 * t.data.size()) == 0, name << ": values differ");
  }
}

/// m with every value rounded to `type` (what a file of that dtype holds).
model_file rounded(model_file m, io::dtype type) {
  for (auto& [name, t] : m.tensors) t.data = detail::round_to(t.data, type);
  return m;
}

std::set<std::string> files_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

using float_types = std::tuple<std::integral_constant<io::dtype, io::dtype::F32>,
                               std::integral_constant<io::dtype, io::dtype::F16>,
                               std::integral_constant<io::dtype, io::dtype::BF16>>;

}  // namespace

BOOST_AUTO_TEST_SUITE(hf_dir)

// ---- float directories -------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE_TEMPLATE(float_dtypes_round_trip, D, float_types) {
  constexpr io::dtype type = D::value;
  testing::temp_dir tmp;
  for (const model_file& m : {stories(), stories_untied()})
    for (const std::uint64_t shard : {std::uint64_t(0), std::uint64_t(5'000'000'000), std::uint64_t(30'000)}) {
      BOOST_TEST_CONTEXT(io::dtype_name(type) << " tied " << m.config.tie_word_embeddings << " max_shard " << shard) {
        const fs::path dir = tmp.path / "d";
        fs::remove_all(dir);
        write_hf_dir(m, dir, {type, shard});
        const model_file back = read_hf_dir(dir);
        check_values(back, rounded(m, type));
        BOOST_TEST(back.quantization == "");
        const json c = read_json(dir / "config.json");
        BOOST_TEST(c.at("dtype") == detail::torch_dtype_name(type));
        BOOST_TEST(c.at("torch_dtype") == detail::torch_dtype_name(type));
        BOOST_TEST(!c.contains("quantization_config"));
        const bool sharded = shard == 30'000;
        BOOST_TEST(fs::exists(dir / "model.safetensors") == !sharded);
        BOOST_TEST(fs::exists(dir / "model.safetensors.index.json") == sharded);
        for (const auto& f : files_in(dir)) {
          if (!f.ends_with(".safetensors")) continue;
          const auto st = io::safetensors_file::open(dir / f);
          BOOST_TEST(st.metadata().at("format") == "pt");
          for (const auto& t : st.tensors()) BOOST_TEST((t.type == type), f << ": " << t.name);
        }
      }
    }
  // Rounding is to nearest, ties to even, as torch's .to(dtype): 1 + 2^-11 is halfway between two halves.
  const std::vector<float> v = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -65520.0f};
  const std::vector<float> f16 = detail::round_to(v, io::dtype::F16), bf16 = detail::round_to(v, io::dtype::BF16);
  BOOST_TEST(f16[0] == 1.0f);
  BOOST_TEST(f16[1] == 1.0f + 4 * 0x1p-11f);
  BOOST_TEST(bf16[2] == 1.0f);
  BOOST_TEST(bf16[3] == 1.0f + 4 * 0x1p-8f);
  BOOST_TEST(std::isinf(f16[4]));  // past the largest half, as torch
}

BOOST_AUTO_TEST_CASE(shards_as_transformers_writes_them) {
  testing::temp_dir tmp;
  const fs::path dir = tmp.path / "sharded";
  constexpr std::uint64_t max = 40'000;  // the embedding and the MLP weights (44,032 bytes) alone
  write_hf_dir(stories(), dir, {io::dtype::F32, max});
  const json index = read_json(dir / "model.safetensors.index.json");
  BOOST_TEST(read_text(dir / "model.safetensors.index.json").ends_with("}\n"));
  BOOST_TEST(index.at("metadata").at("total_parameters") == 260'032);
  BOOST_TEST(index.at("metadata").at("total_size") == 4 * 260'032);
  const json& wm = index.at("weight_map");
  BOOST_TEST(wm.size() == stories().tensors.size());

  // Shard names and contents against the index, in transformers 5's order, greedy, each <= max but the embedding.
  std::vector<std::string> order;
  for (const auto& [name, t] : stories().tensors) order.push_back(name);
  std::stable_sort(order.begin(), order.end(), detail::dot_natural_less);
  const std::size_t n = files_in(dir).size() - 2;  // config.json, the index
  std::map<std::string, std::uint64_t> size;
  std::vector<std::string> seen_order;
  for (std::size_t i = 1; i <= n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i, n);
    BOOST_TEST_REQUIRE(fs::exists(dir / name), name);
    const auto st = io::safetensors_file::open(dir / name);
    for (const auto& t : st.tensors()) {
      BOOST_TEST(wm.at(t.name) == name);
      size[name] += t.bytes.size();
    }
    BOOST_TEST(std::count_if(wm.begin(), wm.end(), [&](const json& v) { return v == name; }) == long(st.tensors().size()));
    BOOST_TEST((size[name] <= max || st.tensors().size() == 1), name);  // a larger tensor alone
  }
  // huggingface_hub 2.4's split_torch_state_dict_into_shards(max_shard_size=40000) on the same tensors in
  // transformers 5.24's order: an oversize tensor's shard comes before the one it interrupts.
  BOOST_TEST(n == 24u);
  const std::map<std::string, int> hub = {{"model.embed_tokens.weight", 1},           {"model.layers.0.mlp.down_proj.weight", 2},
                                          {"model.layers.0.mlp.up_proj.weight", 4},   {"model.layers.0.input_layernorm.weight", 5},
                                          {"model.layers.0.self_attn.q_proj.weight", 9}, {"model.layers.1.input_layernorm.weight", 9},
                                          {"model.layers.4.mlp.up_proj.weight", 22},  {"model.norm.weight", 24}};
  for (const auto& [name, k] : hub) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05d-of-00024.safetensors", k);
    BOOST_TEST(wm.at(name) == want, name);
  }
  // Greedy: the first tensor of each shard would not have fit in the shard before it.
  for (std::size_t k = 1; k + 1 < order.size(); ++k) {
    const std::string& prev = wm.at(order[k - 1]), & cur = wm.at(order[k]);
    if (prev != cur)
      BOOST_TEST(size[prev] + 4 * stories().tensors.at(order[k]).data.size() > max, order[k]);
  }
  check_values(read_hf_dir(dir), stories());

  // A later save in one file removes the shards and the index, and the other way round (as save_pretrained).
  fs::copy_file(dir / "config.json", dir / "notes.txt");
  write_hf_dir(stories(), dir, {io::dtype::F32, 0});
  BOOST_TEST((files_in(dir) == std::set<std::string>{"config.json", "model.safetensors", "notes.txt"}));
  write_hf_dir(stories(), dir, {io::dtype::F16, 200'000});
  BOOST_TEST(!fs::exists(dir / "model.safetensors"));
  BOOST_TEST(fs::exists(dir / "model-00002-of-00003.safetensors"));
  check_values(read_hf_dir(dir), rounded(stories(), io::dtype::F16));
}

BOOST_AUTO_TEST_CASE(shard_plan_is_huggingface_hubs) {
  // split_torch_state_dict_into_shards([a 3, BIG 10, c 3, d 5], 8): BIG alone when met, then [a, c], [d].
  const std::vector<std::byte> buf(10);
  const auto e = [&](const char* name, std::size_t bytes) {
    return detail::hf_entry{name, io::dtype::U8, {std::int64_t(bytes)}, std::span(buf.data(), bytes)};
  };
  const std::vector<detail::hf_entry> entries = {e("a", 3), e("BIG", 10), e("c", 3), e("d", 5), e("z", 0)};
  std::vector<std::vector<std::string>> got;
  for (const auto& s : detail::plan_shards(entries, 8)) {
    got.emplace_back();
    for (const auto* x : s) got.back().push_back(x->name);
  }
  BOOST_TEST((got == std::vector<std::vector<std::string>>{{"BIG"}, {"a", "c"}, {"d", "z"}}));
  BOOST_TEST(detail::plan_shards(entries, 0).size() == 1u);
  BOOST_TEST(detail::plan_shards(entries, 100).size() == 1u);
}

BOOST_AUTO_TEST_CASE(dot_natural_order) {
  const auto less = detail::dot_natural_less;
  BOOST_TEST(less("model.layers.2.mlp.up_proj.weight", "model.layers.10.input_layernorm.weight"));
  BOOST_TEST(less("model.layers.9.x", "model.norm.weight"));
  BOOST_TEST(less("model.embed_tokens.weight", "model.layers.0.x"));
  BOOST_TEST(less("a.weight", "a.weight.absmax"));                 // a prefix first
  BOOST_TEST(less("w.absmax", "w.nested_absmax"));
  BOOST_TEST(less("w.quant_map", "w.quant_state.bitsandbytes__nf4"));
  BOOST_TEST(less("x.shard_2", "x.shard_11"));                     // trailing digits by value
  BOOST_TEST(less("x.shard", "x.shard_0"));
  BOOST_TEST(less("x.7", "x.a"));                                  // numbers before words
  BOOST_TEST(less("x.007", "x.8"));
  BOOST_TEST(!less("x.007", "x.7"));
  BOOST_TEST(!less("x.7", "x.007"));                               // equal values
  BOOST_TEST(less("x.99999999999999999999999", "x.100000000000000000000000"));  // past 64 bits
  BOOST_TEST(!less("lm_head.weight", "lm_head.weight"));
}

// ---- pre-quantized directories -----------------------------------------------------------------------------

using four_bit = std::tuple<q::nf4<64>, q::fp4<64>, q::double_quant<q::nf4<64>>, q::double_quant<q::fp4<64>>, q::nf4<128>>;

BOOST_AUTO_TEST_CASE_TEMPLATE(four_bit_round_trip, S, four_bit) {
  testing::temp_dir tmp;
  const std::string label = std::string(S::quant_type) + (S::block_size != 64 ? "-b" + std::to_string(S::block_size) : "") +
                            (S::nested ? "+dq" : "");
  // (dtype, max shard): F32 in one file; F16 and BF16 in ~2 kB shards, which split weights from their statistics.
  for (const auto& [type, shard] : {std::pair{io::dtype::F32, std::uint64_t(0)}, std::pair{io::dtype::F16, std::uint64_t(2'000)},
                                    std::pair{io::dtype::BF16, std::uint64_t(2'000)}})
    for (const model_file& m : {stories(), stories_untied()}) {
      BOOST_TEST_CONTEXT(label << " " << io::dtype_name(type) << " shard " << shard << " tied " << m.config.tie_word_embeddings) {
        const fs::path dir = tmp.path / "q";
        fs::remove_all(dir);
        write_hf_dir_4bit<S>(m, dir, {type, shard});
        const model_file back = read_hf_dir(dir);
        BOOST_TEST(back.quantization == label);
        BOOST_TEST(back.config == m.config);
        BOOST_TEST_REQUIRE(back.tensors.size() == m.tensors.size());
        for (const auto& [name, t] : m.tensors) {
          const std::vector<float> x = detail::round_to(t.data, type);
          std::vector<float> want = x;
          if (detail::is_bnb_linear_weight(name)) {
            // what bnb's dequantize_4bit gives: the float32 product, rounded once to the recorded dtype
            const auto qt = q::blockwise_tensor<S>::template quantize<float>(x, t.shape);
            const auto through = [&]<class T>(std::type_identity<T>) {
              std::vector<T> v(x.size());
              qt.template dequantize<T>(v);
              std::transform(v.begin(), v.end(), want.begin(), [](T y) { return float(y); });
            };
            if (type == io::dtype::F16) through(std::type_identity<Eigen::half>{});
            else if (type == io::dtype::BF16) through(std::type_identity<Eigen::bfloat16>{});
            else qt.template dequantize<float>(want);
          }
          BOOST_TEST(std::memcmp(back.tensors.at(name).data.data(), want.data(), 4 * want.size()) == 0, name);
        }

        const json c = read_json(dir / "config.json");
        const json& qc = c.at("quantization_config");
        BOOST_TEST(qc.at("quant_method") == "bitsandbytes");
        BOOST_TEST(qc.at("load_in_4bit") == true);
        BOOST_TEST(qc.at("_load_in_4bit") == true);
        BOOST_TEST(qc.at("load_in_8bit") == false);
        BOOST_TEST(qc.at("bnb_4bit_quant_type") == std::string(S::quant_type));
        BOOST_TEST(qc.at("bnb_4bit_use_double_quant") == S::nested);
        BOOST_TEST(qc.at("bnb_4bit_compute_dtype") == "float32");
        BOOST_TEST(qc.at("bnb_4bit_quant_storage") == "uint8");
        BOOST_TEST(qc.at("llm_int8_skip_modules").is_null());
        BOOST_TEST(qc.at("llm_int8_threshold") == 6.0);
        BOOST_TEST(c.at("dtype") == detail::torch_dtype_name(type));

        // bnb's keys for the 7 linears of every layer, float for the rest; quant_state records the dtype.
        std::map<std::string, const io::tensor_view*> all;
        std::vector<io::safetensors_file> files;
        for (const auto& f : files_in(dir))
          if (f.ends_with(".safetensors")) files.push_back(io::safetensors_file::open(dir / f));
        for (const auto& f : files)
          for (const auto& t : f.tensors()) all[t.name] = &t;
        std::size_t linears = 0;
        for (const auto& [name, t] : m.tensors) {
          if (!detail::is_bnb_linear_weight(name)) {
            BOOST_TEST((all.at(name)->type == type), name);
            BOOST_TEST(!all.contains(name + ".absmax"));
            continue;
          }
          ++linears;
          BOOST_TEST((all.at(name)->type == io::dtype::U8));
          BOOST_TEST((all.at(name + ".absmax")->type == (S::nested ? io::dtype::U8 : io::dtype::F32)));
          BOOST_TEST(all.contains(name + ".quant_map"));
          BOOST_TEST(all.contains(name + ".nested_absmax") == S::nested);
          const io::tensor_view& blob = *all.at(q::quant_state_key(name, S::quant_type));
          const std::string text(reinterpret_cast<const char*>(blob.bytes.data()), blob.bytes.size());
          BOOST_TEST(text.find("\"dtype\": \"" + detail::torch_dtype_name(type) + "\"") != std::string::npos, text);
        }
        BOOST_TEST(linears == 35u);  // 7 x 5 layers; embedding, norms and lm_head stay float
        if (shard != 0) {  // some weight sits in another shard than one of its statistics
          const json wm = read_json(dir / "model.safetensors.index.json").at("weight_map");
          bool split = false;
          for (const auto& [k, v] : wm.items())
            if (detail::is_bnb_linear_weight(k)) split |= wm.at(k + ".absmax") != v || wm.at(q::quant_state_key(k, S::quant_type)) != v;
          BOOST_TEST(split);
        }
      }
    }
}

// ---- configs and hostile directories ----------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(transformers5_rope_parameters) {
  testing::temp_dir tmp;
  const fs::path dir = tmp.path / "hf";
  write_hf_dir(stories(), dir);
  json c = read_json(dir / "config.json");
  c.erase("rope_theta");
  c.erase("rope_scaling");
  c["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "default"}};
  write_json(dir / "config.json", c);
  BOOST_TEST(read_hf_dir(dir).config.rope_theta == 500000.0f);
  c["rope_parameters"]["rope_type"] = "llama3";
  write_json(dir / "config.json", c);
  check_error([&] { read_hf_dir(dir); }, {"config.json", "rope_parameters", "llama3"});
}

BOOST_AUTO_TEST_CASE(hostile_quantized_dirs) {
  testing::temp_dir tmp;
  using S = q::double_quant<q::nf4<64>>;
  const fs::path plain = tmp.path / "plain", quantized = tmp.path / "nf4", sharded = tmp.path / "nf4-sharded";
  write_hf_dir(stories(), plain);
  write_hf_dir_4bit<S>(stories(), quantized);
  write_hf_dir_4bit<S>(stories(), sharded, {io::dtype::F32, 20'000});
  const json qcfg = read_json(quantized / "config.json");
  const auto with_config = [&](const fs::path& dir, const std::function<void(json&)>& edit) {
    json c = qcfg;
    edit(c);
    write_json(dir / "config.json", c);
  };

  // quantization_config, but float tensors
  with_config(plain, [](json&) {});
  check_error([&] { read_hf_dir(plain); }, {"config.json", "quantization_config", "model.safetensors", "none"});
  // 4-bit tensors, but no quantization_config
  with_config(quantized, [](json& c) { c.erase("quantization_config"); });
  check_error([&] { read_hf_dir(quantized); }, {"model.safetensors", "bitsandbytes 4-bit weight", "config.json", "quantization_config"});
  // the config names another scheme than the tensors hold
  with_config(quantized, [](json& c) { c["quantization_config"]["bnb_4bit_quant_type"] = "fp4"; });
  check_error([&] { read_hf_dir(quantized); }, {"model.safetensors", "nf4+dq", "config.json", "fp4"});
  with_config(quantized, [](json& c) { c["quantization_config"]["bnb_4bit_use_double_quant"] = false; });
  check_error([&] { read_hf_dir(quantized); }, {"model.safetensors", "nf4+dq", "without double quantization"});
  // other quantization methods, and 8-bit bitsandbytes
  with_config(quantized, [](json& c) { c["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}}; });
  check_error([&] { read_hf_dir(quantized); }, {"config.json", "quantization_config", "gptq"});
  with_config(quantized, [](json& c) { c["quantization_config"]["load_in_4bit"] = false, c["quantization_config"]["load_in_8bit"] = true; });
  check_error([&] { read_hf_dir(quantized); }, {"config.json", "quantization_config", "load_in_4bit"});
  with_config(quantized, [](json& c) { c["quantization_config"]["bnb_4bit_quant_type"] = "int4"; });
  check_error([&] { read_hf_dir(quantized); }, {"config.json", "bnb_4bit_quant_type", "int4"});
  with_config(quantized, [](json&) {});
  BOOST_TEST(read_hf_dir(quantized).quantization == "nf4+dq");

  // A float linear weight among the 4-bit ones: refused unless llm_int8_skip_modules lists modules.
  {
    const fs::path mixed = tmp.path / "mixed";
    fs::copy(quantized, mixed);
    const auto f = io::safetensors_file::open(quantized / "model.safetensors");
    const std::string w = "model.layers.1.self_attn.v_proj.weight";
    io::safetensors_writer out;
    out.set_metadata("format", "pt");
    for (const auto& t : f.tensors())
      if (!t.name.starts_with(w + ".") && t.name != w) out.add(t.name, t.type, t.shape, t.bytes);
    const tensor_f32& v = stories().tensors.at(w);
    out.add<float>(w, v.shape, std::span<const float>(v.data));
    out.write(mixed / "model.safetensors");
    check_error([&] { read_hf_dir(mixed); }, {"model.safetensors", w, "F32", "llm_int8_skip_modules"});
    with_config(mixed, [](json& c) { c["quantization_config"]["llm_int8_skip_modules"] = {"v_proj"}; });
    const model_file m = read_hf_dir(mixed);
    BOOST_TEST(m.tensors.at(w).data == v.data);
    BOOST_TEST(m.quantization == "nf4+dq");
  }
  // A 4-bit norm: transformers never quantizes one.
  {
    const fs::path bad = tmp.path / "norm4";
    fs::copy(quantized, bad);
    const auto f = io::safetensors_file::open(quantized / "model.safetensors");
    q::bnb_writer out;
    out.raw().set_metadata("format", "pt");
    for (const auto& t : f.tensors())
      if (t.name != "model.norm.weight") out.raw().add(t.name, t.type, t.shape, t.bytes);
    const auto qn = q::blockwise_tensor<S>::quantize<float>(stories().tensors.at("model.norm.weight").data, {64});
    out.add_4bit("model.norm.weight", qn);
    out.write(bad / "model.safetensors");
    check_error([&] { read_hf_dir(bad); }, {"model.safetensors", "model.norm.weight", "only linear layers"});
  }
  // A statistic missing from every shard, and an index naming a shard that is not there.
  {
    const json index = read_json(sharded / "model.safetensors.index.json");
    const std::string w = "model.layers.3.mlp.up_proj.weight";
    json gone = index;
    const std::string shard = gone["weight_map"][w + ".absmax"];
    gone["weight_map"][w + ".absmax"] = "model-00099-of-00099.safetensors";
    write_json(sharded / "model.safetensors.index.json", gone);
    check_error([&] { read_hf_dir(sharded); }, {"model.safetensors.index.json", "model-00099-of-00099.safetensors", w + ".absmax"});
    // drop the tensor from its shard and from the index
    const auto f = io::safetensors_file::open(sharded / shard);
    io::safetensors_writer out;
    for (const auto& t : f.tensors())
      if (t.name != w + ".absmax") out.add(t.name, t.type, t.shape, t.bytes);
    out.write(sharded / (shard + ".new"));
    fs::rename(sharded / (shard + ".new"), sharded / shard);
    gone["weight_map"].erase(w + ".absmax");
    write_json(sharded / "model.safetensors.index.json", gone);
    check_error([&] { read_hf_dir(sharded); }, {".safetensors", w + ".absmax"});
  }
  // A quant_state whose dtype is not a float type.
  {
    const fs::path bad = tmp.path / "dtype";
    fs::copy(quantized, bad);
    const auto f = io::safetensors_file::open(quantized / "model.safetensors");
    const std::string key = q::quant_state_key("model.layers.0.mlp.up_proj.weight", "nf4");
    std::string text(reinterpret_cast<const char*>(f.at(key).bytes.data()), f.at(key).bytes.size());
    text.replace(text.find("float32"), 7, "int8000");
    io::safetensors_writer out;
    for (const auto& t : f.tensors())
      if (t.name != key) out.add(t.name, t.type, t.shape, t.bytes);
    out.add<std::uint8_t>(key, {std::int64_t(text.size())}, std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
    out.write(bad / "model.safetensors");
    check_error([&] { read_hf_dir(bad); }, {"model.safetensors", "model.layers.0.mlp.up_proj.weight", "int8000"});
  }
  // Writers refuse dtypes that are not float, before writing anything.
  check_error([&] { write_hf_dir(stories(), tmp.path / "i8", {io::dtype::I8, 0}); }, {"F32, F16 or BF16", "I8"});
  check_error([&] { write_hf_dir_4bit<S>(stories(), tmp.path / "i8", {io::dtype::I8, 0}); }, {"F32, F16 or BF16", "I8"});
  BOOST_TEST(!fs::exists(tmp.path / "i8"));
}

BOOST_AUTO_TEST_SUITE_END()
