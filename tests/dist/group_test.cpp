// SPDX-License-Identifier: MIT
// dist/: the launcher's environment read as Open MPI and PMI (MPICH, Intel MPI, Slurm) set it; a process without a
// launcher is a world of one that sums nothing away; input fingerprints tell files apart (whole below 64 MiB,
// sampled above, directories by name and content) and a group of one has nothing to compare.
#define BOOST_TEST_MODULE dist
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "dist/fingerprint.hpp"
#include "dist/group.hpp"
#include "test_support.hpp"

using namespace loralab;

namespace {
struct scoped_env {  // sets variables for one test and removes them after
  std::vector<std::string> names;
  scoped_env(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [k, v] : vars) setenv(k, v, 1), names.emplace_back(k);
  }
  ~scoped_env() {
    for (const auto& k : names) unsetenv(k.c_str());
  }
};

void write(const std::filesystem::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }
}  // namespace

BOOST_AUTO_TEST_CASE(the_launchers_environment) {
  BOOST_TEST(dist::launched().size == 1);
  BOOST_TEST(dist::launched().size_variable == nullptr);
  {
    scoped_env e{{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}};
    const auto l = dist::launched();
    BOOST_TEST(l.size == 4); BOOST_TEST(l.rank == 3); BOOST_TEST(l.local_size == 2);
    BOOST_TEST(std::string(l.size_variable) == "OMPI_COMM_WORLD_SIZE");
  }
  {
    scoped_env e{{"PMI_SIZE", "8"}, {"PMI_RANK", "5"}};  // Hydra and Slurm's PMI: no local size given
    const auto l = dist::launched();
    BOOST_TEST(l.size == 8); BOOST_TEST(l.rank == 5); BOOST_TEST(l.local_size == 1);
  }
}

BOOST_AUTO_TEST_CASE(a_process_alone_is_a_world_of_one) {
  const dist::group& w = dist::group::world();  // no launcher: MPI is not even initialised
  BOOST_TEST(w.size() == 1); BOOST_TEST(w.rank() == 0); BOOST_TEST(w.is_root()); BOOST_TEST(!w.is_mpi());
  std::vector<float> x = {1.5f, -2.0f, 3.25f};
  w.sum(x.data(), x.size());
  BOOST_TEST(x == (std::vector<float>{1.5f, -2.0f, 3.25f}));
  BOOST_TEST(w.all_gather("mine") == std::vector<std::string>{"mine"});
  BOOST_TEST(w.reduced().calls == 0);
  BOOST_TEST(dist::group::self().size() == 1);
  dist::check_same_inputs(w, 1, {{"model", "no/such/m.bin"}});  // nothing to compare with: not even read
  BOOST_CHECK_EXCEPTION(dist::check_collective(false, "a ", 3, " b"), dist::collective_error,
                        [](const dist::collective_error& e) { return std::string(e.what()) == "a 3 b"; });
}

BOOST_AUTO_TEST_CASE(fingerprints_tell_inputs_apart) {
  loralab::testing::temp_dir dir;
  const auto p = dir.path / "a.bin", q = dir.path / "b.bin";
  write(p, "weights"), write(q, "weights");
  BOOST_TEST(dist::fingerprint_path(p) == dist::fingerprint_path(q), "the same bytes under another name");
  write(q, "weightz");
  BOOST_TEST(dist::fingerprint_path(p) != dist::fingerprint_path(q));
  write(q, "weights ");
  BOOST_TEST(dist::fingerprint_path(p) != dist::fingerprint_path(q), "a longer file");
  BOOST_TEST(dist::fingerprint_path("") == 0u);
  BOOST_CHECK_THROW(dist::fingerprint_path(dir.path / "missing.bin"), loralab::error);

  // above 64 MiB: 64 samples of 1 MiB; a byte inside the first or last sample counts, and so does the size
  const auto big = dir.path / "big.bin";
  std::ofstream(big).close();
  std::filesystem::resize_file(big, 100ull << 20);  // sparse: 100 MiB of zeros
  const std::uint64_t zeros = dist::fingerprint_path(big);
  {
    std::fstream f(big, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp((100ll << 20) - 10), f.put('x');
  }
  BOOST_TEST(dist::fingerprint_path(big) != zeros, "a byte in the last sample");
  std::filesystem::resize_file(big, (100ull << 20) + 1);
  BOOST_TEST(dist::fingerprint_path(big) != zeros);

  // a directory: file names and contents, in name order
  std::filesystem::create_directories(dir.path / "hf" / "sub");
  write(dir.path / "hf" / "config.json", "{}"), write(dir.path / "hf" / "sub" / "w.safetensors", "abc");
  const std::uint64_t d = dist::fingerprint_path(dir.path / "hf");
  write(dir.path / "hf" / "sub" / "w.safetensors", "abd");
  BOOST_TEST(dist::fingerprint_path(dir.path / "hf") != d);
  BOOST_TEST(dist::fingerprint_arguments(0, nullptr) == dist::fnv1a{}.h);
  char a0[] = "prog", a1[] = "--lr", a2[] = "1e-3", b2[] = "2e-3", a3[] = "--lr1e-3";
  char* x[] = {a0, a1, a2};
  char* y[] = {a0, a1, b2};
  char* z[] = {a0, a3};
  BOOST_TEST(dist::fingerprint_arguments(3, x) != dist::fingerprint_arguments(3, y));
  BOOST_TEST(dist::fingerprint_arguments(3, x) != dist::fingerprint_arguments(2, z), "arguments are kept apart");
}
