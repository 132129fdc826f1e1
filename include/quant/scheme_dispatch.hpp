// SPDX-License-Identifier: MIT
#pragma once
// The one place where a run-time choice (a flag, a checkpoint field) becomes a compile-time scheme.
//   dispatch_4bit("nf4", 64, /*double_quant=*/true, [&]<class S>(std::type_identity<S>) { run<S>(); });
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "core/check.hpp"
#include "quant/schemes.hpp"

namespace loralab::quant {

/// Every block size bitsandbytes accepts for 4-bit quantization.
using bnb_block_sizes = std::integer_sequence<int, 32, 64, 128, 256, 512, 1024, 2048, 4096>;

namespace detail {
template <template <int> class Scheme, class F, int... Bs>
void dispatch_block(int block, bool dq, F&& f, std::integer_sequence<int, Bs...>) {
  const bool found = ((block == Bs ? (dq ? f(std::type_identity<double_quant<Scheme<Bs>>>{})
                                         : f(std::type_identity<Scheme<Bs>>{}),
                                      true)
                                   : false) || ...);
  LORALAB_CHECK(found, "block size ", block, " is not one of 32, 64, 128, 256, 512, 1024, 2048, 4096");
}
}  // namespace detail

/// Calls f(std::type_identity<S>{}) with S = nf4<B> / fp4<B> (wrapped in double_quant when dq).
template <class F>
void dispatch_4bit(std::string_view quant_type, int block, bool dq, F&& f) {
  if (quant_type == "nf4") return detail::dispatch_block<nf4>(block, dq, f, bnb_block_sizes{});
  if (quant_type == "fp4") return detail::dispatch_block<fp4>(block, dq, f, bnb_block_sizes{});
  fail("unknown 4-bit quant_type '", quant_type, "' (expected nf4 or fp4)");
}

/// As dispatch_4bit at bitsandbytes' (and transformers') fixed 4-bit block size, 64: four instantiations of f
/// instead of thirty-two, for programs that never take another block size.
template <class F>
void dispatch_4bit_b64(std::string_view quant_type, bool dq, F&& f) {
  if (quant_type == "nf4") return dq ? f(std::type_identity<double_quant<nf4<64>>>{}) : f(std::type_identity<nf4<64>>{});
  if (quant_type == "fp4") return dq ? f(std::type_identity<double_quant<fp4<64>>>{}) : f(std::type_identity<fp4<64>>{});
  fail("unknown 4-bit quant_type '", quant_type, "' (expected nf4 or fp4)");
}

/// Calls f(std::type_identity<dynamic8<B>>{}).
template <class F>
void dispatch_dynamic8(int block, F&& f) {
  const bool found = [&]<int... Bs>(std::integer_sequence<int, Bs...>) {
    return ((block == Bs ? (f(std::type_identity<dynamic8<Bs>>{}), true) : false) || ...);
  }(bnb_block_sizes{});
  LORALAB_CHECK(found, "block size ", block, " is not one of 32, 64, 128, 256, 512, 1024, 2048, 4096");
}

}  // namespace loralab::quant
