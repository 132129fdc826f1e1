// SPDX-License-Identifier: MIT
// lora/gguf_adapter.hpp: adapters as llama.cpp GGUF LoRA files.
//   * write -> read round trips (F32 exact, F16 rounded), the metadata, names and ne llama.cpp's loader checks, and
//     lora_b's attn_q / attn_k rows in llama.cpp's adjacent-pair order (checked by an index formula of its own);
//   * a scaling other than alpha / r (rsLoRA, alpha_pattern) folded into B: (alpha/r)·B·A unchanged;
//   * refusals naming the file and the key or tensor;
//   * tests/data/gguf_lora_golden.gguf (+ its PEFT twin tests/data/gguf_lora_golden_peft/) is what this code writes
//     for the tiny golden llama; tests/reference/check_gguf_lora.py reads it with gguf-py and checks that
//     W + alpha/r·B·A (llama.cpp's permutation undone) reproduces PEFT's merged weights and logits.
//     Regenerate both with LORALAB_UPDATE_GOLDEN=1 build/tests/lora/test_gguf_adapter.
#define BOOST_TEST_MODULE gguf_adapter
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "lora/gguf_adapter.hpp"
#include "lora/peft_io.hpp"
#include "nn/gguf_model.hpp"
#include "nn/model_io.hpp"
#include "expect_error.hpp"
#include "test_support.hpp"

using namespace loralab;
namespace fs = std::filesystem;
using io::ggml_type;

