// SPDX-License-Identifier: MIT
#pragma once
// Optimizers for the trainable parameters, handed over as named flat float arrays (param_ref), and HF's
// gradient clipping. Three of them, behind one interface the trainer holds:
//   adamw      torch.optim.AdamW (HF optim="adamw_torch"): decoupled decay, float32 state, torch's op order.
//   adamw8bit  bitsandbytes AdamW8bit (HF optim="adamw_bnb_8bit"): blockwise 8-bit state, the CUDA kernel's
//              formulas (shared/specs/bitsandbytes.md §9); parameters with < 4096 elements keep 32-bit state.
//   sgd        torch.optim.SGD (momentum, dampening 0, no Nesterov).
//
// State is allocated lazily on the first step() for the parameter list it is given; later steps must hand over
// the same names with the same sizes, in the same order. state_dict() gives every buffer as raw bytes under
// "<parameter name>.<buffer>" plus "step" and "optimizer", so a checkpoint resumes bit for bit: every update is
// element-wise (or per 256-element block), so the results do not depend on the OpenMP thread count either.
//
// Arithmetic is float32 with -ffp-contract=off, in each reference's order. Parity with torch CPU is "same
// formulas, same order", not a bit-exactness claim (torch's vector kernels may reorder a division); parity
// with bnb CUDA cannot be bit-exact (its __powf, __fdividef and FMA contraction; spec §9.2).
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

