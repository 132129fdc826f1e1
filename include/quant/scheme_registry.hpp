// SPDX-License-Identifier: MIT
#pragma once
// The one registry of base-weight schemes: every scheme a program can name, one canonical name each, and the one
// run-time dispatch from a name to its compile-time tag.
//
//   float32, bfloat16                      unquantized storage (tags below; nn maps them to dense / bf16 weights)
//   nf4-b<B>, fp4-b<B>                     bitsandbytes 4-bit, block B ∈ {32, …, 4096}
//   nf4-b<B>-dq, fp4-b<B>-dq               the same with double-quantized absmax (QLoRA's DQ)
//   dynamic8-b<B>                          bitsandbytes blockwise dynamic 8-bit
//   int8-row                               LLM.int8() row-wise absmax
//   q4_0, q4_1, q8_0                       ggml's (GGUF's) block formats, ggml's own names (Q4_1 etc. as aliases)
//
// A program declares which schemes it instantiates as a scheme_list (each costs a model's worth of compile time);
// dispatch_scheme<List>(name, f) calls f(std::type_identity<S>{}) for the one whose name matches, and refuses any
// other name with an error listing the list's names. Aliases a person types (nf4+dq, nf4 with --double-quant, f32,
// float) go through canonical_scheme_name() first.
//
//   using my_schemes = quant::scheme_list<quant::float32, quant::double_quant<quant::nf4<64>>>;
//   quant::dispatch_scheme<my_schemes>("nf4-b64-dq", [&]<class S>(std::type_identity<S>) { run<S>(); });
#include <cctype>
#include <string>
#include <string_view>
#include <type_traits>

#include "core/check.hpp"
#include "quant/schemes.hpp"

namespace loralab::quant {

/// Unquantized storage as scheme tags, so a base's storage is always named by one tag.
struct float32 {
  static constexpr std::string_view quant_type = "float32";
  static constexpr int bits = 32;
  static constexpr bool quantized = false;
};
struct bfloat16 {
  static constexpr std::string_view quant_type = "bfloat16";
  static constexpr int bits = 16;
  static constexpr bool quantized = false;
};

/// Whether S stores a plain float type (float32, bfloat16) rather than codes.
template <class S>
inline constexpr bool is_unquantized = std::same_as<S, float32> || std::same_as<S, bfloat16>;

/// The canonical name of a scheme tag: "float32", "bfloat16", "nf4-b64", "nf4-b64-dq", "dynamic8-b256", "int8-row".
template <class S>
std::string scheme_name() {
  if constexpr (is_unquantized<S>) return std::string(S::quant_type);
  else return scheme_label<S>();
}

template <class... S>
struct scheme_list {
  static constexpr std::size_t size = sizeof...(S);
  /// "float32, nf4-b64, nf4-b64-dq" for messages.
  static std::string names() {
    std::string out;
    ((out += (out.empty() ? "" : ", ") + scheme_name<S>()), ...);
    return out;
  }
  static bool contains(std::string_view name) { return ((scheme_name<S>() == name) || ...); }
};

/// What a model program instantiates: float and bf16 bases, and bitsandbytes' (and transformers') 4-bit block 64,
/// with and without double quantization, and LLM.int8().
using model_schemes = scheme_list<float32, bfloat16, nf4<64>, double_quant<nf4<64>>, fp4<64>, double_quant<fp4<64>>, int8_rowwise>;

/// ggml's block formats (llama.cpp, GGUF), a list of their own: programs opt in, alone or beside model_schemes
/// (scheme_list_cat_t<model_schemes, ggml_schemes>). Not in model_schemes, whose every scheme costs each model
/// program a model's worth of compile time, and whose programs read float checkpoints (ggml needs K % 32 == 0,
/// which stories260K's FFN, K = 172, is not).
using ggml_schemes = scheme_list<ggml_q4_0, ggml_q4_1, ggml_q8_0>;

namespace detail {
template <class... Lists> struct scheme_list_cat;
template <class... A> struct scheme_list_cat<scheme_list<A...>> { using type = scheme_list<A...>; };
template <class... A, class... B, class... Rest>
struct scheme_list_cat<scheme_list<A...>, scheme_list<B...>, Rest...> : scheme_list_cat<scheme_list<A..., B...>, Rest...> {};
}  // namespace detail

/// One scheme_list of the schemes of several, in order: scheme_list_cat_t<model_schemes, ggml_schemes>.
template <class... Lists>
using scheme_list_cat_t = typename detail::scheme_list_cat<Lists...>::type;

/// The canonical name for what people type: "nf4+dq" / "nf4-dq" -> "nf4-b64-dq", "nf4" -> "nf4-b64" (block 64,
/// QLoRA's), "f32" / "float" / "none" -> "float32", "bf16" -> "bfloat16", "int8" -> "int8-row", "dynamic8" ->
/// "dynamic8-b64", "Q4_1" -> "q4_1" (names are lower-cased first); a canonical name is returned as it is.
/// `double_quant` adds "-dq" (the --double-quant flag).
inline std::string canonical_scheme_name(std::string_view typed, bool double_quant = false) {
  std::string s(typed);
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));  // nf4+DQ as the papers write it
  if (s == "f32" || s == "float" || s == "fp32" || s == "none") s = "float32";
  else if (s == "bf16") s = "bfloat16";
  else if (s == "int8") s = "int8-row";
  else if (s == "dynamic8") s = "dynamic8-b64";
  for (const char* q : {"nf4", "fp4"}) {
    const std::string base(q);
    if (s == base + "+dq" || s == base + "-dq") s = base + "-b64-dq";
    else if (s == base) s = base + "-b64";
  }
  if (double_quant) {
    LORALAB_CHECK((s.starts_with("nf4-b") || s.starts_with("fp4-b")) && !s.ends_with("-dq"),
                  "--double-quant applies to a 4-bit scheme without it (nf4 or fp4), not to '", typed, "'");
    s += "-dq";
  }
  return s;
}

/// Calls f(std::type_identity<S>{}) for the scheme of List named `name` (canonical, see canonical_scheme_name);
/// any other name is an error listing List's names.
template <class List, class F>
void dispatch_scheme(std::string_view name, F&& f) {
  const bool found = [&]<class... S>(scheme_list<S...>*) {
    return ((scheme_name<S>() == name ? (f(std::type_identity<S>{}), true) : false) || ...);
  }(static_cast<List*>(nullptr));
  if (!found) fail("unknown scheme '", name, "'; known: ", List::names());
}

}  // namespace loralab::quant
