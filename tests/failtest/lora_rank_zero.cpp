// SPDX-License-Identifier: MIT
// Must NOT compile: an adapter of rank 0 (PEFT rejects r <= 0); a run-time rank is dynamic_rank.
#include <lora/lora_linear.hpp>
int main() {
  loralab::lora::lora_linear<loralab::nn::linear<loralab::nn::dense_weight<float>>, 0> l;
  return int(l.active());
}
