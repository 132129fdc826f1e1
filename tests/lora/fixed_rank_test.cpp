// SPDX-License-Identifier: MIT
// Compile-time rank (lora_linear<Base, Rank>): a fixed-rank model computes what the dynamic-rank model computes with
// the same adapters (loss, dA, dB, over a dense and an nf4 base, r 8 and 16), holds the same bytes, writes PEFT files
// a dynamic model reads (and back), and refuses any other rank with an error that says what to do.
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "lora/lora.hpp"
#include "nn/random_model.hpp"
#include "quant/schemes.hpp"
#include "test_support.hpp"

using namespace loralab;
using namespace loralab::lora;

namespace {
using dense_base = nn::linear<nn::dense_weight<float>>;
using nf4_base = nn::linear<nn::quant_weight<quant::nf4<64>>>;

template <class Base, int Rank>
struct rank_case {
  using base = Base;
  static constexpr int rank = Rank;
};
using fixed_rank_cases = std::tuple<rank_case<dense_base, 8>, rank_case<dense_base, 16>, rank_case<nf4_base, 8>, rank_case<nf4_base, 16>>;

nn::llama_config small() {
  nn::llama_config c;
  c.dim = 32, c.hidden_dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.vocab_size = 37, c.max_seq_len = 8;
  return c;
}

template <class Base, int Rank>
lora_model<Base, Rank> make(const nn::model_file& f) {
  return make_lora_model<Base, Rank>(f, [](const float* d, Eigen::Index n, Eigen::Index k) {
    return nn::make_linear<typename Base::weight_type>(d, n, k);
  });
}

nn::matrix<float> randn(std::mt19937_64& g, Eigen::Index r, Eigen::Index c, double scale) {
  std::normal_distribution<double> n(0.0, scale);
  nn::matrix<float> m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = float(n(g));
  return m;
}

/// Every adapter's A and B (or dA and dB) as dynamic matrices, in module order.
template <class Model>
std::vector<nn::matrix<float>> adapter_tensors(Model& m, bool grads) {
  std::vector<nn::matrix<float>> out;
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) {
    out.emplace_back(grads ? nn::matrix<float>(a.dA) : nn::matrix<float>(a.A));
    out.emplace_back(grads ? nn::matrix<float>(a.dB) : nn::matrix<float>(a.B));
  });
  return out;
}

/// max |x - y| over the list, against the largest |y|.
double max_relative_difference(const std::vector<nn::matrix<float>>& x, const std::vector<nn::matrix<float>>& y) {
  BOOST_TEST_REQUIRE(x.size() == y.size());
  double diff = 0, scale = 1e-30;
  for (std::size_t i = 0; i < x.size(); ++i) {
    BOOST_TEST_REQUIRE((x[i].rows() == y[i].rows() && x[i].cols() == y[i].cols()));
    diff = std::max(diff, double((x[i] - y[i]).cwiseAbs().maxCoeff()));
    scale = std::max(scale, double(y[i].cwiseAbs().maxCoeff()));
  }
  return diff / scale;
}

/// Both models get the same adapters: attached with one seed, then the same random (non-zero) B.
template <class M1, class M2>
void same_adapters(M1& a, M2& b, const lora_config& c, const target_spec& targets, std::mt19937_64& g) {
  BOOST_TEST_REQUIRE(attach_adapters(a, c, targets, 7) == attach_adapters(b, c, targets, 7));
  std::vector<nn::matrix<float>> bs;
  for_each_adapter(a, [&](const std::string&, auto& ad, auto&) { bs.push_back(randn(g, ad.B.rows(), ad.B.cols(), 0.2)); ad.B = bs.back(); });
  std::size_t i = 0;
  for_each_adapter(b, [&](const std::string&, auto& ad, auto&) { ad.B = bs.at(i++); });
  BOOST_TEST((max_relative_difference(adapter_tensors(a, false), adapter_tensors(b, false)) == 0.0), "the same A and B");
}

void rewrite_config(const std::filesystem::path& d, const std::function<void(nlohmann::json&)>& change) {
  std::ifstream in(d / "adapter_config.json");
  auto j = nlohmann::json::parse(in);
  change(j);
  std::ofstream(d / "adapter_config.json") << j.dump(2);
}

/// The error's text contains every one of `parts`.
auto says(std::vector<std::string> parts) {
  return [parts](const loralab::error& e) {
    const std::string s = e.what();
    BOOST_TEST_MESSAGE(s);
    for (const auto& p : parts)
      if (s.find(p) == std::string::npos) return false;
    return true;
  };
}
}  // namespace

BOOST_AUTO_TEST_SUITE(fixed_rank)

