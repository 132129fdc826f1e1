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
#include "train/adamw8bit_element.hpp"

namespace loralab::train {

/// bitsandbytes AdamW8bit (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"), the semantics of
/// CUDA kOptimizerStatic8bit2StateBlockwise<float, ADAM, 256, 1> (spec bitsandbytes §9). Per block of 256:
///   s2 = qmap2[c2]·absmax2·β2 + (1−β2)·g·g;  s1 = qmap1[c1]·absmax1·β1 + (1−β1)·g     (non-finite g: s1 = s2 = 0)
///   absmax_i = max |s_i| over the block;   p += step_size · s1 / (√s2 + c2·eps);   p *= 1 − lr·wd   (wd > 0)
///   c1 = quantize_2D<signed>(s1/absmax1) with the sign fix-up;  c2 = quantize_2D<unsigned>(s2/absmax2)
/// with c1 = 1 − β1^t, c2 = √(1 − β2^t), step_size = −lr·c2/c1. Weight decay comes AFTER the step (bnb's order,
/// unlike torch). Parameters with fewer than min_8bit_size elements keep 32-bit state and follow
/// kOptimizer32bit2State's formulas. Fresh state is all-zero bytes and absmax 0, as bnb allocates it. The per-element
/// math is train/adamw8bit_element.hpp's, which the CUDA kernel (kernels/train_step.cu) runs too.
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
    const adamw8bit_constants a = constants(lr, step_);
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
  /// The scalars of step t at learning rate lr, as bnb computes them for its kernel (CUDA: __powf and __fdividef in the
  /// 8-bit kernel; the host's powf and division give the same floats for these inputs, checked against bnb).
  adamw8bit_constants constants(double lr, std::int64_t t) const {
    adamw8bit_constants a{};
    a.lr = float(lr), a.beta1 = float(cfg_.beta1), a.beta2 = float(cfg_.beta2), a.eps = float(cfg_.eps);
    a.correction1 = 1.0f - std::pow(a.beta1, float(t));
    a.correction2 = std::sqrt(1.0f - std::pow(a.beta2, float(t)));
    a.step_size = (-a.lr * a.correction2) / a.correction1;
    return a;
  }
  /// The steps taken so far (t of the last step).
  std::int64_t steps_taken() const { return step_; }

  std::string describe() const override {
    std::ostringstream os;
    os << "adamw8bit{" << cfg_ << " block_size=" << block_size << " min_8bit_size=" << min_8bit_size << "}";
    return os.str();
  }


 private:
  /// One 256-element block of one 8-bit parameter, as one CUDA thread block runs it (kernels/train_step.cu).
  static void update_block(const adamw8bit_constants& a, float wd, const param_ref& p, slot& st, std::size_t b) {
    const std::size_t lo = b * block_size, hi = std::min(p.size, lo + block_size);
    const float am1 = st.absmax1[b], am2 = st.absmax2[b];
    std::array<float, block_size> s1{}, s2{};
    float new_am1 = quant::absmax_init, new_am2 = quant::absmax_init;
    for (std::size_t i = lo; i < hi; ++i) {
      adamw8bit_moments(a, p.grad[i], qmap1[st.state1[i]], am1, qmap2[st.state2[i]], am2, s1[i - lo], s2[i - lo]);
      new_am1 = quant::absmax_step(new_am1, s1[i - lo]);
      new_am2 = quant::absmax_step(new_am2, s2[i - lo]);
    }
    if (hi - lo < block_size) {  // padding lanes: code 128 / code 0 and g = 0 (s2 = 0·… = 0)
      new_am1 = quant::absmax_step(new_am1, adamw8bit_pad_moment1(a, qmap1[pad_code1], am1));
      new_am2 = quant::absmax_step(new_am2, 0.0f);
    }
    st.absmax1[b] = new_am1, st.absmax2[b] = new_am2;
    for (std::size_t i = lo; i < hi; ++i) {
      if (!std::isfinite(p.grad[i])) continue;  // the kernel leaves p alone (its state becomes 0)
      p.value[i] = adamw8bit_param(a, wd, p.value[i], s1[i - lo], s2[i - lo]);
    }
    for (std::size_t i = lo; i < hi; ++i)
      adamw8bit_codes(qmap1.data(), qmap2.data(), s1[i - lo], s2[i - lo], new_am1, new_am2, st.state1[i], st.state2[i]);
  }

  /// kOptimizer32bit2State<float, ADAM> (update_scale 1, skip_zeros false): non-finite g propagates.
  static void update_32bit(const adamw8bit_constants& a, float wd, const param_ref& p, slot& st) {
    for (std::size_t i = 0; i < p.size; ++i) adamw8bit_32bit_element(a, wd, p.grad[i], p.value[i], st.state1_f32[i], st.state2_f32[i]);
  }

  adam_config cfg_;
  detail::slot_table<slot> table_;
};

}  // namespace loralab::train
