// SPDX-License-Identifier: MIT
// Optimizers, gradient clipping and learning-rate schedules: HF's schedule formulas at hand-computed points;
// AdamW against a double-precision run of torch's formulas; bnb's 8-bit AdamW against a plain block-by-block
// reference (codes, absmax and parameters bit for bit) and against fp32 AdamW on a quadratic; bit-identical
// resume from a state dict; the errors a trainer can run into.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <omp.h>

#include "train/lr_schedule.hpp"
#include "train/optimizer.hpp"
#include "quant/codebooks.hpp"
#include "quant/codec.hpp"
#include "test_support.hpp"

namespace ll = loralab::train;
namespace cb = loralab::quant::codebooks;
namespace tt = boost::test_tools;

namespace {

constexpr double feps = std::numeric_limits<float>::epsilon();  // 2^-23
const float qnan = std::numeric_limits<float>::quiet_NaN();
const float inf = std::numeric_limits<float>::infinity();

std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }

/// Parameters and gradients owned by the test, handed to the optimizers as param_refs.
struct param_set {
  std::vector<std::string> names;
  std::vector<std::vector<float>> value, grad;
  std::vector<bool> decay;

  void add(std::string name, std::size_t n, bool d = true) {
    names.push_back(std::move(name));
    value.emplace_back(n, 0.0f);
    grad.emplace_back(n, 0.0f);
    decay.push_back(d);
  }
  std::vector<ll::param_ref> refs() {
    std::vector<ll::param_ref> r;
    for (std::size_t k = 0; k < names.size(); ++k)
      r.push_back({names[k], value[k].data(), grad[k].data(), value[k].size(), decay[k]});
    return r;
  }
  std::size_t size() const { return names.size(); }
};

void fill_normal(std::mt19937_64& g, std::vector<float>& v, double scale = 1.0) {
  std::normal_distribution<double> n(0.0, scale);
  for (float& x : v) x = float(n(g));
}