namespace {

using loralab::testing::expect_error;

/// The tiny golden llama (2 layers, dim 32, 4 heads, 2 KV heads, FFN 64, vocab 96) with all-linear adapters, r 4,
/// alpha 8, A kaiming-uniform and B drawn too (PEFT's B starts at zero, which would hide B's layout).
struct adapted {
  nn::model_file file = nn::load_model_file(LORALAB_TEST_DATA_DIR "/gguf_model_golden.gguf");
  lora::lora_model<nn::linear<nn::dense_weight<float>>> m = lora::make_lora_dense_model<float>(file);
  lora::lora_config lc;
  lora::target_spec targets = lora::parse_targets("all-linear");
  explicit adapted(bool rslora = false) {
    lc.r = 4, lc.alpha = 8, lc.dropout = 0, lc.use_rslora = rslora;
    lora::attach_adapters(m, lc, targets, 7);
    std::mt19937 g(11);
    std::normal_distribution<float> n(0.0f, 0.5f);
    lora::for_each_adapter(m, [&](const std::string&, auto& a, auto&) {
      for (Eigen::Index i = 0; i < a.B.size(); ++i) a.B.data()[i] = n(g);
    });
  }
};

std::vector<char> file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

BOOST_AUTO_TEST_CASE(f32_round_trip_is_exact_in_llama_cpp_layout) {
  testing::temp_dir tmp;
  adapted a;
  const fs::path path = tmp.path / "a.gguf";
  lora::save_gguf_adapter(a.m, path);

  // what llama.cpp's loader (llama-adapter.cpp) reads: keys, names, ne, types
  const io::gguf_file f = io::gguf_file::open(path);
  BOOST_TEST(f.get_string("general.architecture") == "llama");
  BOOST_TEST(f.get_string("general.type") == "adapter");
  BOOST_TEST(f.get_string("adapter.type") == "lora");
  BOOST_TEST(f.find("adapter.lora.alpha")->type() == io::gguf_value_type::float32);
  BOOST_TEST(f.get_float("adapter.lora.alpha") == 8.0);
  BOOST_TEST(f.tensors().size() == 2u * 7u * 2u);
  const nn::llama_config& c = a.m.config;
  const int D = c.head_dim();
  int checked = 0;
  lora::for_each_adapter(a.m, [&](const std::string& key, const auto& ad, auto& lin) {
    const std::string module = key.substr(std::string_view("base_model.model.").size());
    const std::string g = lora::detail::gguf_linear_names(c).at(module);
    const auto& ta = f.tensor(g + ".lora_a");
    const auto& tb = f.tensor(g + ".lora_b");
    BOOST_TEST(ta.type == ggml_type::F32);
    BOOST_TEST(tb.type == ggml_type::F32);
    // llama.cpp: model ne[0] == a ne[0], model ne[1] == b ne[1], a ne[1] == b ne[0]
    BOOST_TEST(ta.dims == (std::vector<std::int64_t>{lin.in_features(), 4}));
    BOOST_TEST(tb.dims == (std::vector<std::int64_t>{4, lin.out_features()}));
    const auto va = f.tensor_to_float(ta.name), vb = f.tensor_to_float(tb.name);
    for (Eigen::Index i = 0; i < ad.A.rows(); ++i)
      for (Eigen::Index k = 0; k < ad.A.cols(); ++k) BOOST_TEST(va[std::size_t(i * ad.A.cols() + k)] == ad.A(i, k));
    // B: q / k rows as LlamaModel.permute moves them; within head h, file row h·D + 2i + half <- HF row h·D + half·D/2 + i
    const int heads = module.ends_with("q_proj") ? c.n_heads : module.ends_with("k_proj") ? c.n_kv_heads : 0;
    for (Eigen::Index row = 0; row < ad.B.rows(); ++row) {
      Eigen::Index hf = row;
      if (heads) {
        const Eigen::Index h = row / D, j = row % D;
        hf = h * D + (j % 2) * (D / 2) + j / 2;
      }
      for (Eigen::Index k = 0; k < ad.B.cols(); ++k) BOOST_TEST(vb[std::size_t(row * ad.B.cols() + k)] == ad.B(hf, k));
    }
    ++checked;
  });
  BOOST_TEST(checked == 14);

  const lora::gguf_lora back = lora::read_gguf_lora(path, c);
  BOOST_TEST(back.alpha == 8.0f);
  BOOST_TEST(back.modules.size() == 14u);
  lora::for_each_adapter(a.m, [&](const std::string& key, const auto& ad, auto&) {
    const auto& p = back.modules.at(key.substr(std::string_view("base_model.model.").size()));
    BOOST_TEST((p.A == ad.A));
    BOOST_TEST((p.B == ad.B));
  });
}

BOOST_AUTO_TEST_CASE(f16_round_trip_rounds_to_half) {
  testing::temp_dir tmp;
  adapted a;
  const fs::path path = tmp.path / "a16.gguf";
  lora::save_gguf_adapter(a.m, path, {.type = ggml_type::F16, .name = "tiny"});
  const io::gguf_file f = io::gguf_file::open(path);
  BOOST_TEST(f.get_string("general.name") == "tiny");
  for (const auto& t : f.tensors()) BOOST_TEST(t.type == ggml_type::F16);
  const lora::gguf_lora back = lora::read_gguf_lora(path, a.m.config);
  const auto half = [](const auto& m) { return m.unaryExpr([](float v) { return float(Eigen::half(v)); }).eval(); };
  lora::for_each_adapter(a.m, [&](const std::string& key, const auto& ad, auto&) {
    const auto& p = back.modules.at(key.substr(std::string_view("base_model.model.").size()));
    BOOST_TEST((p.A == half(nn::matrix<float>(ad.A))));
    BOOST_TEST((p.B == half(nn::matrix<float>(ad.B))));
  });
}

BOOST_AUTO_TEST_CASE(scaling_other_than_alpha_over_r_is_folded_into_b) {
  testing::temp_dir tmp;
  adapted a(/*rslora=*/true);  // scaling 8 / sqrt(4) = 4: file alpha 16, so alpha / r = 4 too
  int n = 0;
  lora::for_each_adapter(a.m, [&](const std::string&, auto& ad, auto&) {
    if (n++ == 3) ad.scaling = 1.5f;  // one module as PEFT's alpha_pattern would set it
  });
  const fs::path path = tmp.path / "rs.gguf";
  lora::save_gguf_adapter(a.m, path);
  const lora::gguf_lora back = lora::read_gguf_lora(path, a.m.config);
  BOOST_TEST(back.alpha == 16.0f);
  float worst = 0;
  lora::for_each_adapter(a.m, [&](const std::string& key, const auto& ad, auto&) {
    const auto& p = back.modules.at(key.substr(std::string_view("base_model.model.").size()));
    const nn::matrix<float> want = ad.scaling * (ad.B * ad.A);
    const nn::matrix<float> got = (back.alpha / float(p.A.rows())) * (p.B * p.A);
    worst = std::max(worst, (want - got).cwiseAbs().maxCoeff() / want.cwiseAbs().maxCoeff());
  });
  BOOST_TEST(worst < 1e-6f);  // one float multiply of B by 1.5 / 4
}

BOOST_AUTO_TEST_CASE(bad_adapter_files_are_refused_with_file_and_key_or_tensor) {
  testing::temp_dir tmp;
  adapted a;
  const fs::path good = tmp.path / "good.gguf";
  lora::save_gguf_adapter(a.m, good);
  const auto variant = [&](const std::string& name, auto&& edit, const std::string& drop = "") {
    const io::gguf_file f = io::gguf_file::open(good);
    io::gguf_writer w;
    for (const auto& [k, v] : f.metadata()) w.set(k, v);
    std::vector<std::vector<std::byte>> keep;
    keep.reserve(4);
    edit(w, keep);
    for (const auto& t : f.tensors())
      if (t.name != drop) w.add_tensor(t.name, t.type, t.dims, f.tensor_bytes(t));
    w.write(tmp.path / name);
    return tmp.path / name;
  };
  const auto none = [](io::gguf_writer&, auto&) {};
  const auto& c = a.m.config;
  const fs::path model = variant("model.gguf", [](io::gguf_writer& w, auto&) { w.set("general.type", "model"); });
  expect_error([&] { lora::read_gguf_lora(model, c); }, {model.string(), "key 'general.type' is 'model'", "expected 'adapter'"});
  const fs::path arch = variant("arch.gguf", [](io::gguf_writer& w, auto&) { w.set("general.architecture", "qwen2"); });
  expect_error([&] { lora::read_gguf_lora(arch, c); }, {arch.string(), "general.architecture", "qwen2"});
  const fs::path type = variant("type.gguf", [](io::gguf_writer& w, auto&) { w.set("adapter.type", "control_vector"); });
  expect_error([&] { lora::read_gguf_lora(type, c); }, {type.string(), "adapter.type", "control_vector"});
  const fs::path half = variant("half.gguf", none, "blk.1.ffn_up.weight.lora_b");
  expect_error([&] { lora::read_gguf_lora(half, c); }, {half.string(), "model.layers.1.mlp.up_proj", "only its lora_a"});
  const fs::path alien = variant("alien.gguf", [](io::gguf_writer& w, auto& keep) {
    keep.emplace_back(std::size_t(32 * 4 * 4));
    w.add_tensor("blk.7.attn_q.weight.lora_a", ggml_type::F32, {32, 4}, keep.back());
  });
  expect_error([&] { lora::read_gguf_lora(alien, c); }, {alien.string(), "'blk.7.attn_q.weight.lora_a'", "not a linear layer of this model"});
  const fs::path shape = variant("shape.gguf", [](io::gguf_writer& w, auto& keep) {
    keep.emplace_back(std::size_t(64 * 4 * 4));
    w.add_tensor("blk.0.ffn_down.weight.lora_a", ggml_type::F32, {4, 64}, keep.back());  // transposed
  }, "blk.0.ffn_down.weight.lora_a");
  expect_error([&] { lora::read_gguf_lora(shape, c); }, {shape.string(), "'blk.0.ffn_down.weight.lora_a' has dims [4, 64]", "needs [64, r]"});
  expect_error([&] { lora::write_gguf_lora(tmp.path / "q.gguf", lora::gguf_lora_of(a.m), c, {.type = ggml_type::Q8_0, .name = ""}); },
               {"q.gguf", "F32 or F16", "Q8_0"});
}

BOOST_AUTO_TEST_CASE(golden_file_is_what_this_code_writes) {
  testing::temp_dir tmp;
  adapted a;
  const fs::path gguf = tmp.path / "gguf_lora_golden.gguf", peft = tmp.path / "gguf_lora_golden_peft";
  lora::save_gguf_adapter(a.m, gguf, {.name = "tiny-llama-golden-lora"});
  lora::save_adapter(a.m, peft, a.lc, a.targets, "tests/data/gguf_model_golden.gguf");
  if (std::getenv("LORALAB_UPDATE_GOLDEN")) {
    fs::copy_file(gguf, LORALAB_TEST_DATA_DIR "/gguf_lora_golden.gguf", fs::copy_options::overwrite_existing);
    fs::create_directories(LORALAB_TEST_DATA_DIR "/gguf_lora_golden_peft");
    for (const char* n : {"adapter_config.json", "adapter_model.safetensors"})
      fs::copy_file(peft / n, fs::path(LORALAB_TEST_DATA_DIR "/gguf_lora_golden_peft") / n, fs::copy_options::overwrite_existing);
    BOOST_TEST_MESSAGE("LORALAB_UPDATE_GOLDEN: wrote tests/data/gguf_lora_golden.gguf and gguf_lora_golden_peft/");
  }
  BOOST_TEST(file_bytes(gguf) == file_bytes(LORALAB_TEST_DATA_DIR "/gguf_lora_golden.gguf"));
  BOOST_TEST(file_bytes(peft / "adapter_model.safetensors") ==
             file_bytes(LORALAB_TEST_DATA_DIR "/gguf_lora_golden_peft/adapter_model.safetensors"));
}
