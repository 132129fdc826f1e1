// SPDX-License-Identifier: MIT
// dist/group.hpp as a build without MPI compiles it (this executable alone: its inline functions must not meet a
// translation unit compiled with MPI): started by a launcher with 2 ranks, world() refuses on every rank with one
// message, which report_error prints on rank 0 only; with one rank (mpirun -np 1) it runs as a plain process.
#undef LORALAB_HAVE_MPI
#define BOOST_TEST_MODULE dist_without_mpi
#include <boost/test/unit_test.hpp>

#include <cstdlib>

#include "dist/group.hpp"
#include "experiment/cli.hpp"

using namespace loralab;

BOOST_AUTO_TEST_CASE(a_launch_of_several_ranks_is_refused_with_what_to_do) {
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  try {
    (void)dist::group::world();
    BOOST_ERROR("world() must refuse");
  } catch (const dist::collective_error& e) {
    const std::string m = e.what();
    BOOST_TEST(m.starts_with("started by an MPI launcher with 2 ranks (OMPI_COMM_WORLD_SIZE), but this loralab was built without MPI"), m);
    BOOST_TEST(m.find("apt-get install libopenmpi-dev openmpi-bin") != std::string::npos, m);
    BOOST_TEST(experiment::report_error("prog", e) == 1, "rank 1 prints nothing and exits 1");
  }
  setenv("OMPI_COMM_WORLD_SIZE", "1", 1);  // -np 1: a plain process (the refusal was not cached)
  setenv("OMPI_COMM_WORLD_RANK", "0", 1);
  BOOST_TEST(dist::group::world().size() == 1);
  unsetenv("OMPI_COMM_WORLD_SIZE"), unsetenv("OMPI_COMM_WORLD_RANK");
}
