// SPDX-License-Identifier: MIT
#pragma once
// bitsandbytes AdamW8bit (HF optim="adamw_bnb_8bit"): blockwise 8-bit state with the CUDA kernel's formulas
// (shared/specs/bitsandbytes.md §9); parameters with < 4096 elements keep 32-bit state.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.hpp"
#include "quant/codebooks.hpp"
#include "quant/codec.hpp"
#include "train/adamw.hpp"

namespace loralab::train {

namespace detail {

/// bnb's quantize_2D<SIGNED> (kernels.cu), the 8-bit optimizers' requantizer: dynamic8_encode's 7-step search,
/// but starting from lower = SIGNED ? -1 : 0 with no end-point fix-up. (Its first step reads a 3-entry cache of
/// code[63], code[127], code[191]: the same entries code[pivot] gives.) For bnb's maps it returns the same
/// index as dynamic8_encode for every x, because code[255] == 1.0 (the initial `upper`), and when the search
/// never moves up the result is index 0 whatever `lower` is; the tests check that on every midpoint.
template <bool Signed>
inline std::uint8_t quantize_2d(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = Signed ? -1.0f : 0.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (x > val) return static_cast<std::uint8_t>(x > (upper + val) * 0.5f ? upper_pivot : pivot);
  return static_cast<std::uint8_t>(x < (lower + val) * 0.5f ? lower_pivot : pivot);
}

}  // namespace detail

/// bitsandbytes AdamW8bit (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"), the semantics of
/// CUDA kOptimizerStatic8bit2StateBlockwise<float, ADAM, 256, 1> (spec bitsandbytes §9). Per block of 256:
///   s2 = qmap2[c2]·absmax2·β2 + (1−β2)·g·g;  s1 = qmap1[c1]·absmax1·β1 + (1−β1)·g     (non-finite g: s1 = s2 = 0)
///   absmax_i = max |s_i| over the block;   p += step_size · s1 / (√s2 + c2·eps);   p *= 1 − lr·wd   (wd > 0)
///   c1 = quantize_2D<signed>(s1/absmax1) with the sign fix-up;  c2 = quantize_2D<unsigned>(s2/absmax2)
/// with c1 = 1 − β1^t, c2 = √(1 − β2^t), step_size = −lr·c2/c1. Weight decay comes AFTER the step (bnb's order,
/// unlike torch). Parameters with fewer than min_8bit_size elements keep 32-bit state and follow
/// kOptimizer32bit2State's formulas. Fresh state is all-zero bytes and absmax 0, as bnb allocates it.
///
/// Two kernel details reproduced on purpose: (1) CUDA fast math flushes subnormal results; the state values s1,
/// s2 are flushed (quant::ftz), so the absmax and the codes see what the kernel sees. (2) The block max runs
/// over all 256 lanes: in the last, partial block the padding lanes load code 128 for state1 (5.5e-7, not 0) and
/// g = 0, so they contribute |qmap1[128]·absmax1·β1|.
///
/// State per parameter: state1, state2 (uint8 codes, 1 byte each per element) and absmax1, absmax2 (float32 per
/// block): 2 + 8/256 bytes per element, versus 8 for adamw.
class adamw8bit final : public optimizer {
 public:
  static constexpr std::size_t block_size = 256;      ///< bnb >= 0.44 (2048 before)
  static constexpr std::size_t min_8bit_size = 4096;  ///< bnb's default min_8bit_size
  static constexpr std::uint8_t pad_code1 = 128;      ///< what the kernel loads for state1 past the end
  static constexpr const std::array<float, 256>& qmap1 = quant::codebooks::dynamic_signed;
  static constexpr const std::array<float, 256>& qmap2 = quant::codebooks::dynamic_unsigned;

  struct slot {
    std::string name;
    std::size_t size = 0;
    std::vector<std::uint8_t> state1, state2;      // (size) codes into qmap1 / qmap2     (8-bit parameters)
    std::vector<float> absmax1, absmax2;           // (blocks(size))                       (8-bit parameters)
    std::vector<float> state1_f32, state2_f32;     // (size)                               (32-bit parameters)
    bool quantized() const { return size >= min_8bit_size; }
  };

  static std::size_t blocks(std::size_t n) { return (n + block_size - 1) / block_size; }

  /// weight_decay comes from the caller: HF's adamw_bnb_8bit passes the Trainer's (default 0), not bnb's 1e-2.
  explicit adamw8bit(adam_config cfg = {}) : cfg_(cfg) { cfg_.validate(); }

  std::string_view name() const override { return "adamw8bit"; }
  const adam_config& config() const { return cfg_; }
  const slot& state_of(std::string_view param) const { return table_.find(param, name()); }

