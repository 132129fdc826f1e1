// SPDX-License-Identifier: MIT
// Helper for check_bnb_double_quant.py. Quantizes float32 weights with loralab's double_quant<nf4<64>> and writes,
// for each weight W, `input.W` (the float32 weight) and loralab's result in bnb's Linear4bit serialization
// (W, W.absmax, W.quant_map, W.nested_absmax, W.nested_quant_map, W.quant_state.bitsandbytes__nf4).
//   MODEL.bin           a llama2.c model, loaded as loralab does (nn::read_llama2c: wq/wk rows permuted to the
//                       rotate-half layout); its linear weights (*_proj.weight) are quantized.
//   IN.safetensors      every F32 tensor in it is quantized.
// The offset follows torch's reduction order with this machine's defaults (torch_cpu::default_config()), recorded
// in the file's metadata. Usage: dq_model_cli MODEL.bin|IN.safetensors OUT.safetensors
#include <cstdio>
#include <deque>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "nn/model_io.hpp"
#include "quant/quant.hpp"

using namespace loralab;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL.bin|IN.safetensors OUT.safetensors\n", argv[0]);
    return 2;
  }
  using S = quant::double_quant<quant::nf4<64>>;
  std::deque<nn::tensor_f32> inputs;
  std::deque<std::string> names;
  const std::string in = argv[1];
  if (in.ends_with(".safetensors")) {
    const auto f = io::safetensors_file::open(in);
    for (const io::tensor_view& t : f.tensors())
      if (t.type == io::dtype::F32) names.push_back(t.name), inputs.push_back({t.shape, t.to_vector<float>()});
  } else {
    nn::model_file m = nn::read_llama2c(in);
    for (const auto& [name, shape] : nn::expected_tensors(m.config))
      if (name.find("_proj.weight") != std::string::npos)
        names.push_back(name), inputs.push_back(std::move(m.tensors.at(name)));
  }
  std::deque<quant::blockwise_tensor<S>> keep;
  quant::bnb_writer w;
  const auto cfg = quant::torch_cpu::default_config();
  w.raw().set_metadata("torch_order", "lanes=" + std::to_string(cfg.lanes) + " threads=" + std::to_string(cfg.threads));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const nn::tensor_f32& t = inputs[i];
    const auto& q = keep.emplace_back(quant::blockwise_tensor<S>::quantize<float>(t.data, t.shape));
    w.raw().add<float>("input." + names[i], t.shape, t.data);
    w.add_4bit(names[i], q);
  }
  w.write(argv[2]);
  std::printf("wrote %zu weights to %s (torch order lanes=%d threads=%d)\n", keep.size(), argv[2], cfg.lanes,
              cfg.threads);
  return 0;
}
