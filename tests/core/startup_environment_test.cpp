// SPDX-License-Identifier: MIT
// The startup environment: the .preinit_array entry ran before the OpenMP runtime started, and the runtime took
// its wait policy: a thread left waiting at a barrier burns (almost) no CPU time. (omp_display_env cannot tell:
// it prints PASSIVE when no policy was set, while the runtime spins for milliseconds.) CTest runs this suite with
// OMP_WAIT_POLICY and GOMP_SPINCOUNT unset (tests/core/CMakeLists.txt); by hand, with them set, the user's choice wins.
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <omp.h>
#include <sys/resource.h>
#include <chrono>
#include <thread>
#include <unistd.h>

#include "core/startup_environment.hpp"

namespace core = loralab::core;

namespace {
std::string omp_environment() {
  std::fflush(stderr);
  char path[] = "/tmp/loralab_omp_env_XXXXXX";
  const int fd = mkstemp(path);
  const int saved = dup(2);
  dup2(fd, 2);
  omp_display_env(0);
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved), close(fd);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::remove(path);
  return text.str();
}
/// CPU seconds the process used while `rounds` parallel regions of two threads each left one thread waiting
/// 10 ms at the closing barrier (the other sleeps): ~0 when waits are passive, milliseconds per round when they spin.
double cpu_seconds_of_waiting(int rounds) {
  const auto cpu = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  };
  const double before = cpu();
  for (int r = 0; r < rounds; ++r) {
#pragma omp parallel num_threads(2)
    if (omp_get_thread_num() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cpu() - before;
}
}  // namespace

BOOST_AUTO_TEST_CASE(openmp_waits_passively_unless_the_user_chose) {
  BOOST_TEST((core::wait_policy_decision() != core::wait_policy_origin::not_run));  // ran before main
  const std::string env = omp_environment();
  BOOST_TEST_MESSAGE(core::wait_policy_description());
  if (core::wait_policy_decision() == core::wait_policy_origin::loralab) {
    BOOST_TEST(env.find("OMP_WAIT_POLICY = 'PASSIVE'") != std::string::npos, env);
    // 40 rounds of 10 ms: spinning (the runtime's default, ~300k pause loops per wait) costs >= 100 ms of CPU here
    const double waited = cpu_seconds_of_waiting(40);
    BOOST_TEST_MESSAGE("CPU time of 40 waits of 10 ms: " << 1e3 * waited << " ms");
    BOOST_TEST(waited < 0.05, "a waiting OpenMP thread used " << 1e3 * waited << " ms of CPU in 40 waits of 10 ms: it spins");
  } else {
    BOOST_TEST_MESSAGE("OMP_WAIT_POLICY or GOMP_SPINCOUNT was set: the user's policy is kept");
  }
  // the user's other variables reached the runtime too (a setenv before the C library set `environ` would have
  // started an environment of one variable): CTest sets OMP_THREAD_LIMIT for this
  if (const char* limit = std::getenv("OMP_THREAD_LIMIT"))
    BOOST_TEST(env.find(std::string("OMP_THREAD_LIMIT = '") + limit + "'") != std::string::npos, env);
  else
    BOOST_TEST_MESSAGE("OMP_THREAD_LIMIT not set: the check that user variables survive is not run");
}