  void step(std::span<const param_ref> params, double lr) override {
    detail::check_lr(name(), lr);
    table_.bind(params, name(), [](const param_ref& p) {
      slot s{p.name, p.size, {}, {}, {}, {}, {}, {}};
      if (s.quantized()) {
        s.state1.assign(p.size, 0);
        s.state2.assign(p.size, 0);
        s.absmax1.assign(blocks(p.size), 0.0f);
        s.absmax2.assign(blocks(p.size), 0.0f);
      } else {
        s.state1_f32.assign(p.size, 0.0f);
        s.state2_f32.assign(p.size, 0.0f);
      }
      return s;
    });
    ++step_;
    // bnb passes lr, betas, eps, weight_decay as C floats and step as an int.
    const kernel_args a = make_args(lr, step_);
    for (std::size_t k = 0; k < params.size(); ++k) {
      const param_ref& p = params[k];
      slot& s = table_.slots[k];
      const float wd = p.decay ? float(cfg_.weight_decay) : 0.0f;
      if (s.quantized()) {
        const std::int64_t nb = std::int64_t(blocks(p.size));
#pragma omp parallel for schedule(static) if (nb > 16)
        for (std::int64_t b = 0; b < nb; ++b) update_block(a, wd, p, s, std::size_t(b));
      } else {
        update_32bit(a, wd, p, s);
      }
    }
  }

  std::size_t state_bytes() const override {
    std::size_t b = 0;
    for (const slot& s : table_.slots)
      b += detail::capacity_bytes(s.state1) + detail::capacity_bytes(s.state2) + detail::capacity_bytes(s.absmax1) +
           detail::capacity_bytes(s.absmax2) + detail::capacity_bytes(s.state1_f32) +
           detail::capacity_bytes(s.state2_f32);
    return b;
  }
  static std::size_t planned_bytes(std::size_t n) {
    return n >= min_8bit_size ? 2 * n + 2 * sizeof(float) * blocks(n) : 2 * sizeof(float) * n;
  }
  std::size_t planned_state_bytes(std::span<const param_ref> params) const override {
    std::size_t b = 0;
    for (const param_ref& p : params) b += planned_bytes(p.size);
    return b;
  }

  /// bnb's buffer names: 8-bit parameters have state1, state2 (uint8), absmax1, absmax2 (float32); 32-bit ones
  /// have state1, state2 (float32). The maps (qmap1/qmap2) are the hard-coded tables, not stored.
  state_dict_t state_dict() const override {
    state_dict_t sd;
    const std::string_view n = name();
    sd["optimizer"] = std::vector<std::uint8_t>(n.begin(), n.end());
    sd["step"] = detail::to_bytes(std::vector<std::int64_t>{step_});
    for (const slot& s : table_.slots) {
      if (s.quantized()) {
        sd[s.name + ".state1"] = s.state1;
        sd[s.name + ".state2"] = s.state2;
        sd[s.name + ".absmax1"] = detail::to_bytes(s.absmax1);
        sd[s.name + ".absmax2"] = detail::to_bytes(s.absmax2);
      } else {
        sd[s.name + ".state1"] = detail::to_bytes(s.state1_f32);
        sd[s.name + ".state2"] = detail::to_bytes(s.state2_f32);
      }
    }
    return sd;
  }
  void load_state_dict(const state_dict_t& sd) override {
    const std::string_view opt = name();
    const detail::parsed_state ps = detail::parse_state_dict(sd, opt, {"state1", "state2", "absmax1", "absmax2"});
    std::vector<slot> loaded;
    for (const auto& [param, entries] : ps.params) {
      const auto& s1 = detail::parsed_state::need(opt, param, entries, "state1");
      const auto& s2 = detail::parsed_state::need(opt, param, entries, "state2");
      slot s{param, 0, {}, {}, {}, {}, {}, {}};
      if (entries.contains("absmax1") || entries.contains("absmax2")) {  // 8-bit state
        const auto& a1 = detail::parsed_state::need(opt, param, entries, "absmax1");
        const auto& a2 = detail::parsed_state::need(opt, param, entries, "absmax2");
        s.size = s1.size();
        LORALAB_CHECK(s.quantized(), opt, ": '", param, "' has 8-bit state for ", s.size,
                      " elements; parameters under ", min_8bit_size, " elements keep 32-bit state");
        s.state1 = s1;
        s.state2 = detail::from_bytes<std::uint8_t>(s2, s.size, opt, param + ".state2");
        s.absmax1 = detail::from_bytes<float>(a1, blocks(s.size), opt, param + ".absmax1");
        s.absmax2 = detail::from_bytes<float>(a2, blocks(s.size), opt, param + ".absmax2");
      } else {  // 32-bit state
        LORALAB_CHECK(s1.size() % sizeof(float) == 0, opt, ": state entry '", param, ".state1' holds ", s1.size(),
                      " bytes, not a whole number of floats (and there is no absmax1 for 8-bit state)");
        s.size = s1.size() / sizeof(float);
        LORALAB_CHECK(!s.quantized(), opt, ": '", param, "' has 32-bit state for ", s.size, " elements; from ",
                      min_8bit_size, " elements on the state is 8-bit (state1, state2, absmax1, absmax2)");
        s.state1_f32 = detail::from_bytes<float>(s1, s.size, opt, param + ".state1");
        s.state2_f32 = detail::from_bytes<float>(s2, s.size, opt, param + ".state2");
      }
      loaded.push_back(std::move(s));
    }
    table_.load(std::move(loaded), ps.step > 0 || !ps.params.empty());
    step_ = ps.step;
  }
  std::string describe() const override {
    std::ostringstream os;
    os << "adamw8bit{" << cfg_ << " block_size=" << block_size << " min_8bit_size=" << min_8bit_size << "}";
    return os.str();
  }