static_assert(lora_linear<dense_base, 8>::adapter_type::a_matrix::RowsAtCompileTime == 8);
static_assert(lora_linear<dense_base, 8>::adapter_type::b_matrix::ColsAtCompileTime == 8);
static_assert(std::same_as<lora_linear<dense_base>::adapter_type::a_matrix, nn::matrix<float>>, "dynamic_rank keeps the run-time types");
static_assert(std::same_as<lora_model<dense_base>, lora_model<dense_base, dynamic_rank>>);

// Fixed-size products may sum in another order than the dynamic ones (Eigen picks kernels by compile-time sizes),
// so results agree to float rounding: reductions run over at most 64 terms (K, N, B·T), each a few ulps (6e-8) of
// relative error, through two blocks forward and back; 1e-4 of the largest value leaves room for that and still
// catches any real error (a missing term or a transposed index is O(1)).
constexpr double rank_tolerance = 1e-4;

BOOST_AUTO_TEST_CASE_TEMPLATE(fixed_rank_computes_what_dynamic_rank_computes, C, fixed_rank_cases) {
  using Base = typename C::base;
  auto g = loralab::testing::rng(60 + C::rank);
  const auto file = nn::random_model_file(small(), g());
  auto dyn = make<Base, dynamic_rank>(file);
  auto fix = make<Base, C::rank>(file);
  lora_config c;
  c.r = C::rank, c.alpha = 16, c.dropout = 0.1;
  same_adapters(dyn, fix, c, parse_targets("all-linear"), g);
  set_adapter_mode(dyn, true, 11), set_adapter_mode(fix, true, 11);  // training: the same dropout masks

  std::uniform_int_distribution<int> id(0, small().vocab_size - 1);
  std::vector<int> tokens(16), targets(16);
  for (int i = 0; i < 16; ++i) tokens[std::size_t(i)] = id(g), targets[std::size_t(i)] = i % 5 == 4 ? -100 : id(g);
  dyn.forward(tokens, 2, 8), fix.forward(tokens, 2, 8);
  const double ld = dyn.loss(targets), lf = fix.loss(targets);
  BOOST_TEST_MESSAGE("r " << C::rank << ": loss dynamic " << ld << " fixed " << lf);
  BOOST_TEST(lf == ld, boost::test_tools::tolerance(rank_tolerance));
  dyn.backward(), fix.backward();
  const double dg = max_relative_difference(adapter_tensors(fix, true), adapter_tensors(dyn, true));
  BOOST_TEST_MESSAGE("r " << C::rank << ": max |dA, dB fixed - dynamic| / max |dA, dB| = " << dg);
  BOOST_TEST(dg <= rank_tolerance);

  // the same bytes: a fixed rank changes the types, not the storage; planned equals measured
  const auto pd = dyn.planned_memory(2, 8), pf = fix.planned_memory(2, 8), mf = fix.measured_memory();
  BOOST_TEST((pf == pd));
  BOOST_TEST((mf == dyn.measured_memory()));
  BOOST_TEST(pf.adapters == mf.adapters);
  BOOST_TEST(pf.grads == mf.grads);
  BOOST_TEST(pf.workspace == mf.workspace);
  BOOST_TEST(count_parameters(fix).trainable == count_parameters(dyn).trainable);
}

BOOST_AUTO_TEST_CASE(rank_one_is_a_column_of_b) {
  // Eigen allows a one-column matrix only column-major: B (N, 1), dB and the (M, 1) scratch are.
  auto g = loralab::testing::rng(62);
  const auto w = randn(g, 24, 40, 0.2);
  lora_linear<dense_base, 1> f;
  lora_linear<dense_base> d;
  static_cast<dense_base&>(f) = nn::make_dense_linear<float>(w.data(), 24, 40);
  static_cast<dense_base&>(d) = nn::make_dense_linear<float>(w.data(), 24, 40);
  lora_config c;
  c.r = 1, c.dropout = 0.2;
  std::mt19937_64 r1(5), r2(5);
  f.adapter = make_adapter<float, 1>(c, 24, 40, r1);
  d.adapter = make_adapter<float>(c, 24, 40, r2);
  d.adapter->B = randn(g, 24, 1, 0.3);
  f.adapter->B = d.adapter->B;
  const nn::matrix<float> x = randn(g, 6, 40, 1.0), dy = randn(g, 6, 24, 1.0);
  nn::matrix<float> yf, yd, dxf, dxd;
  f.forward(x, yf), d.forward(x, yd);
  f.backward(x, dy, dxf), d.backward(x, dy, dxd);
  BOOST_TEST(max_relative_difference({yf, dxf, nn::matrix<float>(f.adapter->dA), nn::matrix<float>(f.adapter->dB)},
                                     {yd, dxd, d.adapter->dA, d.adapter->dB}) <= rank_tolerance);
  BOOST_CHECK_EXCEPTION((make_adapter<float, 1>(lora_config{}, 24, 40, r1)), loralab::error,
                        says({"LoRA rank 8 does not match the model's fixed rank 1"}));
}

