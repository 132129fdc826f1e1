// SPDX-License-Identifier: MIT
// Must NOT compile: bitsandbytes has no block size 48.
#include <quant/schemes.hpp>
int main() { return loralab::quant::nf4<48>::block_size; }
