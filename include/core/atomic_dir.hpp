// SPDX-License-Identifier: MIT
#pragma once
// Atomic directory writes: a whole output directory (a merged model, a pre-quantized model) is written into a
// hidden sibling `.NAME.partial-PID`, then renamed into place. An interrupted or failed write leaves no
// directory under the target's name, so nothing half-written ever looks complete; a leftover partial
// directory is visibly one. An existing target is refused unless the caller allows replacing it; then the
// old directory is moved aside, the new one renamed in, and the old one removed.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

#include "core/check.hpp"

namespace loralab {

class atomic_dir {
 public:
  /// Prepares to write `target`. Refuses an existing target unless `overwrite`; creates the parent directories
  /// and the temporary directory (errors name the path and the system's reason).
  atomic_dir(std::filesystem::path target, bool overwrite) : target_(std::move(target)) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (target_.filename().empty()) target_ = target_.parent_path();  // "out/" -> "out"
    LORALAB_CHECK(!target_.empty(), "the output directory name is empty");
    if (fs::exists(fs::symlink_status(target_, ec))) {
      if (!overwrite) fail(target_.string(), ": already exists (pass --overwrite to replace it)");
      if (!fs::is_directory(target_, ec)) fail(target_.string(), ": exists and is not a directory; not replacing it");
    }
    const fs::path parent = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    fs::create_directories(parent, ec);
    if (ec) fail(parent.string(), ": cannot create the output's parent directory: ", ec.message());
    tmp_ = parent / ("." + target_.filename().string() + ".partial-" + std::to_string(::getpid()));
    fs::remove_all(tmp_, ec);  // a leftover of this pid: ours to replace
    if (!fs::create_directory(tmp_, ec) || ec)
      fail(parent.string(), ": cannot write the output directory here: ", ec ? ec.message() : "creation refused");
  }
  atomic_dir(const atomic_dir&) = delete;
  atomic_dir& operator=(const atomic_dir&) = delete;
  ~atomic_dir() {
    if (!committed_) {
      std::error_code ec;
      std::filesystem::remove_all(tmp_, ec);
    }
  }

  /// Where to write the files (the temporary directory until commit()).
  const std::filesystem::path& path() const { return tmp_; }
  const std::filesystem::path& target() const { return target_; }

  /// Flushes the directory entries and renames the temporary directory to the target (replacing an old one).
  void commit() {
    namespace fs = std::filesystem;
    sync_dir(tmp_);
    std::error_code ec;
    fs::path old;
    if (fs::exists(target_, ec)) {
      old = tmp_;
      old += ".old";
      fs::remove_all(old, ec);
      fs::rename(target_, old, ec);
      if (ec) fail(target_.string(), ": cannot move the existing directory aside: ", ec.message());
    }
    fs::rename(tmp_, target_, ec);
    if (ec) {
      if (!old.empty()) fs::rename(old, target_, ec);  // put the old one back
      fail(target_.string(), ": cannot rename ", tmp_.string(), " into place: ", ec.message());
    }
    committed_ = true;
    sync_dir(target_.has_parent_path() ? target_.parent_path() : fs::path("."));
    if (!old.empty()) fs::remove_all(old, ec);
  }

 private:
  static void sync_dir(const std::filesystem::path& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) ::fsync(fd), ::close(fd);
  }
  std::filesystem::path target_, tmp_;
  bool committed_ = false;
};

}  // namespace loralab