/// The message of the loralab::error f() throws, or "<no error>".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const loralab::error& e) {
    return e.what();
  }
  return "<no error>";
}
bool has(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

// ---- plain references ------------------------------------------------------------------------------------

/// Index of x in a sorted 256-entry map by counting float32 midpoints below it; a value exactly on a midpoint
/// takes the even index of the pair (bnb's search, spec §2.4); NaN is left to the caller.
int nearest_by_midpoints(const std::array<float, 256>& code, float x) {
  int idx = 0;
  for (int i = 0; i < 255; ++i) {
    const float mid = (code[i] + code[i + 1]) * 0.5f;
    if (x > mid) idx = i + 1;
    else if (x == mid) { idx = (i % 2 == 0) ? i : i + 1; break; }
    else break;
  }
  return idx;
}

/// bnb AdamW8bit for one 8-bit parameter, written block by block from the spec (§9.2), state kept as codes.
struct ref_adamw8bit {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  std::vector<std::uint8_t> q1, q2;
  std::vector<float> a1, a2;
  int t = 0;

  explicit ref_adamw8bit(std::size_t n) : q1(n, 0), q2(n, 0), a1((n + 255) / 256, 0.0f), a2((n + 255) / 256, 0.0f) {}

  void step(std::vector<float>& p, const std::vector<float>& g, float lr, float wd) {
    ++t;
    const float c1 = 1.0f - std::pow(beta1, float(t)), c2 = std::sqrt(1.0f - std::pow(beta2, float(t)));
    const float step_size = (-lr * c2) / c1;
    const std::size_t n = p.size();
    for (std::size_t lo = 0; lo < n; lo += 256) {
      const std::size_t hi = std::min(n, lo + 256), b = lo / 256;
      std::vector<float> s1(hi - lo), s2(hi - lo);
      float m1 = 0.0f, m2 = 0.0f;  // block max of |s|; every |s| >= 0, so 0 is a safe start here
      for (std::size_t i = lo; i < hi; ++i) {
        if (std::isfinite(g[i])) {
          s1[i - lo] = cb::dynamic_signed[q1[i]] * a1[b] * beta1 + (1.0f - beta1) * g[i];
          s2[i - lo] = cb::dynamic_unsigned[q2[i]] * a2[b] * beta2 + (1.0f - beta2) * g[i] * g[i];
        }  // else both stay 0
        m1 = std::max(m1, std::fabs(s1[i - lo]));
        m2 = std::max(m2, std::fabs(s2[i - lo]));
      }
      // The kernel reduces over all 256 lanes; past the end state1 loads code 128 (not the zero code) and g = 0.
      if (hi - lo < 256) m1 = std::max(m1, std::fabs(cb::dynamic_signed[128] * a1[b] * beta1));
      a1[b] = m1, a2[b] = m2;
      for (std::size_t i = lo; i < hi; ++i) {
        if (!std::isfinite(g[i])) continue;
        p[i] = p[i] + step_size * (s1[i - lo] / (std::sqrt(s2[i - lo]) + c2 * eps));
        if (wd > 0) p[i] = p[i] * (1.0f - lr * wd);
      }
      for (std::size_t i = lo; i < hi; ++i) {
        int c = nearest_by_midpoints(cb::dynamic_signed, s1[i - lo] / m1);
        if (std::signbit(s1[i - lo]) && c == 127) c = 126;  // a negative state never takes the code of +0
        q1[i] = std::uint8_t(c);
        q2[i] = std::uint8_t(nearest_by_midpoints(cb::dynamic_unsigned, s2[i - lo] / m2));
      }
    }
  }
};

/// bnb's 32-bit Adam kernel (kOptimizer32bit2State) for one small parameter: weight decay after the step.
struct ref_adam32_bnb {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  std::vector<float> m, v;
  int t = 0;
  explicit ref_adam32_bnb(std::size_t n) : m(n, 0.0f), v(n, 0.0f) {}
  void step(std::vector<float>& p, const std::vector<float>& g, float lr, float wd) {
    ++t;
    const float c1 = 1.0f - std::pow(beta1, float(t)), c2 = std::sqrt(1.0f - std::pow(beta2, float(t)));
    const float step_size = (-lr * c2) / c1;
    for (std::size_t i = 0; i < p.size(); ++i) {
      m[i] = m[i] * beta1 + (1.0f - beta1) * g[i];
      v[i] = v[i] * beta2 + (1.0f - beta2) * (g[i] * g[i]);
      p[i] = p[i] + step_size * (m[i] / (std::sqrt(v[i]) + eps * c2));
      if (wd > 0) p[i] = p[i] * (1.0f - lr * wd);
    }
  }
};

std::vector<float> floats_of(const std::vector<std::uint8_t>& b) {
  std::vector<float> f(b.size() / 4);
  std::memcpy(f.data(), b.data(), f.size() * 4);
  return f;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(optimizer)

// ---- schedules ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(schedule_linear_with_warmup) {
  const ll::lr_schedule s{ll::schedule_kind::linear, 1e-3, 10, 100};
  const auto tol = tt::tolerance(1e-12);
  BOOST_TEST(s.lr_at(1) == 0.0);  // update 1 uses λ(0) = 0/10
  BOOST_TEST(s.lr_at(2) == 1e-4, tol);
  BOOST_TEST(s.lr_at(6) == 5e-4, tol);
  BOOST_TEST(s.lr_at(11) == 1e-3, tol);  // λ(10) = (100-10)/90
  BOOST_TEST(s.lr_at(56) == 5e-4, tol);  // λ(55) = 45/90
  BOOST_TEST(s.lr_at(100) == 1e-3 / 90, tol);
  BOOST_TEST(s.lr_at(101) == 0.0);  // λ(T): what HF logs after the last update
  const ll::lr_schedule no_warmup{ll::schedule_kind::linear, 2e-4, 0, 4};
  BOOST_TEST(no_warmup.lr_at(1) == 2e-4);
  BOOST_TEST(no_warmup.lr_at(4) == 5e-5, tol);
}

BOOST_AUTO_TEST_CASE(schedule_cosine) {
  const auto tol = tt::tolerance(1e-12);
  const ll::lr_schedule s{ll::schedule_kind::cosine, 1e-3, 0, 100};
  BOOST_TEST(s.lr_at(1) == 1e-3, tol);                                   // λ(0) = ½(1 + cos 0)
  BOOST_TEST(s.lr_at(26) == 1e-3 * (0.5 + std::sqrt(2.0) / 4), tol);     // λ(25) = ½(1 + cos π/4)
  BOOST_TEST(s.lr_at(51) == 5e-4, tol);                                  // midpoint: ½(1 + cos π/2)
  BOOST_TEST(s.lr_at(101) == 0.0, tt::tolerance(1e-20));                 // ½(1 + cos π)
  const ll::lr_schedule w{ll::schedule_kind::cosine, 1e-3, 4, 104};
  BOOST_TEST(w.lr_at(1) == 0.0);
  BOOST_TEST(w.lr_at(3) == 5e-4, tol);   // warmup 2/4
  BOOST_TEST(w.lr_at(5) == 1e-3, tol);   // λ(W): progress 0
  BOOST_TEST(w.lr_at(55) == 5e-4, tol);  // progress 50/100
}

BOOST_AUTO_TEST_CASE(schedule_constant) {
  const auto tol = tt::tolerance(1e-12);
  const ll::lr_schedule s{ll::schedule_kind::constant, 3e-4, 3, 10};
  BOOST_TEST(s.lr_at(1) == 0.0);
  BOOST_TEST(s.lr_at(2) == 1e-4, tol);
  BOOST_TEST(s.lr_at(3) == 2e-4, tol);
  for (int k = 4; k <= 11; ++k) BOOST_TEST(s.lr_at(k) == 3e-4);
  const ll::lr_schedule flat{ll::schedule_kind::constant, 3e-4, 0, 10};
  for (int k = 1; k <= 10; ++k) BOOST_TEST(flat.lr_at(k) == 3e-4);
}

BOOST_AUTO_TEST_CASE(schedule_names_and_validation) {
  for (auto k : {ll::schedule_kind::constant, ll::schedule_kind::linear, ll::schedule_kind::cosine})
    BOOST_TEST((ll::parse_schedule_kind(ll::to_string(k)) == k));
  const std::string e = error_of([] { ll::parse_schedule_kind("cosine_with_restarts"); });
  BOOST_TEST(has(e, "constant, linear or cosine"), e);
  BOOST_TEST(has(e, "'cosine_with_restarts'"), e);
  BOOST_TEST(has(error_of([] { ll::lr_schedule{ll::schedule_kind::linear, 0.0, 0, 10}.lr_at(1); }), "--lr"));
  BOOST_TEST(has(error_of([] { ll::lr_schedule{ll::schedule_kind::linear, 1e-3, -1, 10}.lr_at(1); }), "--warmup-steps"));
  BOOST_TEST(has(error_of([] { ll::lr_schedule{ll::schedule_kind::linear, 1e-3, 0, 0}.lr_at(1); }), "--max-steps"));
  BOOST_TEST(has(error_of([] { ll::lr_schedule{ll::schedule_kind::linear, 1e-3, 0, 10}.lr_at(0); }), "got update 0"));
}

// ---- clipping ----------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(clip_norm_coefficient_and_disabled) {
  param_set ps;
  ps.add("a", 2);
  ps.add("b", 1);
  const auto reset = [&] { ps.grad[0] = {3.0f, 0.0f}, ps.grad[1] = {-4.0f}; };
  reset();
  auto refs = ps.refs();
  BOOST_TEST(ll::clip_grad_norm(refs, 1.0) == 5.0);  // pre-clip norm
  const float coef = float(1.0 / (5.0 + 1e-6));
  BOOST_TEST(bits(ps.grad[0][0]) == bits(3.0f * coef));
  BOOST_TEST(bits(ps.grad[1][0]) == bits(-4.0f * coef));
  for (double off : {0.0, -1.0, 10.0}) {  // disabled, disabled, coef > 1 clamps to 1: gradients untouched
    reset();
    BOOST_TEST(ll::clip_grad_norm(refs, off) == 5.0);
    BOOST_TEST(ps.grad[0][0] == 3.0f);
    BOOST_TEST(ps.grad[1][0] == -4.0f);
  }
}

