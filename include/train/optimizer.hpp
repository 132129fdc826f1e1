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
#include <memory>
#include <ostream>
#include <string_view>

#include "core/check.hpp"
#include "train/adamw.hpp"
#include "train/adamw8bit.hpp"
#include "train/optimizer_interface.hpp"
#include "train/sgd.hpp"

namespace loralab::train {

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

}  // namespace loralab::train