BOOST_AUTO_TEST_CASE(fixed_rank_adapters_round_trip_through_peft_files) {
  auto g = loralab::testing::rng(63);
  const auto file = nn::random_model_file(small(), g());
  loralab::testing::temp_dir dir;
  lora_config c;
  c.r = 8, c.alpha = 32, c.dropout = 0.05;
  const auto targets = parse_targets("q_proj,v_proj,down_proj");
  auto dyn = make<nf4_base, dynamic_rank>(file);
  auto fix = make<nf4_base, 8>(file);
  same_adapters(fix, dyn, c, targets, g);
  save_adapter(fix, dir.path / "fixed", c, targets, "small");

  // fixed → dynamic: the same tensors and scaling, the same logits
  auto back = make<nf4_base, dynamic_rank>(file);
  BOOST_TEST(load_adapter(back, dir.path / "fixed").config.r == 8);
  BOOST_TEST(max_relative_difference(adapter_tensors(back, false), adapter_tensors(fix, false)) == 0.0);
  for_each_adapter(back, [&](const std::string&, auto& a, auto&) { BOOST_TEST(a.scaling == 4.0f); });
  set_adapter_mode(fix, false, 0), set_adapter_mode(back, false, 0);
  const std::vector<int> tokens = {1, 5, 7, 2, 9, 3};
  const nn::matrix<float> lf = fix.forward(tokens, 1, 6), lb = back.forward(tokens, 1, 6);
  BOOST_TEST(max_relative_difference({lf}, {lb}) <= rank_tolerance);

  // dynamic → fixed
  save_adapter(back, dir.path / "dynamic", c, targets, "small");
  auto fix2 = make<nf4_base, 8>(file);
  load_adapter(fix2, dir.path / "dynamic");
  BOOST_TEST(max_relative_difference(adapter_tensors(fix2, false), adapter_tensors(fix, false)) == 0.0);
}

BOOST_AUTO_TEST_CASE(a_rank_other_than_the_fixed_rank_is_refused) {
  auto g = loralab::testing::rng(64);
  const auto file = nn::random_model_file(small(), g());
  loralab::testing::temp_dir dir;
  const auto qv = target_spec::from(qv_targets{});
  lora_config c8, c16;
  c8.r = 8, c16.r = 16;
  auto fix = make<dense_base, 8>(file);
  BOOST_TEST(attach_adapters(fix, c8, qv, 1) == 4);
  const auto adapters_of = [](auto& m) {
    int n = 0;
    for_each_adapter(m, [&](const std::string&, auto& a, auto&) { n += a.rank() == 8; });
    return n;
  };

  BOOST_CHECK_EXCEPTION(attach_adapters(fix, c16, qv, 1), loralab::error,
                        says({"LoRA rank 16 does not match the model's fixed rank 8 (lora_linear<linear<dense_weight<float32>>, 8>); "
                              "use dynamic_rank for run-time ranks"}));
  BOOST_TEST(adapters_of(fix) == 4, "a refused config leaves the model as it was");

  // a rank-16 adapter file: key 'r'
  auto dyn = make<dense_base, dynamic_rank>(file);
  attach_adapters(dyn, c16, qv, 2);
  save_adapter(dyn, dir.path / "r16", c16, qv, "small");
  BOOST_CHECK_EXCEPTION(load_adapter(fix, dir.path / "r16"), loralab::error,
                        says({(dir.path / "r16" / "adapter_config.json").string(), "key 'r'",
                              "LoRA rank 16 does not match the model's fixed rank 8", "dynamic_rank"}));
  BOOST_TEST(adapters_of(fix) == 4, "a refused file leaves the model as it was");

  // r 8, but rank_pattern gives q_proj 16: the entry is named
  attach_adapters(dyn, c8, qv, 3);
  save_adapter(dyn, dir.path / "pattern", c8, qv, "small");
  BOOST_TEST(load_adapter(fix, dir.path / "pattern").config.r == 8, "r 8 without a pattern loads");
  std::filesystem::copy(dir.path / "pattern", dir.path / "pattern16");
  rewrite_config(dir.path / "pattern16", [](nlohmann::json& j) { j["rank_pattern"] = {{"q_proj", 16}}; });
  BOOST_CHECK_EXCEPTION(load_adapter(fix, dir.path / "pattern16"), loralab::error,
                        says({(dir.path / "pattern16" / "adapter_config.json").string(), "key 'rank_pattern' entry 'q_proj'",
                              "model.layers.0.self_attn.q_proj", "LoRA rank 16 does not match the model's fixed rank 8"}));
  BOOST_TEST(adapters_of(fix) == 4);
}

BOOST_AUTO_TEST_SUITE_END()
