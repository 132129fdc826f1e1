// SPDX-License-Identifier: MIT
// io/json.hpp: json_integer against every JSON number form a hostile file can hold (the fuzzer found 1e200 cast to
// int in adapter_config.json), at and past each type's limits.
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "io/json.hpp"

namespace {

using nlohmann::json;
using loralab::io::json_integer;

template <class T>
std::string refusal(const json& v) {
  try {
    (void)json_integer<T>(v, "cfg.json", "r");
  } catch (const loralab::error& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(json_numbers)

BOOST_AUTO_TEST_CASE(integers_and_integral_floats_are_read) {
  BOOST_TEST(json_integer<int>(json::parse("8"), "f", "r") == 8);
  BOOST_TEST(json_integer<int>(json::parse("-3"), "f", "r") == -3);
  BOOST_TEST(json_integer<int>(json::parse("8.0"), "f", "r") == 8);
  BOOST_TEST(json_integer<int>(json::parse("2147483647"), "f", "r") == 2147483647);
  BOOST_TEST(json_integer<int>(json::parse("-2147483648"), "f", "r") == std::numeric_limits<int>::min());
  BOOST_TEST(json_integer<int>(json::parse("-2147483648.0"), "f", "r") == std::numeric_limits<int>::min());
  BOOST_TEST(json_integer<std::uint64_t>(json::parse("18446744073709551615"), "f", "seed") == ~std::uint64_t{0});
  BOOST_TEST(json_integer<std::size_t>(json::parse("1e3"), "f", "n") == 1000u);
  BOOST_TEST(json_integer<std::int64_t>(json::parse("-9223372036854775808"), "f", "n") == std::numeric_limits<std::int64_t>::min());
}

BOOST_AUTO_TEST_CASE(everything_else_is_refused_naming_file_key_and_value) {
  const std::string e = refusal<int>(json::parse("1e200"));
  BOOST_TEST(e.find("cfg.json") != std::string::npos);
  BOOST_TEST(e.find("key 'r'") != std::string::npos);
  BOOST_TEST(e.find("1e+200") != std::string::npos);
  BOOST_TEST(e.find("not an integer in [-2147483648, 2147483647]") != std::string::npos, e);
  for (const char* bad : {"8.5", "2147483648", "-2147483649", "2147483648.0", "-2147483649.0", "\"8\"", "true", "null",
                          "[8]", "{}", "-1e-300", "9223372036854775807", "18446744073709551615"})
    BOOST_TEST(refusal<int>(json::parse(bad)) != "accepted", bad);
  for (const char* bad : {"-1", "-1.0", "1.8446744073709552e19", "1e20"})
    BOOST_TEST(refusal<std::uint64_t>(json::parse(bad)) != "accepted", bad);
  for (const char* bad : {"9223372036854775808", "9.2233720368547758e18"})
    BOOST_TEST(refusal<std::int64_t>(json::parse(bad)) != "accepted", bad);
  BOOST_TEST(refusal<int>(json::parse("-0.0")) == "accepted");
}

BOOST_AUTO_TEST_SUITE_END()
