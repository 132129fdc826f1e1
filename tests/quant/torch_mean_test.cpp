// SPDX-License-Identifier: MIT
// The double-quantization offset is bnb's `absmax.mean()`: torch's float32 CPU mean, in torch's order
// (quant/torch_reduce.hpp). Against real torch and bitsandbytes:
//   tests/data/torch_mean_golden.safetensors (tests/reference/check_torch_mean.py --write): arrays with torch 2.15's
//     sum and mean, and one 33000-element array reduced with 1..16 torch threads;
//   tests/data/bnb_dq_golden.safetensors (tests/reference/check_bnb_double_quant.py --write): two stories260K
//     weights and bnb 0.50.2's CPU quantize_4bit(nf4, 64, compress_statistics=True) of them.
#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "io/safetensors.hpp"
#include "quant/quant.hpp"
#include "quant/torch_reduce.hpp"

using namespace loralab::quant;
namespace io = loralab::io;

namespace {
const io::safetensors_file& mean_golden() {
  static const auto f = io::safetensors_file::open(LORALAB_TEST_DATA_DIR "/torch_mean_golden.safetensors");
  return f;
}
const io::safetensors_file& dq_golden() {
  static const auto f = io::safetensors_file::open(LORALAB_TEST_DATA_DIR "/bnb_dq_golden.safetensors");
  return f;
}
std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }

/// bnb 0.50's CPU quantize_blockwise code for v = x * (1/absmax) (csrc/cpu_ops.cpp quantize_cpu_impl, spec §6.4):
/// a 65536-entry table over [-1, 1] whose entry is the number of code midpoints below the bin's value.
std::uint8_t bnb_cpu_lut_code(float v) {
  static const std::vector<std::uint8_t> lut = [] {
    const auto& code = codebooks::dynamic_signed;
    float mid[255];
    for (int i = 0; i < 255; ++i) mid[i] = 0.5f * (code[i] + code[i + 1]);
    std::vector<std::uint8_t> t(65536);
    int c = 0;
    for (int i = 0; i < 65536; ++i) {
      const float val = -1.0f + (2.0f * static_cast<float>(i)) / 65535.0f;
      while (c < 255 && mid[c] < val) ++c;
      t[i] = static_cast<std::uint8_t>(c);
    }
    return t;
  }();
  v = std::fmin(std::fmax(v, -1.0f), 1.0f);
  // ((v + 1) * 0.5) * 65535 + 0.5, truncated; the product is exact in double, so this is also the FMA's result
  const float idx = static_cast<float>(static_cast<double>((v + 1.0f) * 0.5f) * 65535.0 + 0.5);
  return lut[static_cast<std::uint16_t>(idx)];
}
}  // namespace

BOOST_AUTO_TEST_SUITE(torch_order_mean)

BOOST_AUTO_TEST_CASE(x86_runs_torchs_8_lane_sum_kernel) {
  // An AVX512 CPU runs torch's AVX2 sum kernel (sum_stub has no AVX512 registration): 8 lanes on any x86-64.
#if defined(__x86_64__) || defined(_M_X64)
  BOOST_TEST(torch_cpu::default_lanes() == 8);
#endif
  BOOST_TEST(torch_cpu::default_config().threads >= 1);
}

BOOST_AUTO_TEST_CASE(sum_and_mean_equal_torch_bit_for_bit) {
  const auto& f = mean_golden();
  BOOST_TEST(f.metadata().at("torch").starts_with("2.15"));
  const auto x = f.at("x").to_vector<float>();
  const auto lengths = f.at("lengths").to_vector<std::int64_t>();
  const auto sums = f.at("sum").to_vector<float>(), means = f.at("mean").to_vector<float>();
  std::size_t at = 0, double_mean_differs = 0;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const std::span<const float> a(x.data() + at, static_cast<std::size_t>(lengths[i]));
    at += a.size();
    for (const int threads : {1, 4}) {  // under 32768 elements torch sums serially whatever its thread count
      BOOST_TEST_REQUIRE(bits(torch_cpu::sum(a, {8, threads})) == bits(sums[i]), "n=" << a.size());
      BOOST_TEST_REQUIRE(bits(torch_cpu::mean(a, {8, threads})) == bits(means[i]), "n=" << a.size());
    }
    double exact = 0;
    for (float v : a) exact += v;
    double_mean_differs += static_cast<float>(exact / double(a.size())) != means[i];
  }
  BOOST_TEST(at == x.size());
  // the golden holds arrays whose mean a double-precision sum gets wrong, so this test tells the orders apart
  BOOST_TEST(double_mean_differs >= 12u);
}

