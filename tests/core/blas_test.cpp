// SPDX-License-Identifier: MIT
// The BLAS guard: the kernel table, the CPU's level, and a fallback kernel replaced in-process (a Prescott kernel
// selected on purpose stands for OpenBLAS misdetecting a CPU, as 0.3.21 does with recent Xeons).
#include <boost/test/unit_test.hpp>

#include <random>
#include <string>

#include "core/blas.hpp"

namespace core = loralab::core;

namespace {
/// A product through the BLAS (EIGEN_USE_BLAS) against a plain triple loop in double, on fresh random inputs.
double product_error(int m, int n, int k, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd;
  Eigen::MatrixXf a(m, k), b(k, n);
  for (float& x : a.reshaped()) x = nd(gen);
  for (float& x : b.reshaped()) x = nd(gen);
  Eigen::MatrixXf c(m, n);
  c.noalias() = a * b;
  double worst = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double ref = 0;
      for (int l = 0; l < k; ++l) ref += double(a(i, l)) * double(b(l, j));
      worst = std::max(worst, std::abs(ref - double(c(i, j))));
    }
  return worst;
}
bool dynamic_openblas() {
  return openblas_get_config && std::string(openblas_get_config()).find("DYNAMIC_ARCH") != std::string::npos && gotoblas_dynamic_init;
}
}  // namespace

BOOST_AUTO_TEST_CASE(kernel_table_orders_instruction_sets) {
  BOOST_TEST(core::openblas_kernel_level("Prescott") == 0);
  BOOST_TEST(core::openblas_kernel_level("SANDYBRIDGE") == 1);
  BOOST_TEST(core::openblas_kernel_level("Haswell") == 2);
  BOOST_TEST(core::openblas_kernel_level("zen") == 2);
  BOOST_TEST(core::openblas_kernel_level("SkylakeX") == 3);
  BOOST_TEST(core::openblas_kernel_level("Cooperlake") == 4);
  BOOST_TEST(core::openblas_kernel_level("NoSuchCore") == -1);
  core::cpu_isa cpu;
  for (int level = 0; level <= 4; ++level) {  // the kernel chosen for a level is a kernel of that level
    cpu.level = level;
    for (bool amd : {false, true}) {
      cpu.amd = amd;
      BOOST_TEST(core::openblas_kernel_level(core::openblas_kernel_for(cpu)) == level);
    }
  }
}

BOOST_AUTO_TEST_CASE(cpu_level_follows_cpuid) {
  const core::cpu_isa cpu = core::this_cpu();
  BOOST_TEST(!cpu.model.empty());
  BOOST_TEST((cpu.level >= 2) == bool(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")));
  BOOST_TEST((cpu.level >= 3) == bool(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")));
}

BOOST_AUTO_TEST_CASE(fallback_kernel_is_replaced_and_products_stay_right) {
  const core::cpu_isa cpu = core::this_cpu();
  if (!dynamic_openblas() || cpu.level == 0) {
    BOOST_TEST_MESSAGE("skipped: needs OpenBLAS with DYNAMIC_ARCH on a CPU with AVX or better");
    return;
  }
  BOOST_TEST(product_error(67, 45, 301, 1) < 1e-3);
  std::string now;
  BOOST_REQUIRE(core::select_openblas_kernel("Prescott", &now));  // as if OpenBLAS had not known this CPU
  BOOST_TEST(now == "Prescott");
  BOOST_TEST(product_error(67, 45, 301, 2) < 1e-3);
  const core::blas_status s = core::check_blas_kernel();
  BOOST_TEST(s.detected == "Prescott");
  BOOST_TEST(s.kernel == core::openblas_kernel_for(cpu));
  BOOST_TEST(std::string(openblas_get_corename()) == s.kernel);
  BOOST_TEST(!s.below_cpu);
  BOOST_TEST(product_error(67, 45, 301, 3) < 1e-3);
  BOOST_TEST(core::blas_header(s, 1.0).find("OpenBLAS picked its Prescott kernel") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(user_choice_is_kept_with_a_warning) {
  const core::cpu_isa cpu = core::this_cpu();
  if (!dynamic_openblas() || cpu.level == 0) {
    BOOST_TEST_MESSAGE("skipped: needs OpenBLAS with DYNAMIC_ARCH on a CPU with AVX or better");
    return;
  }
  setenv("OPENBLAS_CORETYPE", "Prescott", 1);
  std::string now;
  BOOST_REQUIRE(core::select_openblas_kernel("Prescott", &now));
  const core::blas_status s = core::check_blas_kernel();
  unsetenv("OPENBLAS_CORETYPE");
  BOOST_TEST(s.user_choice);
  BOOST_TEST(s.kernel == "Prescott");
  BOOST_TEST(s.below_cpu);
  BOOST_TEST(core::select_openblas_kernel(core::openblas_kernel_for(cpu), &now));  // leave the process as it was
  BOOST_TEST(now == core::openblas_kernel_for(cpu));
}

BOOST_AUTO_TEST_CASE(header_names_library_kernel_and_rate) {
  const std::string h = core::blas_header();
  BOOST_TEST(h.starts_with("blas: "));
  BOOST_TEST(h.find("GFLOP/s") != std::string::npos);
  BOOST_TEST(h.find(core::this_cpu().model) != std::string::npos);
  if (openblas_get_corename) BOOST_TEST(h.find(std::string("kernel ") + openblas_get_corename()) != std::string::npos);
  BOOST_TEST(core::sgemm_gflops(256) > 0.1);
}
