// SPDX-License-Identifier: MIT
#pragma once
// The suites' check of a refusal: the call throws loralab::error and its message names what it must.
#include <boost/test/unit_test.hpp>

#include <exception>
#include <string>
#include <vector>

#include "core/check.hpp"

namespace loralab::testing {

/// Runs `f`, which must throw loralab::error whose message contains every needle.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    BOOST_ERROR("no loralab::error thrown; wanted one containing \"" << needles.front() << "\"");
  } catch (const loralab::error& e) {
    const std::string what = e.what();
    for (const auto& n : needles) {
      BOOST_TEST_INFO("what(): " << what);
      BOOST_TEST(what.find(n) != std::string::npos, "missing \"" << n << "\"");
    }
  } catch (const std::exception& e) {
    BOOST_ERROR("wrong exception type, what(): " << e.what());
  }
}

}  // namespace loralab::testing
