// SPDX-License-Identifier: MIT
#pragma once
// A whole file as bytes: the one reader for files parsed as text (tokenizers, data files) or checked as bytes
// (checkpoint CRCs), so that a missing file, one that cannot be opened and a read error are refused alike, naming
// the path.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>

#include "core/check.hpp"

namespace loralab::core {

/// The bytes of `path`. `what` names the kind of file in messages: read_file(p, "data") refuses with
/// "P: data file not found (or not a file)", "P: cannot open data file" or "P: read error in data file".
inline std::string read_file(const std::filesystem::path& path, std::string_view what = "") {
  const std::string p = path.string(), kind = what.empty() ? std::string("file") : std::string(what) + " file";
  std::error_code ec;
  LORALAB_CHECK(std::filesystem::is_regular_file(path, ec), p, ": ", kind, " not found (or not a file)");
  std::ifstream in(path, std::ios::binary);
  LORALAB_CHECK(in.good(), p, ": cannot open ", kind);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LORALAB_CHECK(!in.bad(), p, ": read error in ", kind);
  return bytes;
}

}  // namespace loralab::core