BOOST_AUTO_TEST_CASE(clip_random_sizes_and_non_finite) {
  auto g = loralab::testing::rng(101);
  param_set ps;
  for (std::size_t n : {1u, 255u, 1000u, 200003u}) ps.add("p" + std::to_string(n), n);  // 200003: several chunks
  for (auto& v : ps.grad) fill_normal(g, v, 0.01);
  long double ref = 0;
  for (auto& v : ps.grad)
    for (float x : v) ref += (long double)x * x;
  const double norm = double(std::sqrt(ref));
  auto refs = ps.refs();
  const double max_norm = 0.25 * norm;
  const double got = ll::clip_grad_norm(refs, max_norm);
  BOOST_TEST(got == norm, tt::tolerance(1e-12));  // double accumulation of 2e5 terms: ~1e-11 relative at worst
  // After clipping the norm is max_norm·total/(total+1e-6), up to float rounding of each product (½ ulp each).
  BOOST_TEST(ll::clip_grad_norm(refs, 0.0) == max_norm * norm / (norm + 1e-6), tt::tolerance(2 * feps));

  ps.grad[2][7] = qnan;
  const float before = ps.grad[3][0];
  BOOST_TEST(std::isnan(ll::clip_grad_norm(refs, 1e-3)));
  BOOST_TEST(bits(ps.grad[3][0]) == bits(before), "a non-finite norm leaves the gradients alone");
  ps.grad[2][7] = inf;
  BOOST_TEST(std::isinf(ll::clip_grad_norm(refs, 1e-3)));
}

// ---- AdamW -------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(adamw_matches_double_reference) {
  auto g = loralab::testing::rng(201);
  const ll::adam_config cfg{0.9, 0.999, 1e-8, 0.1};
  ll::adamw opt(cfg);
  param_set ps;
  const std::vector<std::size_t> sizes = {1, 7, 300, 5000};
  for (std::size_t k = 0; k < sizes.size(); ++k) ps.add("layer" + std::to_string(k) + ".weight", sizes[k], k != 1);
  for (auto& v : ps.value) fill_normal(g, v);
  const ll::lr_schedule sched{ll::schedule_kind::linear, 1e-2, 2, 30};

  // torch's AdamW in double: p *= 1 - lr·wd; m, v EMAs; p -= lr/bc1 · m / (√v/√bc2 + eps)
  std::vector<std::vector<double>> p(ps.size()), m(ps.size()), v(ps.size());
  for (std::size_t k = 0; k < ps.size(); ++k) {
    p[k].assign(ps.value[k].begin(), ps.value[k].end());
    m[k].assign(sizes[k], 0.0), v[k].assign(sizes[k], 0.0);
  }
  // Error bound per element, accumulated along the run. Each step's float rounding adds at most a few ulps of
  // |p| (decay, add) and of the update lr·|u| (lerp, addcmul, sqrt, two divisions: the relative errors of m̂ and
  // √v̂ pass into u = m̂/(√v̂+eps) additively). The moments' recurrences contract (β < 1), so each step adds a
  // few ulps of max(|m|,|g|), resp. a few ulps of v relative. "A few" = 4 here (each op rounds by ½ ulp).
  std::vector<std::vector<double>> tol_p(ps.size()), tol_m(ps.size());
  for (std::size_t k = 0; k < ps.size(); ++k) tol_p[k].assign(sizes[k], 0.0), tol_m[k].assign(sizes[k], 0.0);
  double tol_v = 0.0;  // relative
  auto refs = ps.refs();
  for (int step = 1; step <= sched.total_steps; ++step) {
    const double lr = sched.lr_at(step);
    for (auto& gv : ps.grad) fill_normal(g, gv);
    const std::vector<std::vector<float>> p_before = ps.value;
    opt.step(refs, lr);
    if (step == 1)
      for (std::size_t k = 0; k < ps.size(); ++k)
        BOOST_TEST((ps.value[k] == p_before[k]), "warmup: the first update has lr 0 and leaves p bit-identical");
    const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.999, step);
    tol_v += 4 * feps;
    for (std::size_t k = 0; k < ps.size(); ++k) {
      for (std::size_t i = 0; i < sizes[k]; ++i) {
        const double gi = ps.grad[k][i];
        if (ps.decay[k]) p[k][i] *= 1 - lr * cfg.weight_decay;
        m[k][i] = 0.9 * m[k][i] + 0.1 * gi;
        v[k][i] = 0.999 * v[k][i] + 0.001 * gi * gi;
        const double u = (m[k][i] / bc1) / (std::sqrt(v[k][i]) / std::sqrt(bc2) + 1e-8);
        p[k][i] -= lr * u;
        tol_p[k][i] += 4 * feps * (std::fabs(p[k][i]) + lr * std::fabs(u));
        tol_m[k][i] += 4 * feps * std::max(std::fabs(m[k][i]), std::fabs(gi));
      }
    }
  }
  for (std::size_t k = 0; k < ps.size(); ++k) {
    const auto& st = opt.state_of(ps.names[k]);
    double ratio_p = 0, ratio_m = 0, err_v = 0;  // error / bound, worst element
    for (std::size_t i = 0; i < sizes[k]; ++i) {
      ratio_p = std::max(ratio_p, std::fabs(ps.value[k][i] - p[k][i]) / tol_p[k][i]);
      ratio_m = std::max(ratio_m, std::fabs(st.exp_avg[i] - m[k][i]) / tol_m[k][i]);
      err_v = std::max(err_v, std::fabs(st.exp_avg_sq[i] - v[k][i]) / v[k][i]);
    }
    BOOST_TEST_MESSAGE(ps.names[k] << ": worst error/bound p " << ratio_p << ", exp_avg " << ratio_m
                                   << ", exp_avg_sq " << err_v / tol_v);
    BOOST_TEST(ratio_p <= 1.0, ps.names[k] << ": p error exceeds its bound by " << ratio_p);
    BOOST_TEST(ratio_m <= 1.0, ps.names[k] << ": exp_avg error exceeds its bound by " << ratio_m);
    BOOST_TEST(err_v <= tol_v, ps.names[k] << ": exp_avg_sq relative error " << err_v << " > " << tol_v);
  }
  BOOST_TEST(opt.steps_taken() == 30);
}