BOOST_AUTO_TEST_CASE(from_32768_elements_the_sum_splits_like_torchs_threads) {
  const auto& f = mean_golden();
  const auto x = f.at("big.x").to_vector<float>();
  const auto threads = f.at("big.threads").to_vector<std::int64_t>();
  const auto sums = f.at("big.sum").to_vector<float>(), means = f.at("big.mean").to_vector<float>();
  std::size_t distinct = 0;
  for (std::size_t i = 0; i < threads.size(); ++i) {
    const torch_cpu::reduce_config cfg{8, static_cast<int>(threads[i])};
    BOOST_TEST(bits(torch_cpu::sum(x, cfg)) == bits(sums[i]), threads[i] << " threads");
    BOOST_TEST(bits(torch_cpu::mean(x, cfg)) == bits(means[i]), threads[i] << " threads");
    distinct += i > 0 && means[i] != means[0];
  }
  BOOST_TEST(distinct > 0u, "torch's mean of this array does not depend on its thread count");
}

BOOST_AUTO_TEST_CASE(double_quant_equals_bnb_cpu) {
  using S = double_quant<nf4<64>>;
  const auto& f = dq_golden();
  BOOST_TEST(f.metadata().at("bitsandbytes") == "0.50.2");
  std::size_t weights = 0, lut_cases = 0;
  for (const auto& t : f.tensors()) {
    if (!t.name.starts_with("input.")) continue;
    const std::string W = t.name.substr(6);
    ++weights;
    const auto x = t.to_vector<float>();
    const auto bnb = read_bnb_4bit<S>(f, W);
    for (const bool ref : {false, true}) {
      const auto ours = ref ? blockwise_tensor<S>::quantize_ref<float>(x, t.shape)
                            : blockwise_tensor<S>::quantize<float>(x, t.shape);
      BOOST_TEST(bits(ours.offset()) == bits(bnb.offset()), W << ": offset " << ours.offset() << " vs " << bnb.offset());
      BOOST_TEST(std::vector<std::uint8_t>(ours.codes().begin(), ours.codes().end()) ==
                 std::vector<std::uint8_t>(bnb.codes().begin(), bnb.codes().end()), W << ": 4-bit codes");
      BOOST_TEST_REQUIRE(ours.num_nested_blocks() == bnb.num_nested_blocks());
      for (std::size_t b = 0; b < ours.num_nested_blocks(); ++b)
        BOOST_TEST(bits(ours.nested_absmax()[b]) == bits(bnb.nested_absmax()[b]), W << ": nested_absmax " << b);
      BOOST_TEST(std::vector<float>(ours.nested_code().begin(), ours.nested_code().end()) ==
                 std::vector<float>(bnb.nested_code().begin(), bnb.nested_code().end()), W << ": nested_quant_map");
      const auto& blob = f.at(quant_state_key(W, "nf4"));
      BOOST_TEST(quant_state_json(quant_state_of(ours)) ==
                 std::string(reinterpret_cast<const char*>(blob.bytes.data()), blob.bytes.size()), W << ": quant_state");
      // absmax codes: equal, except where bnb's CPU table gives a code that is not the nearest (loralab: nearest)
      const auto plain_tensor = blockwise_tensor<nf4<64>>::quantize<float>(x, t.shape);
      const auto plain = plain_tensor.absmax();
      for (std::size_t b = 0; b < ours.num_blocks(); ++b) {
        const std::uint8_t a = ours.absmax_codes()[b], c = bnb.absmax_codes()[b];
        const float v = (plain[b] - ours.offset()) * (1.0f / ours.nested_absmax()[b / 256]);
        BOOST_TEST_REQUIRE(bnb_cpu_lut_code(v) == c, W << " block " << b << ": bnb's code is not its table's");
        if (a == c) continue;
        const auto& code = codebooks::dynamic_signed;
        BOOST_TEST_REQUIRE(std::fabs(v - code[a]) <= std::fabs(v - code[c]), W << " block " << b);
        lut_cases += !ref;
      }
    }
  }
  BOOST_TEST(weights == 2u);
  BOOST_TEST(lut_cases == 1u);  // model.layers.0.self_attn.k_proj.weight block 13
}

BOOST_AUTO_TEST_SUITE_END()
