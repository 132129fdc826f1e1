// SPDX-License-Identifier: MIT
// Helper for check_torch_mean.py: reads records (uint64 n, n float32) from stdin and writes, for each,
// loralab's torch-order float32 sum and mean (two float32) to stdout. Usage: torch_mean_cli LANES THREADS
// `torch_mean_cli --default-config` prints torch_cpu::default_config() (lanes, threads).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "quant/torch_reduce.hpp"

int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]) == "--default-config") {
    const auto cfg = loralab::quant::torch_cpu::default_config();
    std::printf("%d %d\n", cfg.lanes, cfg.threads);
    return 0;
  }
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s LANES THREADS < records > results\n", argv[0]);
    return 2;
  }
  const loralab::quant::torch_cpu::reduce_config cfg{std::atoi(argv[1]), std::atoi(argv[2])};
  std::uint64_t n = 0;
  std::vector<float> x;
  while (std::fread(&n, sizeof n, 1, stdin) == 1) {
    x.resize(n);
    if (std::fread(x.data(), sizeof(float), n, stdin) != n) return 3;
    const float r[2] = {loralab::quant::torch_cpu::sum(x, cfg), loralab::quant::torch_cpu::mean(x, cfg)};
    std::fwrite(r, sizeof(float), 2, stdout);
  }
  return 0;
}
