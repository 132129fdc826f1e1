// SPDX-License-Identifier: MIT
#pragma once
// The environment the OpenMP runtime reads when it starts, set before it starts: include in programs only.
//
// GCC's OpenMP runtime reads OMP_WAIT_POLICY once, in its initializer, before main. Its default lets a thread
// that waits at a barrier spin for up to ~300k iterations (milliseconds); on a 2-core machine with any other job
// running, the thread it waits for is descheduled meanwhile, and a step of many short parallel regions slows 4-100x
// (measured: generate --threads 2 at 7.8 tokens/s next to a busy job, 4,254 with one thread; a 30M training step
// 3.9x slower next to one busy core while spinning, 2.0x while waiting passively). Waiting passively (sleeping on a
// futex) costs little on an idle machine and nothing collapses on a busy one, so loralab programs wait passively
// unless the user set OMP_WAIT_POLICY (or GOMP_SPINCOUNT) themselves.
//
// How: a variable set inside the process is too late or lost. The executable's .preinit_array runs before any
// library's initializer, but the C library's own initializer then resets `environ` to the environment the process
// was started with, before libgomp's reads it (a setenv there is silently lost: measured, the runtime kept
// spinning). So the .preinit_array entry starts the program again (execve of /proc/self/exe, same arguments) with
// OMP_WAIT_POLICY=passive and LORALAB_OMP_WAIT_POLICY=passive (the mark that loralab chose it) added: the libraries
// have not initialized yet, so this costs one exec (about a millisecond). When the exec fails (no /proc, the
// binary replaced since), the program goes on with the runtime's default and its header says so.
//
// A shared library may not have a .preinit_array: the entry exists only in code compiled for an executable
// (-fPIE or non-PIC); define LORALAB_NO_STARTUP_ENVIRONMENT to leave it out.
#include <cstdlib>
#include <cstring>

#include <unistd.h>

extern "C" char** environ;

namespace loralab::core {

/// How the OpenMP wait policy was decided, for the program's header.
enum class wait_policy_origin { not_run, user, loralab, exec_failed };

inline wait_policy_origin& wait_policy_decision() {
  static wait_policy_origin o = wait_policy_origin::not_run;
  return o;
}

namespace detail {
/// The value of NAME in an environment array, or nullptr.
inline const char* env_value(char** env, const char* name) {
  const std::size_t n = std::strlen(name);
  for (char** e = env; e && *e; ++e)
    if (std::strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  return nullptr;
}
}  // namespace detail

/// Decides the wait policy before the libraries start (see the header comment): keeps the user's OMP_WAIT_POLICY or
/// GOMP_SPINCOUNT; otherwise starts the program again with OMP_WAIT_POLICY=passive. Idempotent; without argv and
/// envp (a call from main) it only records what the environment says.
inline void set_startup_environment(int = 0, char** argv = nullptr, char** envp = nullptr) {
  if (wait_policy_decision() != wait_policy_origin::not_run) return;
  char** env = envp ? envp : environ;
  const char* policy = detail::env_value(env, "OMP_WAIT_POLICY");
  const char* mark = detail::env_value(env, "LORALAB_OMP_WAIT_POLICY");
  if (policy || detail::env_value(env, "GOMP_SPINCOUNT")) {
    const bool ours = policy && mark && std::strcmp(policy, mark) == 0;
    wait_policy_decision() = ours ? wait_policy_origin::loralab : wait_policy_origin::user;
    return;
  }
  wait_policy_decision() = wait_policy_origin::exec_failed;
  if (!argv || !envp || mark) return;  // a mark without the policy: an exec already ran and lost it; do not loop
  std::size_t n = 0;
  while (envp[n]) ++n;
  char** next = static_cast<char**>(std::malloc((n + 3) * sizeof(char*)));
  if (!next) return;
  std::memcpy(next, envp, n * sizeof(char*));
  static char policy_entry[] = "OMP_WAIT_POLICY=passive";
  static char mark_entry[] = "LORALAB_OMP_WAIT_POLICY=passive";
  next[n] = policy_entry, next[n + 1] = mark_entry, next[n + 2] = nullptr;
  execve("/proc/self/exe", argv, next);  // returns only on failure
  std::free(next);
}

/// "passive (loralab's default)", "active (OMP_WAIT_POLICY)", … for headers.
inline const char* wait_policy_description() {
  switch (wait_policy_decision()) {
    case wait_policy_origin::loralab: return "OpenMP threads wait passively (OMP_WAIT_POLICY=active to spin)";
    case wait_policy_origin::user: return "OpenMP wait policy from OMP_WAIT_POLICY/GOMP_SPINCOUNT";
    case wait_policy_origin::exec_failed:
      return "OpenMP threads spin while they wait (the runtime's default: loralab could not restart the program "
             "with OMP_WAIT_POLICY=passive; set it yourself on a busy machine)";
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
