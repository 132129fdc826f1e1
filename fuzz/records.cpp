// SPDX-License-Identifier: MIT
// Fuzz target: dataset records (JSON array, JSONL, plain text) through data::parse_records in every format, each
// record then rendered with every prompt template and with a ChatML chat template.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "data/chat_template.hpp"
#include "data/prompt_template.hpp"
#include "data/records.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const data::chat_template chatml = data::detect_chat_template("<|im_start|>", "<s>", "</s>");
  for (const data::data_format format :
       {data::data_format::alpaca, data::data_format::dolly, data::data_format::quotes, data::data_format::text}) {
    std::vector<data::record> records;
    fuzz::expect_refusal_or_success([&] { records = data::parse_records(text, format, "fuzz.json"); });
    for (const data::record& r : records) {
      for (const data::prompt_template t :
           {data::prompt_template::alpaca, data::prompt_template::dolly, data::prompt_template::plain,
            data::prompt_template::chatml})
        fuzz::expect_refusal_or_success([&] { (void)data::render(t, r); });
      fuzz::expect_refusal_or_success([&] { (void)data::render_chat_record(chatml, r); });
    }
  }
  for (const data::text_split split : {data::text_split::automatic, data::text_split::fortune,
                                       data::text_split::eot, data::text_split::line})
    fuzz::expect_refusal_or_success([&] { (void)data::parse_records(text, data::data_format::text, "fuzz.txt", split); });
  return 0;
}
