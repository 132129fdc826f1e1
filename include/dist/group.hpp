// SPDX-License-Identifier: MIT
#pragma once
// Processes that work together: the MPI world when a program was started by an MPI launcher (mpirun, mpiexec, srun),
// else this process alone. Everything loralab exchanges between processes goes through a dist::group: sums of flat
// buffers (adapter gradients, a loss, counters) and gathered strings (run results, fingerprints).
//
//   dist::group& g = dist::group::world();     // MPI_Init on first use, only when a launcher started this process
//   g.sum(grads.data(), grads.size());         // every rank gets the same bits: Σ over ranks in rank order
//   if (g.is_root()) write_files();
//
// Without a launcher nothing of MPI is touched (no MPI_Init: a plain run costs nothing and needs no mpirun). Built
// without MPI (LORALAB_HAVE_MPI undefined) and started by a launcher with more than one rank, world() refuses with
// what to do, on rank 0 only (dist::collective_error: every rank knows, so no rank waits for another).
//
// Sums are MPI_Reduce to rank 0 then MPI_Bcast, not MPI_Allreduce: MPI does not promise that an allreduce rounds
// the same way on every rank (recursive doubling adds in a different order on each), and ranks that differ in the
// last bit of a gradient would drift apart in their optimizer states. Reduce + broadcast gives every rank rank 0's
// result: one extra latency per step, nothing at the sizes an adapter's gradients have (docs/mpi.md).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#ifdef LORALAB_HAVE_MPI
#include <mpi.h>
#endif

#include "core/check.hpp"

namespace loralab::dist {

/// An error every rank raises at the same point with the same message (a check of values all ranks share): rank 0
/// prints it, the others exit quietly, and nobody needs MPI_Abort.
struct collective_error : error {
  using error::error;
};

/// The world the launcher's environment describes: Open MPI (OMPI_COMM_WORLD_*), MPICH / Intel MPI's Hydra and Slurm
/// (PMI_*). {0, 1, 1} when no launcher started this process.
struct launch_environment {
  int rank = 0, size = 1, local_size = 1;
  const char* size_variable = nullptr;  ///< the variable that gave `size`
};

inline launch_environment launched() {
  const auto read = [](const char* name) -> int {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : -1;
  };
  launch_environment e;
  for (const auto& [size, rank, local] : {std::tuple{"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},
                                          std::tuple{"PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS"}}) {
    if (read(size) < 1) continue;
    e.size = read(size), e.rank = std::max(0, read(rank)), e.local_size = std::max(1, read(local)), e.size_variable = size;
    break;
  }
  return e;
}

/// Ends every rank of the job now: a failure only this rank knows of (the others would wait for it forever). Without
/// MPI initialised, this process alone.
[[noreturn]] inline void abort_job(int code) {
#ifdef LORALAB_HAVE_MPI
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

class group {
 public:
  /// The MPI world when a launcher started this process (MPI_Init on the first call), else this process alone.
  static group& world() {
    static group g = make_world();
    return g;
  }
  /// This process alone: what a grid cell's run and every single-process program reduce over.
  static const group& self() {
    static const group g;
    return g;
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  bool is_mpi() const { return mpi_; }

  /// x[i] ← Σ over ranks of x[i]; every rank gets rank 0's result bit for bit.
  void sum(float* x, std::size_t n) const { reduce(x, n, 4); }
  void sum(double* x, std::size_t n) const { reduce(x, n, 8); }
  void sum(long long* x, std::size_t n) const { reduce(x, n, 0); }

  /// Every rank's string, in rank order, on every rank.
  std::vector<std::string> all_gather(const std::string& mine) const {
    if (size_ == 1) return {mine};
#ifdef LORALAB_HAVE_MPI
    int n = int(mine.size());
    const std::size_t ranks = std::size_t(size_);
    std::vector<int> sizes(ranks), offsets(ranks);
    MPI_Allgather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, MPI_COMM_WORLD);
    long long total = 0;
    for (int r = 0; r < size_; ++r) offsets[std::size_t(r)] = int(total), total += sizes[std::size_t(r)];
    LORALAB_CHECK(total < (1LL << 31), "all_gather: ", total, " bytes exceed MPI's int counts");
    std::string all(std::size_t(total), '\0');
    MPI_Allgatherv(mine.data(), n, MPI_CHAR, all.data(), sizes.data(), offsets.data(), MPI_CHAR, MPI_COMM_WORLD);
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(std::size_t(offsets[std::size_t(r)]), std::size_t(sizes[std::size_t(r)])));
    return out;
#else
    return {mine};
#endif
  }


  /// Time spent in sum() and the bytes it summed, since the start (benches report them per step).
  struct traffic {
    double seconds = 0;
    std::size_t bytes = 0;
    int calls = 0;
  };
  const traffic& reduced() const { return traffic_; }

  group(const group&) = delete;
  group& operator=(const group&) = delete;
  group(group&&) = default;

 private:
  group() = default;

  static group make_world() {
    const launch_environment env = launched();
    group g;
    if (env.size <= 1) return g;
#ifdef LORALAB_HAVE_MPI
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);  // only the main thread calls MPI
    MPI_Comm_rank(MPI_COMM_WORLD, &g.rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &g.size_);
    g.mpi_ = true;
    std::atexit([] {  // after main returns, before the static objects go
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Finalize();
    });
    return g;
#else
    throw collective_error(std::string("started by an MPI launcher with ") + std::to_string(env.size) + " ranks (" + env.size_variable +
                           "), but this loralab was built without MPI: every rank would run the whole job alone. Install Open MPI "
                           "(apt-get install libopenmpi-dev openmpi-bin) and rebuild (scripts/setup.sh finds it; cmake -DLORALAB_MPI=ON "
                           "insists), or run without mpirun");
#endif
  }

  void reduce([[maybe_unused]] void* x, std::size_t n, [[maybe_unused]] int float_bytes) const {
    if (size_ == 1 || n == 0) return;
#ifdef LORALAB_HAVE_MPI
    const auto t0 = std::chrono::steady_clock::now();
    const MPI_Datatype type = float_bytes == 4 ? MPI_FLOAT : float_bytes == 8 ? MPI_DOUBLE : MPI_LONG_LONG;
    const std::size_t bytes_each = float_bytes == 4 ? 4 : 8;
    constexpr std::size_t chunk = std::size_t(1) << 28;  // MPI counts are ints
    for (std::size_t at = 0; at < n; at += chunk) {
      const int count = int(std::min(chunk, n - at));
      char* p = static_cast<char*>(x) + at * bytes_each;
      MPI_Reduce(is_root() ? MPI_IN_PLACE : p, is_root() ? p : nullptr, count, type, MPI_SUM, 0, MPI_COMM_WORLD);
      MPI_Bcast(p, count, type, 0, MPI_COMM_WORLD);
    }
    traffic_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    traffic_.bytes += n * bytes_each;
    ++traffic_.calls;
#endif
  }

  int rank_ = 0, size_ = 1;
  bool mpi_ = false;
  mutable traffic traffic_;
};

/// Raises the same collective_error on every rank when `ok` is false (a check of values every rank shares).
template <class... Parts>
void check_collective(bool ok, const Parts&... parts) {
  if (ok) return;
  std::ostringstream os;
  (os << ... << parts);
  throw collective_error(os.str());
}

}  // namespace loralab::dist