BOOST_AUTO_TEST_CASE(weight_decay_is_decoupled) {
  auto g = loralab::testing::rng(202);
  const double lr = 0.05, wd = 0.1;
  const float factor = float(1.0 - lr * wd);
  // Zero gradients on fresh state: the Adam update is 0/(0+eps) = 0, so only the decay moves p.
  {
    param_set ps;
    ps.add("w", 1000, true);
    ps.add("bias", 10, false);
    for (auto& v : ps.value) fill_normal(g, v);
    const auto p0 = ps.value;
    ll::adamw opt({0.9, 0.999, 1e-8, wd});
    auto refs = ps.refs();
    opt.step(refs, lr);
    for (std::size_t i = 0; i < 1000; ++i) BOOST_TEST_REQUIRE(bits(ps.value[0][i]) == bits(p0[0][i] * factor));
    BOOST_TEST((ps.value[1] == p0[1]), "no-decay parameters are untouched");
  }
  // Decoupled: the decay never enters the moments (L2 would add wd·p to g), and shifts p by -lr·wd·p.
  {
    param_set a, b;
    a.add("w", 3000), b.add("w", 3000);
    fill_normal(g, a.value[0]);
    b.value = a.value;
    ll::adamw plain({0.9, 0.999, 1e-8, 0.0}), decayed({0.9, 0.999, 1e-8, wd});
    auto ra = a.refs(), rb = b.refs();
    for (int step = 0; step < 3; ++step) {
      fill_normal(g, a.grad[0]);
      b.grad = a.grad;
      const auto p0 = b.value;
      plain.step(ra, lr);
      decayed.step(rb, lr);
      BOOST_TEST((plain.state_of("w").exp_avg == decayed.state_of("w").exp_avg));
      BOOST_TEST((plain.state_of("w").exp_avg_sq == decayed.state_of("w").exp_avg_sq));
      if (step == 0) {  // same start: p_decayed - p_plain = -lr·wd·p0, up to the rounding of two adds
        double worst = 0;
        for (std::size_t i = 0; i < 3000; ++i) {
          const double want = -lr * wd * p0[0][i];
          worst = std::max(worst, std::fabs((double(b.value[0][i]) - a.value[0][i]) - want) /
                                      (std::fabs(p0[0][i]) + lr));
        }
        BOOST_TEST(worst <= 4 * feps);
      }
    }
  }
  // SGD: coupled L2 as torch.optim.SGD, p - lr·(g + wd·p), bit for bit.
  {
    param_set ps;
    ps.add("w", 100);
    fill_normal(g, ps.value[0]), fill_normal(g, ps.grad[0]);
    const auto p0 = ps.value[0];
    ll::sgd opt({0.0, wd});
    auto refs = ps.refs();
    opt.step(refs, lr);
    for (std::size_t i = 0; i < 100; ++i) {
      const float d = ps.grad[0][i] + float(wd) * p0[i];
      BOOST_TEST_REQUIRE(bits(ps.value[0][i]) == bits(p0[i] + float(-lr) * d));
    }
    BOOST_TEST(opt.state_bytes() == 0u);
  }
}

