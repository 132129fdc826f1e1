// SPDX-License-Identifier: MIT
#pragma once
// A file mapped read-only for a validating reader (safetensors, GGUF, zip): the one place that opens, checks and
// maps. The reader owns the mapping afterwards (it unmaps in its destructor), so a reader object that throws from
// its parse step still releases it.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string_view>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/check.hpp"

namespace loralab::io {

struct file_mapping {
  const std::byte* data = nullptr;
  std::size_t size = 0;
};

/// Maps `path` read-only. Refuses, naming the path: a file that cannot be opened or is not a regular file, and one
/// shorter than min_size bytes ("P: the file is N bytes, too short for <too_short_for>"), before mapping.
inline file_mapping map_read_only(const std::filesystem::path& path, std::uint64_t min_size, std::string_view too_short_for) {
  const std::string p = path.string();
  struct fd_guard {
    int fd;
    ~fd_guard() {
      if (fd >= 0) ::close(fd);
    }
  } fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) fail(p, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) fail(p, ": cannot stat: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(p, ": not a regular file");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  // Checked before mmap, which refuses a zero-length mapping.
  if (size < min_size) fail(p, ": the file is ", size, " bytes, too short for ", too_short_for);
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (m == MAP_FAILED) fail(p, ": mmap of ", size, " bytes failed: ", std::strerror(errno));
  return {static_cast<const std::byte*>(m), static_cast<std::size_t>(size)};
}

}  // namespace loralab::io
