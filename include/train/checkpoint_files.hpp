// SPDX-License-Identifier: MIT
#pragma once
// Checkpoint integrity: what makes OUTPUT/checkpoint-N trustworthy after a crash, a full disk or damage.
//   - A checkpoint is written into a hidden `.checkpoint-N.partial-PID` and renamed into place (core/atomic_dir.hpp):
//     a save that fails (disk full) or is killed leaves no directory named checkpoint-N.
//   - Its last file is manifest.json, the integrity record: the size and CRC-32 of every other file.
//     verify_checkpoint() checks it and names the first file that does not match, so a checkpoint damaged after
//     the fact (a truncated tensor file, an edited JSON) is refused by name, never loaded.
//   - remove_stale_partials() clears what killed runs left behind (their PID is gone); metrics_up_to() drops the
//     metrics.jsonl lines a killed run logged after its last checkpoint, so a resumed run logs each step once.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/read_file.hpp"
#include "io/json.hpp"
#include "io/zip_archive.hpp"

namespace loralab::train {

inline constexpr const char* checkpoint_manifest = "manifest.json";

/// Every OUTPUT/checkpoint-N directory, newest (largest N) first. Hidden partial directories never match.
inline std::vector<std::pair<int, std::filesystem::path>> list_checkpoints(const std::filesystem::path& output_dir) {
  std::vector<std::pair<int, std::filesystem::path>> out;
  std::error_code ec;
  if (!std::filesystem::is_directory(output_dir, ec)) return out;
  const std::regex re("checkpoint-([0-9]{1,8})");
  for (const auto& e : std::filesystem::directory_iterator(output_dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory(ec) && std::regex_match(name, m, re)) out.emplace_back(std::stoi(m[1]), e.path());
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

/// The newest OUTPUT/checkpoint-N, or empty. Whether it is intact is verify_checkpoint()'s question.
inline std::filesystem::path latest_checkpoint(const std::filesystem::path& output_dir) {
  const auto all = list_checkpoints(output_dir);
  return all.empty() ? std::filesystem::path() : all.front().second;
}

namespace detail {
inline std::string crc_hex(const std::string& bytes) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "%08x", io::crc32(std::as_bytes(std::span(bytes.data(), bytes.size()))));
  return buf;
}
}  // namespace detail

/// Writes DIR/manifest.json (atomically): {"format": "loralab-checkpoint", "version": 1, "files": [{"name",
/// "bytes", "crc32"}]} over every other regular file of DIR, sorted by name. Call it after the last file is written.
inline void write_manifest(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != checkpoint_manifest) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  nlohmann::ordered_json j;
  j["format"] = "loralab-checkpoint";
  j["version"] = 1;
  j["files"] = nlohmann::ordered_json::array();
  for (const auto& n : names) {
    const std::string bytes = core::read_file(dir / n, "checkpoint");
    j["files"].push_back({{"name", n}, {"bytes", bytes.size()}, {"crc32", detail::crc_hex(bytes)}});
  }
  atomic_file f(dir / checkpoint_manifest);
  f.write(j.dump(2));
  f.commit();
}

/// Checks DIR against its manifest.json: every file it lists is there with its size and CRC-32, and the files a
/// checkpoint needs are listed. Throws loralab::error naming the first bad file (or manifest.json and its key).
/// `allow_unverified`: a checkpoint without manifest.json (saved by an older loralab) passes, and the return value
/// says so ("" when verified).
inline std::string verify_checkpoint(const std::filesystem::path& dir, bool allow_unverified = false) {
  const auto mpath = dir / checkpoint_manifest;
  LORALAB_CHECK(std::filesystem::is_directory(dir), dir.string(), ": not a directory");
  if (!std::filesystem::exists(mpath)) {
    if (allow_unverified) return mpath.string() + " is missing: the checkpoint is not verified (saved by an older loralab?)";
    fail(mpath.string(), ": missing; a checkpoint without its integrity record is incomplete or was saved by an older "
         "loralab (pass --resume-from ", dir.string(), " to use it unverified)");
  }
  const std::string where = mpath.string();
  const nlohmann::json j = io::parse_json(core::read_file(mpath, "checkpoint manifest"), where);
  LORALAB_CHECK(j.is_object() && j.value("format", std::string()) == "loralab-checkpoint", where,
                ": not a loralab checkpoint manifest (key 'format' should be \"loralab-checkpoint\")");
  LORALAB_CHECK(j.contains("files") && j.at("files").is_array(), where, ": key 'files' is missing or not a list");
  std::vector<std::string> listed;
  for (const auto& f : j.at("files")) {
    std::string name, crc;
    std::uintmax_t size = 0;
    try {
      name = f.at("name").get<std::string>(), crc = f.at("crc32").get<std::string>(), size = f.at("bytes").get<std::uintmax_t>();
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": malformed entry in 'files' (", e.what(), ")");
    }
    LORALAB_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..", where,
                  ": key 'files' names '", name, "', not a file of this directory");
    const auto p = dir / name;
    std::error_code ec;
    LORALAB_CHECK(std::filesystem::is_regular_file(p, ec), p.string(), ": missing (", where, " lists it)");
    const std::string bytes = core::read_file(p, "checkpoint");
    LORALAB_CHECK(bytes.size() == size, p.string(), ": ", bytes.size(), " bytes, but ", where, " records ", size,
                  " (truncated or changed after it was saved)");
    const std::string got = detail::crc_hex(bytes);
    LORALAB_CHECK(got == crc, p.string(), ": CRC-32 ", got, ", but ", where, " records ", crc, " (changed after it was saved)");
    listed.push_back(name);
  }
  for (const char* need : {"adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    LORALAB_CHECK(std::find(listed.begin(), listed.end(), need) != listed.end(), where, ": key 'files' does not list ", need);
  return "";
}

/// Removes what killed or failed saves left in `output_dir`: hidden `.NAME.partial-PID[.old]` directories and
/// `NAME.tmp.PID` files whose process is gone (never this process's, never a live one's).
inline void remove_stale_partials(const std::filesystem::path& output_dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(output_dir, ec)) return;
  const std::regex re(R"(\..+\.partial-([0-9]{1,9})(\.old)?|.+\.tmp\.([0-9]{1,9}))");
  std::vector<std::filesystem::path> stale;
  for (const auto& e : std::filesystem::directory_iterator(output_dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (!std::regex_match(name, m, re)) continue;
    const int pid = std::stoi(m[1].matched ? m[1].str() : m[3].str());
    if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) stale.push_back(e.path());
  }
  for (const auto& p : stale) std::filesystem::remove_all(p, ec);
}

/// Keeps the lines of a metrics.jsonl whose "step" is <= `step` (and drops a torn last line), atomically: a run
/// resumed from checkpoint-`step` then appends the steps after it once each.
inline void metrics_up_to(const std::filesystem::path& path, int step) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return;
  std::ifstream in(path);
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step") && j.at("step").is_number_integer() && j.at("step").get<std::int64_t>() <= step)
      kept += line + "\n";
  }
  in.close();
  atomic_file f(path);
  f.write(kept);
  f.commit();
}

}  // namespace loralab::train
