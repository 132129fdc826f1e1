// SPDX-License-Identifier: MIT
#pragma once
// The optimizer side of a LoRA/QLoRA training step on the GPU: LoRA dropout masks, the global gradient norm and the
// AdamW update, each the CPU path's per-element function (lora/dropout_mask.hpp, train/adamw_element.hpp) run by
// one thread per element, so a device result is checked against the CPU bit for bit (tests/kernels).
//
// Contracts (all pointers device memory, float32, contiguous):
//   lora_dropout      out[i] (+)= m_i · in[i], m_i = 0 when hash_bits53(seed, first + i) < threshold else keep;
//                     i < n ≤ 2^63. `first`: the index of element 0 in the step's whole (M, K) input.
//   sum_of_squares    *out = Σ g[i]² in double (CUB DeviceReduce::TransformReduce); the norm is √ of the sum over
//                     every parameter; temporary storage is allocated per call (cudaMallocAsync on `stream`).
//   adamw_step        p, m, v updated in place from g (torch.optim.AdamW, single-tensor order); one launch per
//                     parameter tensor; the constants come from the host as train::adamw computes them.
//   adamw8bit_step    bitsandbytes' blockwise 8-bit AdamW on one parameter of n ≥ 4096 elements (smaller ones:
//                     adamw8bit_step_32bit, 32-bit state): one CUDA block per 256-element quantization block, the
//                     block's new absmax a CUB block max, codes into qmap1 / qmap2 (the 256-entry dynamic maps,
//                     device copies of quant::codebooks::dynamic_signed / dynamic_unsigned); the per-element math is
//                     train/adamw8bit_element.hpp's, as train::adamw8bit runs it, so the state bytes match bit for bit.
// Limits: float32 parameters (bf16 parameters go through the CPU path for now).
// Benchmark: none of its own (a LoRA step's optimizer is r·(K+N) floats per layer); cuda_bench times the whole step.
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "train/adamw8bit_element.hpp"
#include "train/adamw_element.hpp"

namespace loralab::cuda {

cudaError_t lora_dropout(const float* in, float* out, std::size_t n, std::uint64_t seed, std::uint64_t threshold, float keep,
                         std::uint64_t first, bool accumulate, cudaStream_t stream = nullptr);

/// *out (device double) = Σ g[i]².
cudaError_t sum_of_squares(const float* g, std::size_t n, double* out, cudaStream_t stream = nullptr);

cudaError_t adamw_step(float* p, float* m, float* v, const float* g, std::size_t n, const train::adamw_step_constants& c,
                       cudaStream_t stream = nullptr);

/// One 8-bit AdamW step of a parameter with 8-bit state (codes state1, state2 [n]; absmax1, absmax2 [ceil(n/256)]).
cudaError_t adamw8bit_step(float* p, const float* g, std::uint8_t* state1, std::uint8_t* state2, float* absmax1, float* absmax2,
                           std::size_t n, const float* qmap1, const float* qmap2, const train::adamw8bit_constants& a, float wd,
                           cudaStream_t stream = nullptr);
/// The same for a parameter under 4096 elements, whose state stays float32 (state1, state2 [n]).
cudaError_t adamw8bit_step_32bit(float* p, float* state1, float* state2, const float* g, std::size_t n, const train::adamw8bit_constants& a,
                                 float wd, cudaStream_t stream = nullptr);
}  // namespace loralab::cuda
