// SPDX-License-Identifier: MIT
// Fuzz target: a PyTorch .pth checkpoint (torch.save's zip of stored entries and its data.pkl) through io::read_pth:
// the zip reader (classic and zip64 records, CRCs), the restricted unpickler, tensor views over the storages.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "io/torch_pth.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const auto path = fuzz::write_file("consolidated.00.pth", data, size);
  fuzz::expect_refusal_or_success([&] {
    const io::pth_file f = io::read_pth(path);
    for (const io::pth_tensor& t : f.tensors()) {
      (void)f.at(t.name);
      if (t.type == io::dtype::F32 || t.type == io::dtype::F16 || t.type == io::dtype::BF16 || t.type == io::dtype::F64)
        (void)t.to_float();
    }
  });
  return 0;
}
