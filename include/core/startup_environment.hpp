// SPDX-License-Identifier: MIT
#pragma once
// The environment the OpenMP runtime reads when it starts, set before it starts: include in programs only.
//
// GCC's OpenMP runtime reads OMP_WAIT_POLICY once, when the library loads (before main). Its default lets a thread
// that waits at a barrier spin for up to ~300k iterations; on a 2-core machine with any other job running, the
// thread it waits for is descheduled meanwhile, and a step of many short parallel regions slows 5-100x (measured:
// generate --threads 2 at 7.8 tokens/s next to a busy job, 4,254 with one thread). Waiting passively (sleeping on
// a futex) costs little on an idle machine and nothing collapses on a busy one, so loralab programs wait passively
// unless the user set OMP_WAIT_POLICY (or GOMP_SPINCOUNT) themselves.
//
// How: a function in the executable's .preinit_array runs before any shared library's initializer (the ELF rule),
// so libgomp and OpenBLAS see the variable. A shared library may not have a .preinit_array: the entry exists only
// in code compiled for an executable (-fPIE or non-PIC); define LORALAB_NO_STARTUP_ENVIRONMENT to leave it out.
#include <cstdlib>

extern "C" char** environ;

namespace loralab::core {

/// How the OpenMP wait policy was decided, for the program's header.
enum class wait_policy_origin { not_run, user, loralab };

inline wait_policy_origin& wait_policy_decision() {
  static wait_policy_origin o = wait_policy_origin::not_run;
  return o;
}

/// Sets OMP_WAIT_POLICY=passive unless the user chose a policy or a spin count; idempotent. Called from the
/// .preinit_array the C library has not yet pointed `environ` at the environment (it is null): it is pointed at
/// `envp` first, or setenv would start an environment of one variable and the libraries' initializers would lose
/// the user's (OMP_NUM_THREADS, OPENBLAS_CORETYPE, …).
inline void set_startup_environment(int = 0, char** = nullptr, char** envp = nullptr) {
  if (wait_policy_decision() != wait_policy_origin::not_run) return;
  if (!environ && envp) environ = envp;
  const bool user = std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT");
  if (!user) setenv("OMP_WAIT_POLICY", "passive", 0);
  wait_policy_decision() = user ? wait_policy_origin::user : wait_policy_origin::loralab;
}

/// "passive (loralab's default)", "active (OMP_WAIT_POLICY)", … for headers. The variable itself is not readable
/// in main: the C library restores the environment it was started with after the initializers ran.
inline const char* wait_policy_description() {
  switch (wait_policy_decision()) {
    case wait_policy_origin::loralab: return "OpenMP threads wait passively (OMP_WAIT_POLICY=active to spin)";
    case wait_policy_origin::user: return "OpenMP wait policy from OMP_WAIT_POLICY/GOMP_SPINCOUNT";
    default: return "OpenMP threads spin while they wait (the runtime's default)";
  }
}

}  // namespace loralab::core

#if !defined(LORALAB_NO_STARTUP_ENVIRONMENT) && (defined(__PIE__) || !defined(__PIC__))
namespace loralab::core {
namespace {
// One entry per translation unit that includes this header; the function runs its body once.
[[gnu::used, gnu::section(".preinit_array")]] constexpr void (*startup_environment_entry)(int, char**, char**) = &set_startup_environment;
}  // namespace
}  // namespace loralab::core
#endif