// ---- AdamW8bit ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(quantize_2d_equals_dynamic8_encode_on_all_midpoints) {
  auto g = loralab::testing::rng(301);
  const auto check_map = [&](const std::array<float, 256>& code, auto quantize_2d) {
    std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, -2.0f, inf, -inf, qnan};
    for (int i = 0; i < 255; ++i) {
      const float mid = (code[i] + code[i + 1]) * 0.5f;
      for (float x : {mid, std::nextafter(mid, -inf), std::nextafter(mid, inf), code[i], code[i + 1]}) xs.push_back(x);
    }
    std::uniform_real_distribution<float> u(-1.1f, 1.1f);
    for (int k = 0; k < 200000; ++k) xs.push_back(u(g));
    for (float x : xs)
      BOOST_TEST_REQUIRE(int(quantize_2d(code.data(), x)) == int(loralab::quant::dynamic8_encode(code.data(), x)),
                         "x=" << x);
    for (int i = 0; i < 255; ++i) {  // and both give bnb's documented tie rule: the even index of the pair
      const float mid = (code[i] + code[i + 1]) * 0.5f;
      BOOST_TEST_REQUIRE(int(quantize_2d(code.data(), mid)) == nearest_by_midpoints(code, mid), "midpoint " << i);
    }
  };
  check_map(cb::dynamic_signed, ll::quantize_2d<true>);
  check_map(cb::dynamic_unsigned, ll::quantize_2d<false>);
}

