// SPDX-License-Identifier: MIT
// Fuzz target: PEFT adapter tensors (adapter_model.safetensors) through lora::load_adapter into a model shaped like
// stories260K (random weights), with a fixed adapter_config.json (r 4 on q_proj, v_proj, down_proj, as
// tests/data/peft_adapter): the key names, shapes and dtypes a real adapter must have.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_support.hpp"
#include "lora/lora.hpp"
#include "nn/random_model.hpp"

namespace {

constexpr std::string_view adapter_config = R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
  "bias": "none", "fan_in_fan_out": false, "modules_to_save": null, "use_dora": false, "use_rslora": false,
  "init_lora_weights": false, "target_modules": ["down_proj", "v_proj", "q_proj"], "rank_pattern": {},
  "alpha_pattern": {}})";

auto& model() {
  static auto m = [] {
    loralab::nn::llama_config c;  // stories260K
    c.dim = 64, c.hidden_dim = 172, c.n_layers = 5, c.n_heads = 8, c.n_kv_heads = 4, c.vocab_size = 512;
    c.max_seq_len = 512;
    return loralab::lora::make_lora_dense_model<float>(loralab::nn::random_model_file(c, 1));
  }();
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const auto config = fuzz::write_file("adapter/adapter_config.json", adapter_config);
  (void)fuzz::write_file("adapter/adapter_model.safetensors", data, size);
  fuzz::expect_refusal_or_success([&] { (void)lora::load_adapter(model(), config.parent_path()); });
  return 0;
}
