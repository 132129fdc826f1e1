// SPDX-License-Identifier: MIT
#pragma once
// What every optimizer shares (see train/optimizer.hpp for the three and how to choose one): parameters handed over
// as named flat float arrays (param_ref), HF's gradient clipping, the optimizer interface the trainer holds, and
// the state-dict plumbing (raw bytes per buffer) that makes checkpoints resume bit for bit.
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
#include <type_traits>
#include <vector>

#include "core/check.hpp"
#include "quant/codebooks.hpp"
#include "quant/codec.hpp"

namespace loralab::train {

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
  if constexpr (std::is_floating_point_v<T>)  // a checkpoint's state must be finite: NaN would spread to every weight
    for (std::size_t i = 0; i < count; ++i)
      LORALAB_CHECK(std::isfinite(v[i]), opt, ": state entry '", key, "' holds ", std::isnan(v[i]) ? "NaN" : "Inf",
                    " at element ", i, "; not loading a non-finite optimizer state");
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

}  // namespace loralab::train
