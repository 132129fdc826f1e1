// SPDX-License-Identifier: MIT
// LoRA adapters: gradients against finite differences (dense base in double; quantized bases in float, where
// the loss is linear in each single coordinate so central differences are exact up to rounding), no-op at
// init, PEFT's target rules, parameter counts, merge/unmerge/merge_and_unload, PEFT files round trip.
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "../nn/gradcheck.hpp"
#include "nn/random_model.hpp"
#include "lora/lora.hpp"
#include "nn/model_io.hpp"
#include "quant/schemes.hpp"
#include "test_support.hpp"

using namespace loralab;
using namespace loralab::lora;
using loralab::testing::check_gradient;

namespace {
template <class S>
nn::matrix<S> randn(std::mt19937_64& g, Eigen::Index r, Eigen::Index c, double scale = 1.0) {
  std::normal_distribution<double> n(0.0, scale);
  nn::matrix<S> m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = S(n(g));
  return m;
}

nn::llama_config tiny() {
  nn::llama_config c;
  c.dim = 16, c.hidden_dim = 24, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.vocab_size = 13, c.max_seq_len = 8;
  return c;
}

/// A lora_linear over `base` with a random (non-zero) adapter, so every gradient is exercised.
template <class Base>
lora_linear<Base> with_adapter(Base base, const lora_config& c, std::mt19937_64& g) {
  lora_linear<Base> l;
  static_cast<Base&>(l) = std::move(base);
  l.adapter = make_adapter<typename Base::scalar>(c, l.out_features(), l.in_features(), g);
  l.adapter->B = randn<typename Base::scalar>(g, l.out_features(), c.r, 0.3);
  l.adapter->dropout_seed = 77;
  return l;
}

template <class L>
void check_lora_linear(L& lin, std::mt19937_64& g, double h, double tol, double abs_floor = 1e-9) {
  using S = typename L::scalar;
  nn::matrix<S> x = randn<S>(g, 5, lin.in_features()), R = randn<S>(g, 5, lin.out_features()), y, dx;
  const auto loss = [&] { lin.forward(x, y); return double(y.template cast<double>().cwiseProduct(R.template cast<double>()).sum()); };
  loss();
  lin.backward(x, R, dx);
  std::vector<double> ga(lin.adapter->dA.data(), lin.adapter->dA.data() + lin.adapter->dA.size());
  std::vector<double> gb(lin.adapter->dB.data(), lin.adapter->dB.data() + lin.adapter->dB.size());
  std::vector<double> gx(dx.data(), dx.data() + dx.size());
  // finite differences on copies in double of the float parameters
  const auto fd = [&](const char* what, S* p, std::size_t n, const std::vector<double>& analytic) {
    std::vector<double> shadow(p, p + n);
    check_gradient(what, shadow.data(), n, analytic.data(), [&] {
      for (std::size_t i = 0; i < n; ++i) p[i] = S(shadow[i]);
      return loss();
    }, g, 30, h, tol, abs_floor);
    for (std::size_t i = 0; i < n; ++i) p[i] = S(shadow[i]);
  };
  fd("dA", lin.adapter->A.data(), std::size_t(lin.adapter->A.size()), ga);
  fd("dB", lin.adapter->B.data(), std::size_t(lin.adapter->B.size()), gb);
  fd("dx", x.data(), std::size_t(x.size()), gx);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(lora_adapters)

BOOST_AUTO_TEST_CASE(lora_linear_over_a_dense_base_matches_finite_differences) {
  auto g = loralab::testing::rng(30);
  for (double dropout : {0.0, 0.3})
    for (bool rslora : {false, true}) {
      lora_config c;
      c.r = 3, c.alpha = 5, c.dropout = dropout, c.use_rslora = rslora;
      const auto w = randn<float>(g, 7, 11);
      auto lin = with_adapter(nn::make_dense_linear<double>(w.data(), 7, 11), c, g);
      BOOST_TEST(lin.adapter->scaling == (rslora ? 5 / std::sqrt(3.0) : 5 / 3.0), boost::test_tools::tolerance(1e-12));
      check_lora_linear(lin, g, 1e-5, 1e-6);
      BOOST_TEST(lin.weight.grad_bytes() == 0u, "the base never gets a gradient");
    }
}

BOOST_AUTO_TEST_CASE(lora_linear_over_quantized_bases_matches_finite_differences) {
  auto g = loralab::testing::rng(31);
  lora_config c;
  c.r = 4, c.alpha = 8, c.dropout = 0.1;
  const auto w = randn<float>(g, 40, 96, 0.1);
  // the loss is linear in each single coordinate: central differences in float are exact but for rounding
  // rounding: float eps × |loss| (~10) over 2h = 0.2 gives ~3e-6 absolute, hence the 2e-5 floor
  auto nf4 = with_adapter(nn::make_quant_linear<quant::nf4<64>>(w.data(), 40, 96), c, g);
  check_lora_linear(nf4, g, 1e-1, 2e-3, 2e-5);
  auto nf4_dq = with_adapter(nn::make_quant_linear<quant::double_quant<quant::nf4<64>>>(w.data(), 40, 96), c, g);
  check_lora_linear(nf4_dq, g, 1e-1, 2e-3, 2e-5);
  auto fp4 = with_adapter(nn::make_quant_linear<quant::fp4<64>>(w.data(), 40, 96), c, g);
  check_lora_linear(fp4, g, 1e-1, 2e-3, 2e-5);
  auto fp4_dq = with_adapter(nn::make_quant_linear<quant::double_quant<quant::fp4<64>>>(w.data(), 40, 96), c, g);
  check_lora_linear(fp4_dq, g, 1e-1, 2e-3, 2e-5);
  auto int8 = with_adapter(nn::make_quant_linear<quant::int8_rowwise>(w.data(), 40, 96), c, g);
  check_lora_linear(int8, g, 1e-1, 2e-3, 2e-5);
}

BOOST_AUTO_TEST_CASE(adapters_start_as_a_no_op_and_targets_follow_peft) {
  auto g = loralab::testing::rng(32);
  const auto file = loralab::nn::random_model_file(tiny(), g());
  auto base = nn::make_dense_model<float>(file);
  auto m = make_lora_dense_model<float>(file);
  BOOST_TEST(attach_adapters(m, lora_config{}, target_spec::from(qv_targets{}), 1) == 4);
  std::vector<int> tokens = {1, 5, 7, 2, 9, 3};
  const nn::matrix<float> a = base.forward(tokens, 1, 6), b = m.forward(tokens, 1, 6);
  BOOST_TEST((a == b), "B = 0: the adapted model computes the base model");
  BOOST_TEST(attach_adapters(m, lora_config{}, parse_targets("all-linear"), 1) == 14);
  BOOST_TEST(attach_adapters(m, lora_config{}, parse_targets(R"(model\.layers\.1\.mlp\..*)"), 1) == 3);
  BOOST_TEST(attach_adapters(m, lora_config{}, parse_targets("self_attn.o_proj,down_proj"), 1) == 4);
  BOOST_CHECK_EXCEPTION(attach_adapters(m, lora_config{}, parse_targets("q_proj,qkv_proj"), 1), loralab::error,
                        [](const loralab::error& e) {
                          const std::string s = e.what();
                          return s.find("qkv_proj") != std::string::npos && s.find("gate_proj") != std::string::npos;
                        });
  BOOST_CHECK_THROW(attach_adapters(m, lora_config{}, parse_targets("proj"), 1), loralab::error);  // suffix = whole segment
  BOOST_CHECK_THROW(attach_adapters(m, lora_config{}, parse_targets("q_proj.*"), 1), loralab::error);  // full match only
  lora_config bad;
  bad.r = 0;
  BOOST_CHECK_THROW(attach_adapters(m, bad, parse_targets("q_proj"), 1), loralab::error);
  bad = {}, bad.dropout = 1.0;
  BOOST_CHECK_THROW(attach_adapters(m, bad, parse_targets("q_proj"), 1), loralab::error);
  bad = {}, bad.alpha = -1;
  BOOST_CHECK_THROW(attach_adapters(m, bad, parse_targets("q_proj"), 1), loralab::error);
}

BOOST_AUTO_TEST_CASE(trainable_parameters_in_peft_format_on_stories260K) {
  auto m = make_lora_dense_model<float>(nn::read_llama2c(LORALAB_SHARED_DIR "/models/stories260K.bin"));
  attach_adapters(m, lora_config{}, target_spec::from(qv_targets{}), 1);
  // per layer: q 8·(64+64) + v 8·(64+32) = 1792; 5 layers; base 260,032
  BOOST_TEST(trainable_parameters_line(m) == "trainable params: 8,960 || all params: 268,992 || trainable%: 3.3310");
  auto q = make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(nn::read_llama2c(LORALAB_SHARED_DIR "/models/stories260K.bin"));
  attach_adapters(q, lora_config{}, target_spec::from(qv_targets{}), 1);
  BOOST_TEST(trainable_parameters_line(q) == "trainable params: 8,960 || all params: 268,992 || trainable%: 3.3310");
  BOOST_TEST(!q.gradient_checkpointing, "attaching adapters leaves checkpointing alone");
  BOOST_TEST(prepare_for_kbit_training(q), "k-bit preparation turns gradient checkpointing on");
  BOOST_TEST(!prepare_for_kbit_training(m), "... but not for a dense base");
  BOOST_TEST(with_commas(6738710528) == "6,738,710,528");
}

BOOST_AUTO_TEST_CASE(storage_census_and_frozen_bits_per_weight) {
  using dq = quant::double_quant<quant::nf4<64>>;
  // stories260K: the seeds' dtype census. Float parameters: embeddings 512·64, norms 11·64, adapters 8,960;
  // the 35 linears hold 226,560 weights, which nf4 packs into 113,280 uint8 elements.
  const auto file = nn::read_llama2c(LORALAB_SHARED_DIR "/models/stories260K.bin");
  auto q = make_lora_quantized_model<dq>(file);
  attach_adapters(q, lora_config{}, target_spec::from(qv_targets{}), 1);
  const storage_breakdown s = count_storage(q);
  BOOST_TEST_REQUIRE(s.elements.size() == 2u);
  BOOST_TEST(s.elements[0].first == "float32");
  BOOST_TEST(s.elements[0].second == 32768u + 704u + 8960u);
  BOOST_TEST(s.elements[1].first == "uint8");
  BOOST_TEST(s.elements[1].second == 226560u / 2);
  BOOST_TEST(s.linear_weights == 226560u);
  std::size_t expect = 0;  // codes n/2, one uint8 absmax per 64, a float per 256 of those, offset + nested map
  q.for_each_linear([&](const std::string&, auto& lin) {
    const std::size_t n = std::size_t(lin.out_features() * lin.in_features()), nb = (n + 63) / 64;
    expect += n / 2 + nb + 4 * ((nb + 255) / 256) + 4 + 1024;
  });
  BOOST_TEST(s.linear_bytes == expect);
  auto d = make_lora_dense_model<float>(file);
  BOOST_TEST(count_storage(d).elements.size() == 1u);
  BOOST_TEST(count_storage(d).total_elements() == 260032u);

  // Frozen-weight bytes in the ratio 4.127/32 (QLoRA's claim): on a block of 512·512 and 1536·512 linears the
  // per-tensor constants (1,028 bytes: offset and nested map) add 0.017 bits; without them the ratio is exact.
  nn::llama_config c{.dim = 512, .hidden_dim = 1536, .n_layers = 1, .n_heads = 8, .n_kv_heads = 8, .vocab_size = 32, .max_seq_len = 16};
  const auto big = loralab::nn::random_model_file(c, testing::rng(31)(), 0.05f);
  auto fl = make_lora_dense_model<float>(big);
  auto nf = make_lora_quantized_model<quant::nf4<64>>(big);
  auto nq = make_lora_quantized_model<dq>(big);
  auto i8 = make_lora_quantized_model<quant::int8_rowwise>(big);
  const std::size_t n = 4 * 512 * 512 + 3 * 1536 * 512;
  BOOST_TEST(count_storage(fl).linear_bits_per_weight() == 32.0);
  BOOST_TEST(count_storage(nf).linear_bits_per_weight() == 4.5);
  const double per_tensor = 8.0 * 7 * 1028 / double(n);
  BOOST_TEST(count_storage(nq).linear_bits_per_weight() - per_tensor == 4.126953125, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(count_storage(nq).linear_bits_per_weight() / 32 == 4.127 / 32, boost::test_tools::tolerance(0.005));
  BOOST_TEST(quant::bits_per_param<dq>() == 4.126953125);
  // int8: a float32 scale per output row
  BOOST_TEST(count_storage(i8).linear_bytes == n + 4 * (4 * 512 + 2 * 1536 + 512));
}

BOOST_AUTO_TEST_CASE(whole_model_adapter_gradients_and_checkpointing) {
  auto g = loralab::testing::rng(33);
  const auto file = loralab::nn::random_model_file(tiny(), g());
  auto m = make_lora_dense_model<double>(file);
  lora_config c;
  c.r = 2, c.dropout = 0.2;
  attach_adapters(m, c, parse_targets("all-linear"), 5);
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) { a.B = randn<double>(g, a.B.rows(), a.B.cols(), 0.2); });
  set_adapter_mode(m, true, 11);
  std::vector<int> tokens = {1, 5, 7, 2, 9, 3, 4, 0}, targets = {5, 7, 2, -100, 3, 4, 0, 8};
  const auto loss = [&] { m.forward(tokens, 2, 4); return m.loss(targets); };
  loss();
  m.backward();
  BOOST_TEST(m.measured_memory().grads == m.measured_memory().adapters, "only adapters have gradients");
  // the scaling s = alpha/r = 8 multiplies a step h in B into 8h in the output: h = 1e-6 keeps the O(h²) term small
  for_each_adapter(m, [&](const std::string& key, auto& a, auto&) {
    check_gradient((key + ".lora_A").c_str(), a.A.data(), std::size_t(a.A.size()), a.dA.data(), loss, g, 6, 1e-6);
    check_gradient((key + ".lora_B").c_str(), a.B.data(), std::size_t(a.B.size()), a.dB.data(), loss, g, 6, 1e-6);
  });
  // the same gradients with checkpointing (the recomputed dropout masks are the same)
  std::vector<nn::matrix<double>> plain;
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) { plain.push_back(a.dA); a.dA.setZero(), a.dB.setZero(); });
  m.gradient_checkpointing = true;
  loss();
  m.backward();
  std::size_t i = 0;
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) { BOOST_TEST((a.dA == plain[i++])); });
  const auto planned = m.planned_memory(2, 4), measured = m.measured_memory();
  BOOST_TEST(planned.adapters == measured.adapters);
  BOOST_TEST(planned.grads == measured.grads);
  BOOST_TEST(planned.activations == measured.activations);
  BOOST_TEST(planned.workspace == measured.workspace);
  // dropout's (M, K) buffer is one for the whole model, (M, max K) = (8, hidden 24), not one per adapted linear
  set_adapter_mode(m, false, 0);
  BOOST_TEST(planned.workspace - m.planned_memory(2, 4).workspace == sizeof(double) * 8 * 24);
}