 private:
  struct kernel_args {
    float lr, beta1, beta2, eps;
    float correction1, correction2, step_size;
  };
  kernel_args make_args(double lr, std::int64_t t) const {
    kernel_args a{};
    a.lr = float(lr), a.beta1 = float(cfg_.beta1), a.beta2 = float(cfg_.beta2), a.eps = float(cfg_.eps);
    a.correction1 = 1.0f - std::pow(a.beta1, float(t));              // CUDA: __powf (8-bit), powf (32-bit)
    a.correction2 = std::sqrt(1.0f - std::pow(a.beta2, float(t)));
    a.step_size = (-a.lr * a.correction2) / a.correction1;            // CUDA 8-bit: __fdividef
    return a;
  }

  /// One 256-element block of one 8-bit parameter, as one CUDA thread block runs it.
  static void update_block(const kernel_args& a, float wd, const param_ref& p, slot& st, std::size_t b) {
    const std::size_t lo = b * block_size, hi = std::min(p.size, lo + block_size);
    const float am1 = st.absmax1[b], am2 = st.absmax2[b];
    std::array<float, block_size> s1{}, s2{};
    float new_am1 = quant::absmax_init, new_am2 = quant::absmax_init;
    for (std::size_t i = lo; i < hi; ++i) {
      const float g = p.grad[i];
      float x1 = 0.0f, x2 = 0.0f;
      if (std::isfinite(g)) {
        x2 = qmap2[st.state2[i]] * am2;
        x2 = (x2 * a.beta2) + (((1.0f - a.beta2) * g) * g);
        x1 = qmap1[st.state1[i]] * am1;
        x1 = (x1 * a.beta1) + ((1.0f - a.beta1) * g);
      }
      s1[i - lo] = quant::ftz(x1), s2[i - lo] = quant::ftz(x2);
      new_am1 = quant::absmax_step(new_am1, s1[i - lo]);
      new_am2 = quant::absmax_step(new_am2, s2[i - lo]);
    }
    if (hi - lo < block_size) {  // padding lanes: code 128 / code 0 and g = 0 (s2 = 0·… = 0)
      new_am1 = quant::absmax_step(new_am1, quant::ftz((qmap1[pad_code1] * am1) * a.beta1 + (1.0f - a.beta1) * 0.0f));
      new_am2 = quant::absmax_step(new_am2, 0.0f);
    }
    st.absmax1[b] = new_am1, st.absmax2[b] = new_am2;
    for (std::size_t i = lo; i < hi; ++i) {
      if (!std::isfinite(p.grad[i])) continue;  // the kernel leaves p alone (its state becomes 0)
      const float x1 = s1[i - lo], x2 = s2[i - lo];
      float v = p.value[i] + a.step_size * (x1 / (std::sqrt(x2) + a.correction2 * a.eps));
      if (wd > 0.0f) v = v * (1.0f - a.lr * wd);
      p.value[i] = v;
    }
    for (std::size_t i = lo; i < hi; ++i) {
      const float x1 = s1[i - lo], x2 = s2[i - lo];
      std::uint8_t c1 = detail::quantize_2d<true>(qmap1.data(), x1 / new_am1);
      // the sign fix-up: m keeps its sign through quantization (index 0 - 1 wraps to 255, as the CUDA uint8 does)
      if (std::signbit(qmap1[c1]) != std::signbit(x1)) c1 = std::uint8_t(x1 > 0.0f ? c1 + 1 : c1 - 1);
      st.state1[i] = c1;
      st.state2[i] = detail::quantize_2d<false>(qmap2.data(), x2 / new_am2);
    }
  }

  /// kOptimizer32bit2State<float, ADAM> (update_scale 1, skip_zeros false): non-finite g propagates.
  static void update_32bit(const kernel_args& a, float wd, const param_ref& p, slot& st) {
    float* s1 = st.state1_f32.data();
    float* s2 = st.state2_f32.data();
    for (std::size_t i = 0; i < p.size; ++i) {
      const float g = p.grad[i];
      s1[i] = s1[i] * a.beta1 + ((1.0f - a.beta1) * g);
      s2[i] = s2[i] * a.beta2 + ((1.0f - a.beta2) * (g * g));
      float v = p.value[i] + (a.step_size * (s1[i] / (std::sqrt(s2[i]) + (a.eps * a.correction2))));
      if (wd > 0.0f) v = v * (1.0f - (a.lr * wd));
      p.value[i] = v;
    }
  }

  adam_config cfg_;
  detail::slot_table<slot> table_;
};

}  // namespace loralab::train
