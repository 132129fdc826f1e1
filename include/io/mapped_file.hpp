// SPDX-License-Identifier: MIT
#pragma once
// A file mapped read-only for a validating reader (safetensors, GGUF, zip): the one place that opens, checks, maps
// and unmaps. The reader holds the file_mapping as a member, so a reader that throws from its parse step, or is
// moved, releases the mapping exactly once.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/check.hpp"

namespace loralab::io {

/// The whole of a file mapped read-only (PROT_READ, MAP_PRIVATE), unmapped by the destructor; move-only. A
/// default-constructed or moved-from mapping holds nothing.
class file_mapping {
 public:
  file_mapping() = default;
  /// Maps `path`. Refuses, naming the path: a file that cannot be opened or is not a regular file, and one shorter
  /// than min_size bytes ("P: the file is N bytes, too short for <too_short_for>"), before mapping.
  file_mapping(const std::filesystem::path& path, std::uint64_t min_size, std::string_view too_short_for) : path_(path) {
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
    data_ = static_cast<const std::byte*>(m);
    size_ = static_cast<std::size_t>(size);
  }

  file_mapping(file_mapping&& o) noexcept
      : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  file_mapping& operator=(file_mapping&& o) noexcept {
    file_mapping(std::move(o)).swap(*this);
    return *this;
  }
  file_mapping(const file_mapping&) = delete;
  file_mapping& operator=(const file_mapping&) = delete;
  ~file_mapping() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
  }

  const std::filesystem::path& path() const { return path_; }
  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }

  void swap(file_mapping& o) noexcept {
    std::swap(path_, o.path_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
  }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace loralab::io
