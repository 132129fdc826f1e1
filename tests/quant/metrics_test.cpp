// SPDX-License-Identifier: MIT
#include <cmath>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "quant/error_metrics.hpp"

using loralab::quant::measure_error;

BOOST_AUTO_TEST_SUITE(error_metrics_suite)

BOOST_AUTO_TEST_CASE(known_values) {
  const std::vector<float> x = {1, 2, 3, 4}, y = {1, 2, 3, 2};
  const auto m = measure_error(x, y);
  BOOST_TEST(m.mse == 1.0);
  BOOST_TEST(m.max_abs_error == 2.0);
  BOOST_TEST(m.sqnr_db == 10 * std::log10(30.0 / 4.0), boost::test_tools::tolerance(1e-12));
  BOOST_TEST(std::isinf(measure_error(x, x).sqnr_db));
  BOOST_CHECK_THROW(measure_error(x, std::vector<float>{1}), loralab::error);
}

BOOST_AUTO_TEST_SUITE_END()
