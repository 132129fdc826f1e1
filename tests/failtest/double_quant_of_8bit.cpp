// SPDX-License-Identifier: MIT
// Must NOT compile: double quantization wraps a 4-bit scheme only.
#include <quant/schemes.hpp>
int main() { return loralab::quant::double_quant<loralab::quant::dynamic8<256>>::block_size; }
