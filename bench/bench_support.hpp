// SPDX-License-Identifier: MIT
#pragma once
// What every bench shares: median timing after a warm-up, and a check of how busy other processes kept the
// cores (on a 2-core machine a second job makes OpenMP 2-100x slower, and a ratio measured then means little).
#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/core.h>
#include <csignal>
#include <sys/times.h>
#include <sys/wait.h>
#include <unistd.h>

namespace loralab::bench {

/// Median of a list of seconds (the mean of the two middle ones for an even count).
inline double median(std::vector<double> t) {
  if (t.empty()) return 0;
  std::ranges::sort(t);
  return 0.5 * (t[(t.size() - 1) / 2] + t[t.size() / 2]);
}

/// Median wall time of `repeats` calls of f, after one untimed warm-up call.
template <class F>
double median_seconds(int repeats, F&& f) {
  f();
  std::vector<double> t(static_cast<std::size_t>(repeats));
  for (double& s : t) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return median(std::move(t));
}

/// Clock ticks every CPU spent busy (/proc/stat) and this process's own.
inline std::pair<double, double> busy_ticks() {
  std::ifstream st("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  st >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq >> steal;
  tms own{};
  times(&own);
  return {user + nice + sys + irq + softirq + steal, double(own.tms_utime + own.tms_stime)};
}

/// Started before the timed work; report() says how many cores other processes kept busy meanwhile.
class load_monitor {
 public:
  load_monitor() : t0_(std::chrono::steady_clock::now()), start_(busy_ticks()) {}
  void report(int cores) const {
    const auto now = busy_ticks();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double others = (now.first - start_.first - (now.second - start_.second)) / double(sysconf(_SC_CLK_TCK)) / wall;
    fmt::print("\n{}other processes kept {:.2f} of {} cores busy during the {:.0f} s of benchmarks{}\n",
               others > 0.1 ? "WARNING: " : "", others, cores, wall,
               others > 0.1 ? ": these numbers are not those of an idle machine" : "");
  }

 private:
  std::chrono::steady_clock::time_point t0_;
  std::pair<double, double> start_;
};

/// Another job on the machine, for the contention line: a child process that keeps one core busy (a spin loop)
/// from construction to destruction. With OpenMP threads that spin at barriers, a 2-core machine with one such
/// job ran 5-100x slower; loralab's programs wait passively (core/startup_environment.hpp).
class co_runner {
 public:
  co_runner() {
    pid_ = fork();
    if (pid_ == 0) {  // the child: spin until killed, touching nothing of the parent's
      volatile unsigned long x = 0;
      for (;;) x = x + 1;
    }
  }
  co_runner(const co_runner&) = delete;
  co_runner& operator=(const co_runner&) = delete;
  ~co_runner() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

}  // namespace loralab::bench