BOOST_AUTO_TEST_CASE(merge_unmerge_and_unload) {
  auto g = loralab::testing::rng(34);
  const auto file = loralab::nn::random_model_file(tiny(), g());
  std::vector<int> tokens = {1, 5, 7, 2, 9, 3};
  auto m = make_lora_dense_model<float>(file);
  attach_adapters(m, lora_config{}, parse_targets("all-linear"), 3);
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) { a.B = randn<float>(g, a.B.rows(), a.B.cols(), 0.1); });
  set_adapter_mode(m, false, 0);  // eval: no dropout
  const nn::matrix<float> unmerged = m.forward(tokens, 1, 6);
  const nn::matrix<float> w0 = m.layers[0].q_proj.weight.w;
  BOOST_TEST(merge_adapters(m).merged_modules == 14);
  const nn::matrix<float> merged = m.forward(tokens, 1, 6);
  BOOST_TEST((merged - unmerged).cwiseAbs().maxCoeff() <= 1e-4f);
  unmerge_adapters(m);
  BOOST_TEST((m.layers[0].q_proj.weight.w - w0).cwiseAbs().maxCoeff() <= 1e-6f);
  auto plain = merge_and_unload(std::move(m));
  const nn::matrix<float> unloaded = plain.forward(tokens, 1, 6);
  BOOST_TEST((unloaded - unmerged).cwiseAbs().maxCoeff() <= 1e-4f);

  // QLoRA: dequantize, add, requantize; the rounding is reported, and outputs stay close
  auto q = make_lora_quantized_model<quant::nf4<64>>(file);
  attach_adapters(q, lora_config{}, parse_targets("all-linear"), 3);
  for_each_adapter(q, [&](const std::string&, auto& a, auto&) { a.B = randn<float>(g, a.B.rows(), a.B.cols(), 0.1); });
  set_adapter_mode(q, false, 0);
  const nn::matrix<float> qa = q.forward(tokens, 1, 6);
  const auto& a0 = *q.layers[0].q_proj.adapter;
  const nn::matrix<float> target = q.layers[0].q_proj.dense() + (a0.B * a0.A) * a0.scaling;  // deq(W) + ΔW
  const auto report = merge_adapters(q);
  // the merged weight is exactly deq(Q(deq(W) + ΔW)), and the report's error covers its rounding
  const nn::matrix<float> expect = nn::make_quant_linear<quant::nf4<64>>(target.data(), target.rows(), target.cols()).dense();
  BOOST_TEST((q.layers[0].q_proj.dense() == expect));
  BOOST_TEST(report.max_rounding_error >= double((expect - target).cwiseAbs().maxCoeff()));
  BOOST_TEST(report.max_rounding_error > 0.0);
  const nn::matrix<float> qb = q.forward(tokens, 1, 6);
  BOOST_TEST((qa - qb).cwiseAbs().maxCoeff() > 0.0f, "requantization changes the outputs");
}

