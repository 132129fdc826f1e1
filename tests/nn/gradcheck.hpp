// SPDX-License-Identifier: MIT
#pragma once
// Central finite differences in double precision: the reference every backward pass is checked against.
#include <cmath>
#include <iomanip>
#include <functional>
#include <random>

#include <boost/test/unit_test.hpp>

namespace loralab::testing {

/// Compares analytic d(loss)/d(p[i]) with (loss(p+h) − loss(p−h)) / 2h for `samples` random entries of p
/// (all of them when p is small). Relative error must stay below tol (abs floor 1e-9 for tiny gradients).
/// abs_floor: gradients below it are compared absolutely (float models: the loss's rounding over 2h).
inline void check_gradient(const char* what, double* p, std::size_t n, const double* analytic,
                           const std::function<double()>& loss, std::mt19937_64& g, std::size_t samples = 24,
                           double h = 1e-5, double tol = 1e-6, double abs_floor = 1e-9) {
  std::uniform_int_distribution<std::size_t> pick(0, n - 1);
  const std::size_t count = std::min(samples, n);
  for (std::size_t s = 0; s < count; ++s) {
    const std::size_t i = n <= samples ? s : pick(g);
    const double keep = p[i];
    p[i] = keep + h;
    const double up = loss();
    p[i] = keep - h;
    const double down = loss();
    p[i] = keep;
    const double numeric = (up - down) / (2 * h);
    const double err = std::fabs(numeric - analytic[i]) / std::max({std::fabs(numeric), std::fabs(analytic[i]), abs_floor / tol});
    BOOST_TEST_REQUIRE(err <= tol, what << "[" << i << "]: analytic " << std::setprecision(12) << analytic[i] << " numeric "
                                        << numeric << " relative error " << err);
  }
}

}  // namespace loralab::testing