namespace loralab::lora {

/// One trainable tensor as the optimizer sees it: `size` floats of value and of gradient, row-major flat.
/// `decay = false` puts it in HF's no-decay group (biases, norms): weight decay 0 for it.
struct param_ref {
  std::string name;  ///< e.g. "model.layers.0.self_attn.q_proj.lora_A.weight"; keys the optimizer state
  float* value = nullptr;
  float* grad = nullptr;
  std::size_t size = 0;
  bool decay = true;
};

/// Raw bytes per named buffer: "<param>.<buffer>" (native byte order), "step" (int64), "optimizer" (its name).
using state_dict_t = std::map<std::string, std::vector<std::uint8_t>>;

// ---- gradient clipping ------------------------------------------------------------------------------------

namespace detail {
inline constexpr std::size_t norm_chunk = 1 << 16;  // fixed chunks: the sum's order does not depend on threads
}

/// torch.nn.utils.clip_grad_norm_ as the HF Trainer calls it: total L2 norm over all gradients (accumulated
/// in double, in a fixed order), coef = max_norm / (total + 1e-6) clamped to <= 1, gradients multiplied by
/// float(coef). Returns the PRE-clip norm (what HF logs as grad_norm). max_norm <= 0 only measures. A
/// non-finite norm is returned as is and the gradients are left untouched: the trainer stops on it.
inline double clip_grad_norm(std::span<const param_ref> params, double max_norm) {
  double sumsq = 0.0;
  for (const param_ref& p : params) {
    const std::int64_t chunks = std::int64_t((p.size + detail::norm_chunk - 1) / detail::norm_chunk);
    std::vector<double> partial(std::size_t(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (std::int64_t c = 0; c < chunks; ++c) {
      const std::size_t lo = std::size_t(c) * detail::norm_chunk, hi = std::min(p.size, lo + detail::norm_chunk);
      double s = 0.0;
      for (std::size_t i = lo; i < hi; ++i) s += double(p.grad[i]) * double(p.grad[i]);
      partial[std::size_t(c)] = s;
    }
    for (double s : partial) sumsq += s;
  }
  const double total = std::sqrt(sumsq);
  if (!(max_norm > 0) || !std::isfinite(total)) return total;
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0) {
    const float c = float(coef);
    for (const param_ref& p : params) {
#pragma omp parallel for schedule(static) if (p.size > (1 << 15))
      for (std::int64_t i = 0; i < std::int64_t(p.size); ++i) p.grad[i] *= c;
    }
  }
  return total;
}

// ---- the common interface ---------------------------------------------------------------------------------

/// What the trainer holds. step() applies one update with learning rate `lr` (from lr_schedule::lr_at).
class optimizer {
 public:
  virtual ~optimizer() = default;
  /// "adamw", "adamw8bit" or "sgd": the --optim name, also stored in the state dict.
  virtual std::string_view name() const = 0;
  /// One update of every parameter from its gradient. The first call fixes the parameter list.
  virtual void step(std::span<const param_ref> params, double lr) = 0;
  /// Bytes of optimizer state held now (vector capacities).
  virtual std::size_t state_bytes() const = 0;
  /// Bytes of state step() will allocate for this parameter list: the memory report's number before step 0.
  virtual std::size_t planned_state_bytes(std::span<const param_ref> params) const = 0;
  /// Every state buffer, for a checkpoint.
  virtual state_dict_t state_dict() const = 0;
  /// Replaces the state by a checkpoint's (all-or-nothing). The next step() matches it to the parameter list
  /// by name and size, and fails naming any parameter without state or state without parameter.
  virtual void load_state_dict(const state_dict_t& sd) = 0;
  /// The hyper-parameters, one line.
  virtual std::string describe() const = 0;

  /// Updates taken so far (bnb's and torch's per-parameter `step`, the same for all parameters here).
  std::int64_t steps_taken() const { return step_; }

  friend std::ostream& operator<<(std::ostream& os, const optimizer& o) { return os << o.describe(); }

 protected:
  std::int64_t step_ = 0;
};

namespace detail {

static_assert(std::endian::native == std::endian::little, "state dicts store raw little-endian bytes");

inline void check_lr(std::string_view opt, double lr) {
  LORALAB_CHECK(lr >= 0 && std::isfinite(lr), opt, ": learning rate must be finite and >= 0, got ", lr);
}

template <class T>
std::vector<std::uint8_t> to_bytes(const std::vector<T>& v) {
  std::vector<std::uint8_t> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

template <class T>
std::vector<T> from_bytes(const std::vector<std::uint8_t>& b, std::size_t count, std::string_view opt,
                          std::string_view key) {
  LORALAB_CHECK(b.size() == count * sizeof(T), opt, ": state entry '", key, "' holds ", b.size(),
                " bytes, expected ", count * sizeof(T), " (", count, " x ", sizeof(T), " bytes)");
  std::vector<T> v(count);
  if (count) std::memcpy(v.data(), b.data(), b.size());
  return v;
}

template <class T>
std::size_t capacity_bytes(const std::vector<T>& v) { return v.capacity() * sizeof(T); }

/// A state dict split into "step" and per-parameter entries, checked against the optimizer's name and its
/// buffer names (`suffixes`).
struct parsed_state {
  std::int64_t step = 0;
  std::map<std::string, std::map<std::string, const std::vector<std::uint8_t>*, std::less<>>> params;

  /// The bytes of "<param>.<suffix>", or an error naming the missing entry.
  static const std::vector<std::uint8_t>& need(
      std::string_view opt, const std::string& param,
      const std::map<std::string, const std::vector<std::uint8_t>*, std::less<>>& entries, std::string_view suffix) {
    const auto it = entries.find(suffix);
    LORALAB_CHECK(it != entries.end(), opt, ": state entry '", param, ".", suffix, "' is missing");
    return *it->second;
  }
};

inline parsed_state parse_state_dict(const state_dict_t& sd, std::string_view opt,
                                     std::initializer_list<std::string_view> suffixes) {
  parsed_state out;
  const auto kind = sd.find("optimizer");
  LORALAB_CHECK(kind != sd.end(), opt, ": state entry 'optimizer' is missing");
  const std::string_view stored(reinterpret_cast<const char*>(kind->second.data()), kind->second.size());
  LORALAB_CHECK(stored == opt, "the state dict is from optimizer '", stored, "', this optimizer is '", opt, "'");
  const auto step = sd.find("step");
  LORALAB_CHECK(step != sd.end(), opt, ": state entry 'step' is missing");
  out.step = from_bytes<std::int64_t>(step->second, 1, opt, "step")[0];
  LORALAB_CHECK(out.step >= 0, opt, ": state entry 'step' is ", out.step, ", must be >= 0");
  for (const auto& [key, bytes] : sd) {
    if (key == "optimizer" || key == "step") continue;
    const std::size_t dot = key.rfind('.');
    const std::string_view suffix =
        dot == std::string::npos ? std::string_view{} : std::string_view(key).substr(dot + 1);
    const bool known = dot != std::string::npos && dot > 0 &&
                       std::find(suffixes.begin(), suffixes.end(), suffix) != suffixes.end();
    if (!known) {
      std::ostringstream names;
      for (std::string_view s : suffixes) names << " <param>." << s;
      fail(opt, ": unexpected state entry '", key, "' (expected step, optimizer,", names.str(), ")");
    }
    out.params[key.substr(0, dot)].emplace(std::string(suffix), &bytes);
  }
  return out;
}

/// The per-parameter state of one optimizer, in parameter-list order. `Slot` has `name` and `size`.
template <class Slot>
struct slot_table {
  std::vector<Slot> slots;

  /// The state of one parameter (after its first step); an error naming the optimizer if there is none.
  const Slot& find(std::string_view param, std::string_view opt) const {
    for (const Slot& s : slots)
      if (s.name == param) return s;
    fail(opt, ": no state for parameter '", param, "'");
  }
  bool bound = false;         ///< matched against a parameter list (false when fresh or just loaded)
  bool match_loaded = false;  ///< the next bind matches loaded slots instead of allocating fresh ones

  /// Fresh: allocates make(p) per parameter. Just loaded: matches the loaded slots to `params` by name and
  /// size and puts them in list order. Bound: checks the list did not change.
  template <class Make>
  void bind(std::span<const param_ref> params, std::string_view opt, Make&& make) {
    for (const param_ref& p : params)
      LORALAB_CHECK(p.size == 0 || (p.value != nullptr && p.grad != nullptr), opt, ": parameter '", p.name,
                    "' has ", p.size, " elements but a null value or grad pointer");
    if (bound) {
      LORALAB_CHECK(params.size() == slots.size(), opt, ": the parameter list changed: ", params.size(),
                    " parameters now, the state was made for ", slots.size());
      for (std::size_t i = 0; i < params.size(); ++i) {
        LORALAB_CHECK(params[i].name == slots[i].name, opt, ": parameter ", i, " is '", params[i].name,
                      "', the state was made for '", slots[i].name, "' (same list, same order each step)");
        LORALAB_CHECK(params[i].size == slots[i].size, opt, ": parameter '", params[i].name, "' has ",
                      params[i].size, " elements, its state was made for ", slots[i].size);
      }
      return;
    }
    {
      std::map<std::string_view, std::size_t> seen;
      for (std::size_t i = 0; i < params.size(); ++i) {
        const auto [it, fresh] = seen.emplace(params[i].name, i);
        LORALAB_CHECK(fresh, opt, ": parameter name '", params[i].name, "' appears twice (", it->second, " and ", i,
                      "); names key the state");
      }
    }
    std::vector<Slot> ordered;
    ordered.reserve(params.size());
    if (match_loaded) {
      std::map<std::string, std::size_t> index;
      for (std::size_t i = 0; i < slots.size(); ++i) index.emplace(slots[i].name, i);
      for (const param_ref& p : params) {
        const auto it = index.find(p.name);
        LORALAB_CHECK(it != index.end(), opt, ": the loaded state has no entry for parameter '", p.name, "'");
        Slot& s = slots[it->second];
        LORALAB_CHECK(s.size == p.size, opt, ": parameter '", p.name, "' has ", p.size,
                      " elements, its loaded state holds ", s.size);
        ordered.push_back(std::move(s));
        index.erase(it);
      }
      LORALAB_CHECK(index.empty(), opt, ": the loaded state holds parameter '",
                    index.empty() ? "" : index.begin()->first, "', which is not in the parameter list");
    } else {
      for (const param_ref& p : params) ordered.push_back(make(p));
    }
    slots = std::move(ordered);
    bound = true;
  }

  /// Installs a checkpoint's slots; the next bind() matches them. `match` is false for a checkpoint that has
  /// no per-parameter state to match (taken before the first step, or of a stateless optimizer).
  void load(std::vector<Slot> loaded, bool match) {
    slots = std::move(loaded);
    bound = false;
    match_loaded = match;
  }
};

}  // namespace detail

// ---- AdamW (torch) ----------------------------------------------------------------------------------------

/// Adam hyper-parameters; defaults are HF TrainingArguments' (adam_beta1/2, adam_epsilon, weight_decay).
struct adam_config {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;  ///< decoupled; only for parameters with decay = true

  void validate() const {
    LORALAB_CHECK(beta1 >= 0 && beta1 < 1, "--adam-beta1 must be in [0, 1), got ", beta1);
    LORALAB_CHECK(beta2 >= 0 && beta2 < 1, "--adam-beta2 must be in [0, 1), got ", beta2);
    LORALAB_CHECK(eps >= 0 && std::isfinite(eps), "--adam-epsilon must be finite and >= 0, got ", eps);
    LORALAB_CHECK(weight_decay >= 0 && std::isfinite(weight_decay), "--weight-decay must be finite and >= 0, got ",
                  weight_decay);
  }
  friend std::ostream& operator<<(std::ostream& os, const adam_config& c) {
    return os << "betas=(" << c.beta1 << ", " << c.beta2 << ") eps=" << c.eps << " weight_decay=" << c.weight_decay;
  }
};

/// torch.optim.AdamW, single-tensor path (torch/optim/adam.py with decoupled weight decay; spec peft_lora §7).
/// Scalars in double as Python computes them, tensor ops in float32:
///   p *= 1 − lr·wd;  m = lerp(m, g, 1−β1);  v = v·β2 + (1−β2)·g·g;
///   p += (−lr/(1−β1^t)) · m / (√v / √(1−β2^t) + eps)        (eps after the bias-corrected sqrt)
/// State per parameter: exp_avg, exp_avg_sq (float32, 8 bytes per element).
class adamw final : public optimizer {
 public:
  struct slot {
    std::string name;
    std::size_t size = 0;
    std::vector<float> exp_avg, exp_avg_sq;  // (size)
  };

  explicit adamw(adam_config cfg = {}) : cfg_(cfg) { cfg_.validate(); }

  std::string_view name() const override { return "adamw"; }
  const adam_config& config() const { return cfg_; }
  /// The state of one parameter (after its first step); error if there is none.
  const slot& state_of(std::string_view param) const { return table_.find(param, name()); }

  void step(std::span<const param_ref> params, double lr) override {
    detail::check_lr(name(), lr);
    table_.bind(params, name(), [](const param_ref& p) {
      return slot{p.name, p.size, std::vector<float>(p.size, 0.0f), std::vector<float>(p.size, 0.0f)};
    });
    ++step_;
    const double t = double(step_);
    const double bias_correction1 = 1.0 - std::pow(cfg_.beta1, t);
    const double bias_correction2 = 1.0 - std::pow(cfg_.beta2, t);
    const float neg_step_size = float(-(lr / bias_correction1));
    const float bias_correction2_sqrt = float(std::sqrt(bias_correction2));
    const float weight = float(1.0 - cfg_.beta1), beta2 = float(cfg_.beta2), one_minus_beta2 = float(1.0 - cfg_.beta2);
    const float eps = float(cfg_.eps);
    for (std::size_t k = 0; k < params.size(); ++k) {
      const param_ref& p = params[k];
      slot& s = table_.slots[k];
      const bool decay = p.decay && cfg_.weight_decay != 0.0;
      const float decay_factor = float(1.0 - lr * cfg_.weight_decay);
      float* m = s.exp_avg.data();
      float* v = s.exp_avg_sq.data();
#pragma omp parallel for schedule(static) if (p.size > (1 << 15))
      for (std::int64_t i = 0; i < std::int64_t(p.size); ++i) {
        const float g = p.grad[i];
        float x = p.value[i];
        if (decay) x = x * decay_factor;                                        // param.mul_(1 - lr*wd)
        m[i] = weight < 0.5f ? m[i] + weight * (g - m[i])                       // exp_avg.lerp_(grad, 1-beta1)
                             : g - (g - m[i]) * (1.0f - weight);
        v[i] = v[i] * beta2;                                                    // exp_avg_sq.mul_(beta2)
        v[i] = v[i] + one_minus_beta2 * g * g;                                  //   .addcmul_(grad, grad, 1-beta2)
        const float denom = std::sqrt(v[i]) / bias_correction2_sqrt + eps;     // (sqrt(v)/bc2_sqrt).add_(eps)
        p.value[i] = x + neg_step_size * m[i] / denom;                          // param.addcdiv_(m, denom, -step_size)
      }
    }
  }

  std::size_t state_bytes() const override {
    std::size_t b = 0;
    for (const slot& s : table_.slots) b += detail::capacity_bytes(s.exp_avg) + detail::capacity_bytes(s.exp_avg_sq);
    return b;
  }
  std::size_t planned_state_bytes(std::span<const param_ref> params) const override {
    std::size_t b = 0;
    for (const param_ref& p : params) b += 2 * sizeof(float) * p.size;
    return b;
  }

  state_dict_t state_dict() const override {
    state_dict_t sd = base_entries();
    for (const slot& s : table_.slots) {
      sd[s.name + ".exp_avg"] = detail::to_bytes(s.exp_avg);
      sd[s.name + ".exp_avg_sq"] = detail::to_bytes(s.exp_avg_sq);
    }
    return sd;
  }
  void load_state_dict(const state_dict_t& sd) override {
    const detail::parsed_state ps = detail::parse_state_dict(sd, name(), {"exp_avg", "exp_avg_sq"});
    std::vector<slot> loaded;
    for (const auto& [param, entries] : ps.params) {
      const auto& m = detail::parsed_state::need(name(), param, entries, "exp_avg");
      const auto& v = detail::parsed_state::need(name(), param, entries, "exp_avg_sq");
      LORALAB_CHECK(m.size() % sizeof(float) == 0, "adamw: state entry '", param, ".exp_avg' holds ", m.size(),
                    " bytes, not a whole number of floats");
      const std::size_t n = m.size() / sizeof(float);
      loaded.push_back(slot{param, n, detail::from_bytes<float>(m, n, name(), param + ".exp_avg"),
                            detail::from_bytes<float>(v, n, name(), param + ".exp_avg_sq")});
    }
    table_.load(std::move(loaded), ps.step > 0 || !ps.params.empty());
    step_ = ps.step;
  }
  std::string describe() const override {
    std::ostringstream os;
    os << "adamw{" << cfg_ << "}";
    return os.str();
  }

 private:
  state_dict_t base_entries() const {
    const std::string_view n = name();
    state_dict_t sd;
    sd["optimizer"] = std::vector<std::uint8_t>(n.begin(), n.end());
    sd["step"] = detail::to_bytes(std::vector<std::int64_t>{step_});
    return sd;
  }

  adam_config cfg_;
  detail::slot_table<slot> table_;
};

// ---- AdamW8bit (bitsandbytes, blockwise) ------------------------------------------------------------------

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

// ---- SGD (torch) ------------------------------------------------------------------------------------------

struct sgd_config {
  double momentum = 0.0;
  double weight_decay = 0.0;  ///< L2, coupled (added to the gradient), as torch.optim.SGD

  void validate() const {
    LORALAB_CHECK(momentum >= 0 && momentum < 1, "--momentum must be in [0, 1), got ", momentum);
    LORALAB_CHECK(weight_decay >= 0 && std::isfinite(weight_decay), "--weight-decay must be finite and >= 0, got ",
                  weight_decay);
  }
  friend std::ostream& operator<<(std::ostream& os, const sgd_config& c) {
    return os << "momentum=" << c.momentum << " weight_decay=" << c.weight_decay;
  }
};

/// torch.optim.SGD (dampening 0, no Nesterov): d = g + wd·p; with momentum, buf = d on the first step, then
/// buf = buf·μ + d, and d = buf; p += −lr·d. State: momentum_buffer (float32) only when momentum > 0.
class sgd final : public optimizer {
 public:
  struct slot {
    std::string name;
    std::size_t size = 0;
    std::vector<float> momentum_buffer;  // (size) when momentum > 0, else empty
  };

  explicit sgd(sgd_config cfg = {}) : cfg_(cfg) { cfg_.validate(); }

  std::string_view name() const override { return "sgd"; }
  const sgd_config& config() const { return cfg_; }

  void step(std::span<const param_ref> params, double lr) override {
    detail::check_lr(name(), lr);
    const bool has_buffer = cfg_.momentum != 0.0;
    table_.bind(params, name(), [&](const param_ref& p) {
      return slot{p.name, p.size, has_buffer ? std::vector<float>(p.size, 0.0f) : std::vector<float>{}};
    });
    const bool first = step_ == 0;
    ++step_;
    const float neg_lr = float(-lr), mu = float(cfg_.momentum);
    for (std::size_t k = 0; k < params.size(); ++k) {
      const param_ref& p = params[k];
      const float wd = p.decay ? float(cfg_.weight_decay) : 0.0f;
      float* buf = table_.slots[k].momentum_buffer.data();
#pragma omp parallel for schedule(static) if (p.size > (1 << 15))
      for (std::int64_t i = 0; i < std::int64_t(p.size); ++i) {
        float d = p.grad[i];
        if (wd != 0.0f) d = d + wd * p.value[i];                  // grad.add(param, alpha=wd)
        if (has_buffer) {
          buf[i] = first ? d : buf[i] * mu + d;                   // buf.mul_(momentum).add_(d, alpha=1)
          d = buf[i];
        }
        p.value[i] = p.value[i] + neg_lr * d;                     // param.add_(d, alpha=-lr)
      }
    }
  }

  std::size_t state_bytes() const override {
    std::size_t b = 0;
    for (const slot& s : table_.slots) b += detail::capacity_bytes(s.momentum_buffer);
    return b;
  }
  std::size_t planned_state_bytes(std::span<const param_ref> params) const override {
    if (cfg_.momentum == 0.0) return 0;
    std::size_t b = 0;
    for (const param_ref& p : params) b += sizeof(float) * p.size;
    return b;
  }

  state_dict_t state_dict() const override {
    state_dict_t sd;
    const std::string_view n = name();
    sd["optimizer"] = std::vector<std::uint8_t>(n.begin(), n.end());
    sd["step"] = detail::to_bytes(std::vector<std::int64_t>{step_});
    if (cfg_.momentum != 0.0)
      for (const slot& s : table_.slots) sd[s.name + ".momentum_buffer"] = detail::to_bytes(s.momentum_buffer);
    return sd;
  }
  void load_state_dict(const state_dict_t& sd) override {
    const detail::parsed_state ps = detail::parse_state_dict(sd, name(), {"momentum_buffer"});
    LORALAB_CHECK(cfg_.momentum != 0.0 || ps.params.empty(), "sgd: the state dict holds momentum buffers ('",
                  ps.params.empty() ? "" : ps.params.begin()->first, ".momentum_buffer'), this sgd has momentum 0");
    std::vector<slot> loaded;
    for (const auto& [param, entries] : ps.params) {
      const auto& b = detail::parsed_state::need(name(), param, entries, "momentum_buffer");
      LORALAB_CHECK(b.size() % sizeof(float) == 0, "sgd: state entry '", param, ".momentum_buffer' holds ", b.size(),
                    " bytes, not a whole number of floats");
      const std::size_t n = b.size() / sizeof(float);
      loaded.push_back(slot{param, n, detail::from_bytes<float>(b, n, name(), param + ".momentum_buffer")});
    }
    table_.load(std::move(loaded), cfg_.momentum != 0.0 && (ps.step > 0 || !ps.params.empty()));
    step_ = ps.step;
  }
  std::string describe() const override {
    std::ostringstream os;
    os << "sgd{" << cfg_ << "}";
    return os.str();
  }

 private:
  sgd_config cfg_;
  detail::slot_table<slot> table_;
};

// ---- choosing one at the edge -----------------------------------------------------------------------------

enum class optimizer_kind { adamw, adamw8bit, sgd };

inline std::string_view to_string(optimizer_kind k) {
  switch (k) {
    case optimizer_kind::adamw: return "adamw";
    case optimizer_kind::adamw8bit: return "adamw8bit";
    case optimizer_kind::sgd: return "sgd";
  }
  return "?";
}
inline std::ostream& operator<<(std::ostream& os, optimizer_kind k) { return os << to_string(k); }

inline optimizer_kind parse_optimizer_kind(std::string_view s) {
  for (auto k : {optimizer_kind::adamw, optimizer_kind::adamw8bit, optimizer_kind::sgd})
    if (s == to_string(k)) return k;
  fail("--optim must be adamw, adamw8bit or sgd, got '", s, "'");
}

/// Every optimizer hyper-parameter the CLI sets; each optimizer reads the ones it has.
struct optimizer_config {
  double weight_decay = 0.0;                       ///< --weight-decay (HF default 0)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;   ///< --adam-beta1, --adam-beta2, --adam-epsilon
  double momentum = 0.0;                           ///< --momentum (sgd)
};

inline std::unique_ptr<optimizer> make_optimizer(optimizer_kind kind, const optimizer_config& c) {
  switch (kind) {
    case optimizer_kind::adamw: return std::make_unique<adamw>(adam_config{c.beta1, c.beta2, c.eps, c.weight_decay});
    case optimizer_kind::adamw8bit:
      return std::make_unique<adamw8bit>(adam_config{c.beta1, c.beta2, c.eps, c.weight_decay});
    case optimizer_kind::sgd: return std::make_unique<sgd>(sgd_config{c.momentum, c.weight_decay});
  }
  fail("make_optimizer: unknown optimizer kind ", int(kind));
}
/// make_optimizer("adamw8bit", cfg): the --optim name; an unknown name fails listing the valid ones.
inline std::unique_ptr<optimizer> make_optimizer(std::string_view name, const optimizer_config& c) {
  return make_optimizer(parse_optimizer_kind(name), c);
}
inline std::unique_ptr<optimizer> make_optimizer(std::string_view name, double weight_decay) {
  optimizer_config c;
  c.weight_decay = weight_decay;
  return make_optimizer(name, c);
}

}  // namespace loralab::lora