BOOST_AUTO_TEST_CASE(peft_files_round_trip_and_bad_files_are_refused) {
  auto g = loralab::testing::rng(35);
  const auto file = loralab::nn::random_model_file(tiny(), g());
  loralab::testing::temp_dir dir;
  lora_config c;
  c.r = 4, c.alpha = 16, c.dropout = 0.05;
  auto m = make_lora_dense_model<float>(file);
  const auto targets = parse_targets("q_proj,v_proj,down_proj");
  attach_adapters(m, c, targets, 9);
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) { a.B = randn<float>(g, a.B.rows(), a.B.cols(), 0.1); });
  save_adapter(m, dir.path / "adapter", c, targets, "stories260K");
  const auto f = io::safetensors_file::open(dir.path / "adapter" / "adapter_model.safetensors");
  BOOST_TEST(f.tensors().size() == 12u);
  BOOST_TEST(f.metadata().at("format") == "pt");
  const auto& qa = f.at("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
  BOOST_TEST(qa.shape == (std::vector<std::int64_t>{4, 16}));
  BOOST_TEST(f.at("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").shape == (std::vector<std::int64_t>{8, 4}));
  const auto cfg = read_adapter_config(dir.path / "adapter");
  BOOST_TEST(cfg.config.r == 4);
  BOOST_TEST(cfg.targets.names == (std::vector<std::string>{"down_proj", "q_proj", "v_proj"}));
  auto back = make_lora_dense_model<float>(file);
  load_adapter(back, dir.path / "adapter");
  set_adapter_mode(m, false, 0), set_adapter_mode(back, false, 0);
  std::vector<int> tokens = {1, 5, 7, 2};
  BOOST_TEST((m.forward(tokens, 1, 4) == back.forward(tokens, 1, 4)));

  // a missing key, an unexpected key, a wrong shape, DoRA: each refused with the file named
  const auto broken = [&](const std::string& tag, auto&& edit) {
    const auto d = dir.path / tag;
    std::filesystem::copy(dir.path / "adapter", d);
    edit(d);
    auto fresh = make_lora_dense_model<float>(file);
    BOOST_CHECK_EXCEPTION(load_adapter(fresh, d), loralab::error, [&](const loralab::error& e) {
      BOOST_TEST_MESSAGE(tag << ": " << e.what());
      return std::string(e.what()).find(d.string()) != std::string::npos;
    });
  };
  const auto rewrite_config = [](const std::filesystem::path& d, auto&& change) {
    std::ifstream in(d / "adapter_config.json");
    auto j = nlohmann::json::parse(in);
    change(j);
    std::ofstream(d / "adapter_config.json") << j.dump(2);
  };
  broken("more_targets", [&](auto& d) { rewrite_config(d, [](auto& j) { j["target_modules"] = {"q_proj", "v_proj", "down_proj", "k_proj"}; }); });
  broken("fewer_targets", [&](auto& d) { rewrite_config(d, [](auto& j) { j["target_modules"] = {"q_proj", "v_proj"}; }); });
  broken("rank", [&](auto& d) { rewrite_config(d, [](auto& j) { j["r"] = 8; }); });
  broken("dora", [&](auto& d) { rewrite_config(d, [](auto& j) { j["use_dora"] = true; }); });
  broken("no_r", [&](auto& d) { rewrite_config(d, [](auto& j) { j.erase("r"); }); });
}

