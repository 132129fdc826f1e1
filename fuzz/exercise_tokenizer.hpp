// SPDX-License-Identifier: MIT
#pragma once
// Uses a tokenizer a fuzz target has just loaded, so that a vocabulary the loader accepted is also one that
// encodes and decodes without reading out of bounds.
#include <string_view>
#include <vector>

#include "nn/tokenizer.hpp"

namespace loralab::fuzz {

inline void exercise_tokenizer(const nn::tokenizer& tok) {
  constexpr std::string_view text = "Once upon a time, Lily's cat said \"hi\" 123 \xC3\xA9t\xC3\xA9\n\t <s> \xFF\xFE end";
  const std::vector<int> ids = tok.encode(text, /*add_bos=*/true, /*add_eos=*/true);
  (void)tok.decode(ids);
  const int n = tok.vocab_size();
  const std::vector<int> every = {0, n - 1, n / 2, tok.bos_id(), tok.eos_id()};
  for (const int id : every)
    if (id >= 0 && id < n) {
      (void)tok.piece(id);
      (void)tok.decode_piece(tok.bos_id(), id);
    }
}

}  // namespace loralab::fuzz
