// SPDX-License-Identifier: MIT
#pragma once
// Atomic file writes: write everything to a temp file beside the target, fsync, then rename over it.
// An interrupted save leaves either the old file or the new one, never half of one.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "core/check.hpp"

namespace loralab {

/// Writes the concatenation of `pieces` to `path` atomically (temp file in the same folder + rename).
/// On any failure the temp file is removed and loralab::error names the path.
class atomic_file {
 public:
  explicit atomic_file(std::filesystem::path path) : path_(std::move(path)) {
    tmp_ = path_;
    tmp_ += ".tmp." + std::to_string(::getpid());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(path_.string(), ": cannot create temp file ", tmp_.string(), ": ", std::strerror(errno));
  }
  atomic_file(const atomic_file&) = delete;
  atomic_file& operator=(const atomic_file&) = delete;
  ~atomic_file() { abandon(); }

  void write(std::span<const std::byte> bytes) {
    const std::byte* p = bytes.data();
    std::size_t left = bytes.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const std::string why = std::strerror(errno);
        abandon();
        fail(path_.string(), ": write failed: ", why);
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  void write(std::string_view s) { write(std::as_bytes(std::span(s.data(), s.size()))); }

  /// Flushes to disk and renames over the target. Until commit() the target is untouched.
  void commit() {
    if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
      fd_ = -1;
      const std::string why = std::strerror(errno);
      abandon();
      fail(path_.string(), ": flushing failed: ", why);
    }
    fd_ = -1;
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec) {
      abandon();
      fail(path_.string(), ": rename from ", tmp_.string(), " failed: ", ec.message());
    }
    committed_ = true;
  }

 private:
  void abandon() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!committed_) {
      std::error_code ec;
      std::filesystem::remove(tmp_, ec);
    }
  }
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace loralab