// Numbers a hostile adapter_config.json can hold (the fuzzer found "r": 1e200 cast to int): each is refused with
// the file, the key and the value named, before any adapter is allocated; an integral float (8.0) is read as PEFT
// would. Mistyped refused-feature flags ("use_dora": 3) are mistyped fields, not escaping nlohmann exceptions.
BOOST_AUTO_TEST_CASE(adapter_config_numbers_are_checked) {
  loralab::testing::temp_dir dir;
  const auto with = [&](const std::string& tag, const std::string& fields) {
    const auto d = dir.path / tag;
    std::filesystem::create_directories(d);
    const std::string alpha = fields.find("lora_alpha") == std::string::npos ? R"("lora_alpha": 16, )" : "";
    std::ofstream(d / "adapter_config.json") << R"({"peft_type": "LORA", "target_modules": ["q_proj"], )" << alpha
                                             << fields << "}";
    return d;
  };
  const auto refused = [&](const std::string& tag, const std::string& fields, std::vector<std::string> parts) {
    const auto d = with(tag, fields);
    parts.push_back((d / "adapter_config.json").string());
    BOOST_CHECK_EXCEPTION(read_adapter_config(d), loralab::error, [&](const loralab::error& e) {
      BOOST_TEST_MESSAGE(tag << ": " << e.what());
      bool all = true;
      for (const auto& p : parts) all = all && std::string(e.what()).find(p) != std::string::npos;
      return all;
    });
  };
  BOOST_TEST(read_adapter_config(with("integral_float", R"("r": 8.0)")).config.r == 8);
  BOOST_TEST(read_adapter_config(with("pattern", R"("r": 8, "rank_pattern": {"q_proj": 4.0})")).rank_pattern.at("q_proj") == 4);
  refused("r_huge", R"("r": 1e200)", {"key 'r'", "1e+200", "not an integer"});
  refused("r_fraction", R"("r": 8.5)", {"key 'r'", "8.5", "not an integer"});
  refused("r_past_int", R"("r": 4294967304)", {"key 'r'", "4294967304"});
  refused("r_string", R"("r": "8")", {"key 'r'", "\"8\""});
  refused("r_zero", R"("r": 0)", {"must be > 0"});
  refused("pattern_huge", R"("r": 8, "rank_pattern": {"q_proj": 1e200})", {"key 'rank_pattern.q_proj'", "1e+200"});
  refused("pattern_negative", R"("r": 8, "rank_pattern": {"q_proj": -4})", {"key 'rank_pattern.q_proj'", "-4"});
  refused("alpha_huge", R"("r": 8, "lora_alpha": 1e300)", {"alpha", "1e+300"});
  refused("alpha_pattern_zero", R"("r": 8, "alpha_pattern": {"q_proj": 0})", {"key 'alpha_pattern.q_proj'"});
  refused("dora_mistyped", R"("r": 8, "use_dora": 3)", {"mistyped"});
  refused("bias_mistyped", R"("r": 8, "bias": 1)", {"mistyped"});
}

BOOST_AUTO_TEST_SUITE_END()