BOOST_AUTO_TEST_CASE(adamw8bit_state_equals_blockwise_reference) {
  auto g = loralab::testing::rng(302);
  const float lr = 1e-3f, wd = 0.01f;
  ll::adamw8bit opt({0.9, 0.999, 1e-8, wd});
  param_set ps;
  ps.add("a", 4096 + 37, true);   // a partial last block
  ps.add("b", 256 * 20, false);   // whole blocks, no decay
  for (auto& v : ps.value) fill_normal(g, v, 0.1);
  std::vector<ref_adamw8bit> ref = {ref_adamw8bit(ps.value[0].size()), ref_adamw8bit(ps.value[1].size())};
  std::vector<std::vector<float>> p_ref = ps.value;
  auto refs = ps.refs();
  for (int step = 1; step <= 4; ++step) {
    for (auto& v : ps.grad) fill_normal(g, v, 1e-2);
    if (step == 2) ps.grad[0][5] = qnan, ps.grad[0][300] = inf, ps.grad[1][17] = -inf;  // state zeroed, p kept
    if (step == 3) std::fill(ps.grad[1].begin() + 256, ps.grad[1].begin() + 512, 0.0f);  // a block of zero grads
    opt.step(refs, lr);
    for (std::size_t k = 0; k < ps.size(); ++k) {
      ref[k].step(p_ref[k], ps.grad[k], lr, ps.decay[k] ? wd : 0.0f);
      const auto& st = opt.state_of(ps.names[k]);
      BOOST_TEST_REQUIRE(st.quantized());
      for (std::size_t b = 0; b < st.absmax1.size(); ++b) {
        BOOST_TEST_REQUIRE(bits(st.absmax1[b]) == bits(ref[k].a1[b]), ps.names[k] << " step " << step << " block " << b);
        BOOST_TEST_REQUIRE(bits(st.absmax2[b]) == bits(ref[k].a2[b]), ps.names[k] << " step " << step << " block " << b);
      }
      for (std::size_t i = 0; i < ps.value[k].size(); ++i) {
        BOOST_TEST_REQUIRE(int(st.state1[i]) == int(ref[k].q1[i]), ps.names[k] << " step " << step << " i " << i);
        BOOST_TEST_REQUIRE(int(st.state2[i]) == int(ref[k].q2[i]), ps.names[k] << " step " << step << " i " << i);
        BOOST_TEST_REQUIRE(bits(ps.value[k][i]) == bits(p_ref[k][i]), ps.names[k] << " step " << step << " i " << i);
      }
    }
    if (step == 2) {  // a non-finite gradient zeroes that element's state: code of 0 in both maps
      BOOST_TEST(cb::dynamic_signed[opt.state_of("a").state1[5]] == 0.0f);
      BOOST_TEST(int(opt.state_of("a").state2[300]) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(adamw8bit_zero_block_and_first_step) {
  // All-zero state in a block: absmax 0, and the kernel's s/absmax = 0/0 = NaN ends its search at index 0;
  // state1's sign fix-up then steps -0.99 (index 0) down to index 255 (uint8 wrap). Dequantized, both are 0.
  ll::adamw8bit opt;
  param_set ps;
  ps.add("z", 4096);
  auto refs = ps.refs();
  opt.step(refs, 1e-3);
  const auto& st = opt.state_of("z");
  for (std::size_t b = 0; b < st.absmax1.size(); ++b) BOOST_TEST((st.absmax1[b] == 0.0f && st.absmax2[b] == 0.0f));
  BOOST_TEST((std::all_of(st.state1.begin(), st.state1.end(), [](std::uint8_t c) { return c == 255; })));
  BOOST_TEST((std::all_of(st.state2.begin(), st.state2.end(), [](std::uint8_t c) { return c == 0; })));
  BOOST_TEST((std::all_of(ps.value[0].begin(), ps.value[0].end(), [](float x) { return x == 0.0f; })));
}

BOOST_AUTO_TEST_CASE(adamw8bit_small_params_keep_32bit_state) {
  auto g = loralab::testing::rng(303);
  const float lr = 2e-3f, wd = 0.05f;
  ll::adamw8bit opt({0.9, 0.999, 1e-8, wd});
  param_set ps;
  ps.add("one", 1);
  ps.add("below", ll::adamw8bit::min_8bit_size - 1);
  ps.add("at", ll::adamw8bit::min_8bit_size);
  for (auto& v : ps.value) fill_normal(g, v);
  ref_adam32_bnb r1(1), r2(ps.value[1].size());
  auto p1 = ps.value[0], p2 = ps.value[1];
  auto refs = ps.refs();
  for (int step = 1; step <= 3; ++step) {
    for (auto& v : ps.grad) fill_normal(g, v);
    opt.step(refs, lr);
    r1.step(p1, ps.grad[0], lr, wd), r2.step(p2, ps.grad[1], lr, wd);
    BOOST_TEST_REQUIRE(bits(ps.value[0][0]) == bits(p1[0]));
    for (std::size_t i = 0; i < p2.size(); ++i) BOOST_TEST_REQUIRE(bits(ps.value[1][i]) == bits(p2[i]), "i " << i);
  }
  BOOST_TEST(!opt.state_of("one").quantized());
  BOOST_TEST(!opt.state_of("below").quantized());
  BOOST_TEST(opt.state_of("at").quantized());
  BOOST_TEST((opt.state_of("below").state1_f32 == r2.m));
  BOOST_TEST((opt.state_of("below").state2_f32 == r2.v));
  const auto sd = opt.state_dict();
  BOOST_TEST(sd.at("below.state1").size() == 4 * (ll::adamw8bit::min_8bit_size - 1));
  BOOST_TEST(!sd.contains("below.absmax1"));
  BOOST_TEST(sd.at("at.state1").size() == ll::adamw8bit::min_8bit_size);
  BOOST_TEST(sd.at("at.absmax1").size() == 4 * (ll::adamw8bit::min_8bit_size / 256));
  BOOST_TEST((floats_of(sd.at("below.state2")) == r2.v));
}

BOOST_AUTO_TEST_CASE(adamw8bit_tracks_fp32_adamw_on_a_quadratic) {
  // loss = ½·mean(a·(p − t)²): separable, so every coordinate is its own 1-D problem and Adam's per-coordinate
  // steps are what differ. The 8-bit state rounds m and v to the nearest dynamic-map code each step (a relative
  // error of up to ~1/2 code spacing, and much more for tiny values within a block), so this is a tracking check,
  // not a parity check: the two loss curves must fall alike.
  auto g = loralab::testing::rng(304);
  const std::size_t n = 16384;
  std::vector<float> a(n), target(n);
  std::uniform_real_distribution<float> ua(0.5f, 2.0f);
  for (float& x : a) x = ua(g);
  fill_normal(g, target);
  const auto loss_of = [&](const std::vector<float>& p) {
    double s = 0;
    for (std::size_t i = 0; i < n; ++i) s += 0.5 * a[i] * double(p[i] - target[i]) * double(p[i] - target[i]);
    return s / double(n);
  };
  param_set p32, p8;
  p32.add("w", n), p8.add("w", n);
  ll::adamw fp32;
  ll::adamw8bit q8;
  const ll::lr_schedule sched{ll::schedule_kind::cosine, 0.05, 10, 300};
  auto r32 = p32.refs(), r8 = p8.refs();
  const double loss0 = loss_of(p32.value[0]);
  double worst_gap = 0;
  for (int step = 1; step <= sched.total_steps; ++step) {
    for (auto* ps : {&p32, &p8})
      for (std::size_t i = 0; i < n; ++i) ps->grad[0][i] = a[i] * (ps->value[0][i] - target[i]) / float(n);
    fp32.step(r32, sched.lr_at(step));
    q8.step(r8, sched.lr_at(step));
    worst_gap = std::max(worst_gap, std::fabs(loss_of(p8.value[0]) - loss_of(p32.value[0])) / loss0);
  }
  const double l32 = loss_of(p32.value[0]), l8 = loss_of(p8.value[0]);
  BOOST_TEST_MESSAGE("quadratic: loss0 " << loss0 << ", fp32 " << l32 << ", 8-bit " << l8 << ", worst gap / loss0 "
                                         << worst_gap);
  BOOST_TEST(l32 < 1e-3 * loss0);
  BOOST_TEST(l8 < 1e-3 * loss0);
  BOOST_TEST(worst_gap < 0.02);  // the curves never part by more than 2% of the starting loss
  double dist = 0, scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    dist += double(p8.value[0][i] - p32.value[0][i]) * (p8.value[0][i] - p32.value[0][i]);
    scale += double(target[i]) * target[i];
  }
  BOOST_TEST(std::sqrt(dist / scale) < 0.02);  // and the parameters end within 2% of the distance travelled
}

BOOST_AUTO_TEST_CASE(state_bytes_8bit_vs_32bit) {
  const std::size_t n = 1'000'000;
  param_set ps;
  ps.add("big", n);
  auto refs = ps.refs();
  auto a = ll::make_optimizer("adamw", 0.0), q = ll::make_optimizer("adamw8bit", 0.0);
  ll::optimizer_config mom;
  mom.momentum = 0.9;
  auto s = ll::make_optimizer("sgd", mom);
  for (auto* o : {a.get(), q.get(), s.get()}) {
    const std::size_t planned = o->planned_state_bytes(refs);
    BOOST_TEST(o->state_bytes() == 0u, o->name() << ": state is allocated lazily");
    o->step(refs, 1e-3);
    BOOST_TEST(o->state_bytes() == planned, o->name() << ": the analytic number is what step() allocated");
  }
  BOOST_TEST(a->state_bytes() == 8 * n);
  BOOST_TEST(s->state_bytes() == 4 * n);
  const std::size_t blocks = (n + 255) / 256;  // 3907: the last block holds 64
  BOOST_TEST(q->state_bytes() == 2 * n + 8 * blocks);
  BOOST_TEST(double(q->state_bytes()) / n == 2.0 + 8.0 / 256, tt::tolerance(1e-3));
}

// ---- checkpoints -------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(state_dict_resume_is_bit_identical) {
  auto g = loralab::testing::rng(401);
  ll::optimizer_config cfg;
  cfg.weight_decay = 0.01, cfg.momentum = 0.9;
  const ll::lr_schedule sched{ll::schedule_kind::cosine, 1e-2, 2, 10};
  param_set start;
  start.add("model.layers.0.self_attn.q_proj.lora_A.weight", 5000);
  start.add("model.layers.0.self_attn.q_proj.lora_B.weight", 300);
  start.add("model.norm.weight", 4096 + 10, false);
  for (auto& v : start.value) fill_normal(g, v);
  std::vector<std::vector<std::vector<float>>> grads(10);
  for (auto& step_grads : grads) {
    step_grads = start.grad;
    for (auto& v : step_grads) fill_normal(g, v);
  }
  for (std::string_view name : {"adamw", "adamw8bit", "sgd"}) {
    BOOST_TEST_CONTEXT("optimizer " << name) {
      param_set straight = start, resumed = start;
      auto o1 = ll::make_optimizer(name, cfg);
      auto r1 = straight.refs();
      for (int k = 1; k <= 10; ++k) {
        straight.grad = grads[k - 1];
        o1->step(r1, sched.lr_at(k));
      }
      auto o2 = ll::make_optimizer(name, cfg);
      auto r2 = resumed.refs();
      for (int k = 1; k <= 5; ++k) {
        resumed.grad = grads[k - 1];
        o2->step(r2, sched.lr_at(k));
      }
      const ll::state_dict_t saved = o2->state_dict();
      o2.reset();
      auto o3 = ll::make_optimizer(name, cfg);
      o3->load_state_dict(saved);
      BOOST_TEST(o3->steps_taken() == 5);
      BOOST_TEST((o3->state_dict() == saved), "state_dict → load_state_dict → state_dict is the identity");
      std::vector<ll::param_ref> r3(r2.rbegin(), r2.rend());  // another order: state is matched by name
      for (int k = 6; k <= 10; ++k) {
        resumed.grad = grads[k - 1];
        o3->step(r3, sched.lr_at(k));
      }
      for (std::size_t p = 0; p < start.size(); ++p)
        BOOST_TEST(std::memcmp(straight.value[p].data(), resumed.value[p].data(), 4 * straight.value[p].size()) == 0,
                   start.names[p] << " differs after resuming");
      auto s1 = o1->state_dict(), s3 = o3->state_dict();
      BOOST_TEST((s1 == s3), "the optimizer states differ after resuming");
      BOOST_TEST(o3->steps_taken() == 10);
    }
  }
}

BOOST_AUTO_TEST_CASE(results_do_not_depend_on_the_thread_count) {
  auto g = loralab::testing::rng(402);
  param_set start;
  start.add("big", 300'001);  // several OpenMP chunks and a partial 8-bit block
  start.add("small", 1000);
  for (auto& v : start.value) fill_normal(g, v);
  for (auto& v : start.grad) fill_normal(g, v);
  ll::optimizer_config cfg;
  cfg.weight_decay = 0.01, cfg.momentum = 0.9;
  const int max_threads = omp_get_max_threads();
  for (std::string_view name : {"adamw", "adamw8bit", "sgd"}) {
    std::vector<param_set> runs;
    std::vector<double> norms;
    for (int threads : {1, std::max(4, max_threads)}) {
      omp_set_num_threads(threads);
      param_set ps = start;
      auto refs = ps.refs();
      auto opt = ll::make_optimizer(name, cfg);
      for (int k = 0; k < 3; ++k) {
        norms.push_back(ll::clip_grad_norm(refs, 1.0));
        opt->step(refs, 1e-3);
      }
      runs.push_back(std::move(ps));
    }
    omp_set_num_threads(max_threads);
    BOOST_TEST((runs[0].value == runs[1].value), name << ": parameters depend on the thread count");
    for (std::size_t k = 0; k < 3; ++k) BOOST_TEST(norms[k] == norms[k + 3]);
  }
}

BOOST_AUTO_TEST_CASE(state_dict_before_the_first_step_loads) {
  param_set ps;
  ps.add("w", 10);
  auto opt = ll::make_optimizer("adamw", 0.0);
  const auto empty = opt->state_dict();
  BOOST_TEST(empty.size() == 2u);  // "optimizer" and "step"
  auto fresh = ll::make_optimizer("adamw", 0.0);
  fresh->load_state_dict(empty);
  auto refs = ps.refs();
  fresh->step(refs, 1e-3);  // allocates as on a fresh start
  BOOST_TEST(fresh->steps_taken() == 1);
}

// ---- errors ------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(bad_names_and_configs) {
  std::string e = error_of([] { ll::make_optimizer("adam", 0.0); });
  BOOST_TEST(has(e, "adamw, adamw8bit or sgd"), e);
  BOOST_TEST(has(e, "'adam'"), e);
  BOOST_TEST(has(error_of([] { ll::adamw({1.0, 0.999, 1e-8, 0.0}); }), "--adam-beta1"));
  BOOST_TEST(has(error_of([] { ll::make_optimizer("adamw8bit", -0.1); }), "--weight-decay"));
  BOOST_TEST(has(error_of([] { ll::sgd({1.5, 0.0}); }), "--momentum"));
  param_set ps;
  ps.add("w", 3);
  auto refs = ps.refs();
  ll::adamw opt;
  BOOST_TEST(has(error_of([&] { opt.step(refs, -1e-3); }), "learning rate"));
  for (auto kind : {ll::optimizer_kind::adamw, ll::optimizer_kind::adamw8bit, ll::optimizer_kind::sgd})
    BOOST_TEST((ll::parse_optimizer_kind(ll::to_string(kind)) == kind));
}

BOOST_AUTO_TEST_CASE(parameter_list_must_not_change) {
  for (std::string_view name : {"adamw", "adamw8bit", "sgd"}) {
    BOOST_TEST_CONTEXT("optimizer " << name) {
      auto opt = ll::make_optimizer(name, 0.0);
      param_set ps;
      ps.add("blk.A", 300);
      ps.add("blk.B", 40);
      auto refs = ps.refs();
      opt->step(refs, 1e-3);
      auto grown = refs;
      grown[0].size = 301;
      std::string e = error_of([&] { opt->step(grown, 1e-3); });
      BOOST_TEST((has(e, "'blk.A'") && has(e, "301") && has(e, "300")), e);
      auto renamed = refs;
      renamed[1].name = "blk.C";
      e = error_of([&] { opt->step(renamed, 1e-3); });
      BOOST_TEST((has(e, "'blk.C'") && has(e, "'blk.B'")), e);
      e = error_of([&] { opt->step(std::span(refs).first(1), 1e-3); });
      BOOST_TEST(has(e, "parameter list changed"), e);
      opt->step(refs, 1e-3);  // the unchanged list still works
      BOOST_TEST(opt->steps_taken() == 2);

      auto dup = ll::make_optimizer(name, 0.0);
      auto twice = refs;
      twice[1].name = "blk.A";
      e = error_of([&] { dup->step(twice, 1e-3); });
      BOOST_TEST(has(e, "'blk.A' appears twice"), e);
      auto null_grad = refs;
      null_grad[0].grad = nullptr;
      e = error_of([&] { ll::make_optimizer(name, 0.0)->step(null_grad, 1e-3); });
      BOOST_TEST(has(e, "null"), e);
    }
  }
}

BOOST_AUTO_TEST_CASE(load_state_dict_errors_name_the_entry) {
  param_set ps;
  ps.add("x.weight", 300);
  ps.add("y.weight", 5000);
  auto refs = ps.refs();
  auto opt = ll::make_optimizer("adamw", 0.0);
  opt->step(refs, 1e-3);
  const ll::state_dict_t sd = opt->state_dict();
  const auto load = [](std::string_view name, ll::state_dict_t d) {
    return error_of([&] { ll::make_optimizer(name, 0.0)->load_state_dict(d); });
  };
  {
    auto d = sd;
    d.erase("x.weight.exp_avg_sq");
    const auto e = load("adamw", d);
    BOOST_TEST(has(e, "'x.weight.exp_avg_sq' is missing"), e);
  }
  {
    auto d = sd;
    d["x.weight.exp_avg_sq"].resize(4 * 299);
    const auto e = load("adamw", d);
    BOOST_TEST((has(e, "'x.weight.exp_avg_sq'") && has(e, "1196 bytes") && has(e, "expected 1200")), e);
  }
  {
    auto d = sd;
    d["x.weight.momentum"] = {};
    const auto e = load("adamw", d);
    BOOST_TEST(has(e, "unexpected state entry 'x.weight.momentum'"), e);
  }
  {
    auto d = sd;
    d.erase("step");
    BOOST_TEST(has(load("adamw", d), "'step' is missing"));
  }
  {
    const auto e = load("adamw8bit", sd);
    BOOST_TEST((has(e, "from optimizer 'adamw'") && has(e, "'adamw8bit'")), e);
  }
  {  // an 8-bit entry set for a parameter too small for 8-bit state
    auto q = ll::make_optimizer("adamw8bit", 0.0);
    q->step(refs, 1e-3);
    auto d = q->state_dict();
    d["y.weight.state1"].resize(4000), d["y.weight.state2"].resize(4000);
    d["y.weight.absmax1"].resize(4 * 16), d["y.weight.absmax2"].resize(4 * 16);
    const auto e = load("adamw8bit", d);
    BOOST_TEST((has(e, "'y.weight'") && has(e, "4000")), e);
  }
  // The checkpoint and the parameter list disagree: caught at the next step, naming the parameter.
  {
    auto o = ll::make_optimizer("adamw", 0.0);
    o->load_state_dict(sd);
    param_set other;
    other.add("x.weight", 300);
    other.add("y.weight", 5000);
    other.add("z.weight", 8);
    auto r = other.refs();
    auto e = error_of([&] { o->step(r, 1e-3); });
    BOOST_TEST(has(e, "no entry for parameter 'z.weight'"), e);
    o->load_state_dict(sd);
    e = error_of([&] { o->step(std::span(r).first(1), 1e-3); });
    BOOST_TEST(has(e, "holds parameter 'y.weight', which is not in the parameter list"), e);
    o->load_state_dict(sd);
    r[1].size = 5001;
    e = error_of([&] { o->step(std::span(r).first(2), 1e-3); });
    BOOST_TEST((has(e, "'y.weight' has 5001 elements") && has(e, "holds 5000")), e);
  }
}

BOOST_AUTO_TEST_SUITE_END()
