// SPDX-License-Identifier: MIT
#pragma once
// Zip archives of STORED (uncompressed) entries: the container torch.save writes (.pth/.pt since PyTorch 1.6).
// zip_reader maps a file and hands out each entry as a span of its bytes; zip_writer streams entries into an
// atomic file, each entry's data aligned to 64 bytes, laid out as PyTorch's PyTorchStreamWriter (miniz) does.
//
// Layout (PKWARE APPNOTE 6.3.x), all little-endian: per entry a local header (30 bytes, name, extra), the data
// and, in what torch and zip_writer write, a data descriptor (general-purpose flag bit 3; the local header's
// CRC and sizes are then 0); then the central directory (46 bytes, name, extra, comment per entry); then the
// zip64 end-of-central-directory record (56 bytes) and its locator (20 bytes) when present; then the
// end-of-central-directory record (22 bytes and a comment of up to 65535 bytes). A size or offset that does not
// fit its 32-bit field (an entry count its 16-bit one) holds 0xFFFFFFFF (0xFFFF) there, and the value lives in
// the entry's zip64 extra field (id 0x0001) or in the zip64 end record.
//
// zip_reader trusts nothing: every offset and size is checked to lie inside the file (entries before the
// central directory), counts are bounded, and compressed, encrypted, multi-disk and duplicate entries are
// refused. Errors are loralab::error starting with the file path and naming the entry.
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "io/mapped_file.hpp"

namespace loralab::io {

static_assert(std::endian::native == std::endian::little, "loralab::io::zip_archive assumes a little-endian host");

namespace detail::zip {

inline constexpr std::uint32_t sig_local = 0x04034b50, sig_central = 0x02014b50, sig_descriptor = 0x08074b50,
                               sig_end = 0x06054b50, sig_end64 = 0x06064b50, sig_locator64 = 0x07064b50;
inline constexpr std::uint64_t max32 = 0xFFFFFFFF;
inline constexpr std::size_t local_size = 30, central_size = 46, end_size = 22, end64_size = 56, locator_size = 20;

inline std::uint16_t rd16(const std::byte* p) { std::uint16_t v; std::memcpy(&v, p, 2); return v; }
inline std::uint32_t rd32(const std::byte* p) { std::uint32_t v; std::memcpy(&v, p, 4); return v; }
inline std::uint64_t rd64(const std::byte* p) { std::uint64_t v; std::memcpy(&v, p, 8); return v; }
inline void put16(std::string& s, std::uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); }
inline void put32(std::string& s, std::uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
inline void put64(std::string& s, std::uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }

/// Slicing-by-8 tables of the reflected CRC-32 polynomial 0xEDB88320 (zip, zlib, PNG).
constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc32_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (std::size_t i = 0; i < 256; ++i)
    for (std::size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  return t;
}
inline constexpr auto crc32_tables = make_crc32_tables();

/// "deflate" for 8, ...: what a refused compression method is.
inline std::string method_name(std::uint16_t m) {
  switch (m) {
    case 8: return "deflate";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    case 95: return "xz";
    default: return "method " + std::to_string(m);
  }
}

}  // namespace detail::zip

/// CRC-32 of `bytes` as zip stores it, continuing from `crc` (start from 0). crc32("123456789") == 0xCBF43926.
inline std::uint32_t crc32(std::span<const std::byte> bytes, std::uint32_t crc = 0) {
  const auto& t = detail::zip::crc32_tables;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  std::size_t n = bytes.size();
  crc = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    std::uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][hi & 0xff] ^
          t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
  }
  for (; n > 0; ++p, --n) crc = t[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return ~crc;
}

/// One entry of an open archive; `data` points into the file's mapping and lives as long as the reader.
struct zip_entry {
  std::string name;
  std::span<const std::byte> data;
  std::uint32_t crc32 = 0;          // as the central directory records it (checked by zip_reader::verify_crc)
  std::uint64_t header_offset = 0;  // of the local header in the file
  std::uint64_t data_offset = 0;    // of the first data byte in the file
};

/// A zip archive of stored entries, opened read-only: mapped with mmap (MAP_PRIVATE, PROT_READ) and validated
/// by open(). Entries keep the central directory's order. Moving the reader keeps the spans valid.
class zip_reader {
 public:
  /// More entries than this is taken for a corrupt count (a Llama checkpoint has a few hundred).
  static constexpr std::uint64_t max_entries = 1u << 20;

  static zip_reader open(const std::filesystem::path& path);

  zip_reader(zip_reader&& o) noexcept { swap(o); }
  zip_reader& operator=(zip_reader&& o) noexcept {
    zip_reader(std::move(o)).swap(*this);
    return *this;
  }
  zip_reader(const zip_reader&) = delete;
  zip_reader& operator=(const zip_reader&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<zip_entry>& entries() const { return entries_; }
  /// Whether the file has zip64 end records (torch always writes them).
  bool zip64() const { return zip64_; }
  const zip_entry* find(std::string_view name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const zip_entry& at(std::string_view name) const {
    const zip_entry* e = find(name);
    if (e == nullptr) fail(path_.string(), ": no zip entry '", name, "'");
    return *e;
  }
  /// Recomputes the entry's CRC-32 and throws if it differs from the central directory's.
  void verify_crc(const zip_entry& e) const {
    const std::uint32_t got = crc32(e.data);
    if (got != e.crc32)
      fail(path_.string(), ": zip entry '", e.name, "': CRC-32 of its ", e.data.size(), " bytes is 0x", std::hex, got,
           ", the central directory says 0x", e.crc32, " (the data is corrupt)");
  }

 private:
  zip_reader() = default;
  void swap(zip_reader& o) noexcept {
    std::swap(path_, o.path_);
    map_.swap(o.map_);
    std::swap(zip64_, o.zip64_);
    std::swap(entries_, o.entries_);
    std::swap(index_, o.index_);
  }
  void parse();

  std::filesystem::path path_;
  file_mapping map_;
  bool zip64_ = false;
  std::vector<zip_entry> entries_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

inline zip_reader zip_reader::open(const std::filesystem::path& path) {
  zip_reader z;
  z.path_ = path;
  z.map_ = file_mapping(path, detail::zip::end_size, "a zip archive (its end record alone is 22 bytes)");
  z.parse();  // throws with z owning the mapping, so it is unmapped
  return z;
}

inline void zip_reader::parse() {
  using namespace detail::zip;
  const std::string p = path_.string();
  const std::byte* b = map_.data();
  const std::uint64_t size = map_.size();

  // The end record is the last 22 bytes before a comment of up to 65535 bytes: search back for its signature
  // where the comment length it declares reaches exactly to the end of the file.
  const std::uint64_t lowest = size >= end_size + 0xFFFF ? size - end_size - 0xFFFF : 0;
  std::uint64_t end = size;
  for (std::uint64_t pos = size - end_size + 1; pos-- > lowest;)
    if (rd32(b + pos) == sig_end && pos + end_size + rd16(b + pos + 20) == size) {
      end = pos;
      break;
    }
  if (end == size)
    fail(p, ": not a zip archive: no end-of-central-directory record in its last ", size - lowest, " bytes",
         rd32(b) == sig_local ? " (it starts like one, so it is probably truncated)" : "");

  std::uint64_t disk = rd16(b + end + 4), cd_disk = rd16(b + end + 6), n_here = rd16(b + end + 8),
                n = rd16(b + end + 10), cd_size = rd32(b + end + 12), cd_off = rd32(b + end + 16);
  std::uint64_t limit = end;  // the central directory ends at or before this offset
  if (end >= locator_size && rd32(b + end - locator_size) == sig_locator64) {
    const std::byte* loc = b + end - locator_size;
    const std::uint64_t off64 = rd64(loc + 8);
    if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
      fail(p, ": zip64 locator names disk ", rd32(loc + 4), " of ", rd32(loc + 16), "; multi-disk is not supported");
    if (off64 > end - locator_size || end - locator_size - off64 < end64_size)
      fail(p, ": zip64 locator points at offset ", off64, ", leaving no room for the 56-byte zip64 end record before ",
           end - locator_size);
    const std::byte* e64 = b + off64;
    if (rd32(e64) != sig_end64) fail(p, ": no zip64 end-of-central-directory record at offset ", off64);
    if (rd64(e64 + 4) < end64_size - 12 || rd64(e64 + 4) > end - locator_size - off64 - 12)
      fail(p, ": zip64 end record at offset ", off64, " declares size ", rd64(e64 + 4), ", too big or too small");
    disk = rd32(e64 + 16), cd_disk = rd32(e64 + 20), n_here = rd64(e64 + 24), n = rd64(e64 + 32);
    cd_size = rd64(e64 + 40), cd_off = rd64(e64 + 48);
    limit = off64;
    zip64_ = true;
  } else if (n == 0xFFFF || cd_size == max32 || cd_off == max32) {
    fail(p, ": end record holds zip64 markers (entries ", n, ", directory size ", cd_size, ", offset ", cd_off,
         ") but there is no zip64 locator before it");
  }
  if (disk != 0 || cd_disk != 0 || n_here != n)
    fail(p, ": multi-disk archive (disk ", disk, ", directory disk ", cd_disk, ", ", n_here, " of ", n,
         " entries here) is not supported");
  if (cd_off > limit || cd_size > limit - cd_off)
    fail(p, ": central directory [", cd_off, ", +", cd_size, ") runs past its end record at offset ", limit);
  if (n > max_entries) fail(p, ": archive declares ", n, " entries, more than the limit of ", max_entries);
  if (n * central_size > cd_size)
    fail(p, ": archive declares ", n, " entries, but its central directory of ", cd_size, " bytes holds at most ",
         cd_size / central_size);

  entries_.reserve(static_cast<std::size_t>(n));
  std::uint64_t pos = cd_off;
  const std::uint64_t cd_end = cd_off + cd_size;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (cd_end - pos < central_size) fail(p, ": central directory ends inside the header of entry ", i);
    const std::byte* h = b + pos;
    if (rd32(h) != sig_central) fail(p, ": central directory entry ", i, " at offset ", pos, " has a bad signature");
    const std::uint16_t flags = rd16(h + 8), method = rd16(h + 10), nlen = rd16(h + 28), xlen = rd16(h + 30),
                        clen = rd16(h + 32);
    const std::uint32_t crc = rd32(h + 16);
    std::uint64_t csize = rd32(h + 20), usize = rd32(h + 24), lho = rd32(h + 42), start_disk = rd16(h + 34);
    if (cd_end - pos - central_size < std::uint64_t(nlen) + xlen + clen)
      fail(p, ": central directory entry ", i, " (name, extra, comment of ", nlen, " + ", xlen, " + ", clen,
           " bytes) runs past the directory's end");
    std::string name(reinterpret_cast<const char*>(h + central_size), nlen);
    const std::string where = p + ": zip entry '" + name + "'";
    if (name.empty()) fail(p, ": central directory entry ", i, " has an empty name");
    if (index_.contains(name)) fail(where, ": appears more than once in the central directory");

    // zip64 extra: the 8-byte values of the fields that hold a marker, in this order.
    for (std::uint64_t x = 0; x < xlen;) {
      const std::byte* f = h + central_size + nlen + x;
      if (xlen - x < 4) fail(where, ": extra field runs past its ", xlen, " bytes");
      const std::uint16_t id = rd16(f), len = rd16(f + 2);
      if (xlen - x - 4 < len) fail(where, ": extra field 0x", std::hex, id, std::dec, " of ", len, " bytes overruns");
      if (id == 0x0001) {
        std::uint64_t used = 0;
        for (std::uint64_t* v : {&usize, &csize, &lho}) {
          if (*v != max32) continue;
          if (len - used < 8) fail(where, ": zip64 extra field of ", len, " bytes lacks a value its header marks");
          *v = rd64(f + 4 + used);
          used += 8;
        }
        if (start_disk == 0xFFFF && len - used >= 4) start_disk = rd32(f + 4 + used);
      }
      x += 4 + std::uint64_t(len);
    }
    if (usize == max32 || csize == max32 || lho == max32)
      fail(where, ": size or offset holds the zip64 marker 0xFFFFFFFF but there is no zip64 extra field for it");
    if (start_disk != 0) fail(where, ": starts on disk ", start_disk, "; multi-disk archives are not supported");
    if (flags & 0x41) fail(where, ": is encrypted (flags 0x", std::hex, flags, "), which is not supported");
    if (method != 0)
      fail(where, ": is compressed (", method_name(method), "); only stored (uncompressed) entries are supported, "
                  "as torch.save writes them");
    if (csize != usize)
      fail(where, ": stored entry has compressed size ", csize, " but size ", usize);

    // The local header repeats the name; its CRC and sizes may be 0 (data descriptor), so the directory's count.
    if (lho > cd_off || cd_off - lho < local_size)
      fail(where, ": local header at offset ", lho, " does not fit before the central directory at ", cd_off);
    const std::byte* l = b + lho;
    if (rd32(l) != sig_local) fail(where, ": no local header at offset ", lho, " (bad signature)");
    const std::uint64_t lnlen = rd16(l + 26), lxlen = rd16(l + 28);
    if (cd_off - lho - local_size < lnlen + lxlen)
      fail(where, ": local header at offset ", lho, " runs into the central directory");
    if (lnlen != nlen || std::memcmp(l + local_size, name.data(), nlen) != 0)
      fail(where, ": local header at offset ", lho, " names '",
           std::string_view(reinterpret_cast<const char*>(l + local_size), lnlen), "' instead");
    if (rd16(l + 8) != 0) fail(where, ": local header says compressed (", method_name(rd16(l + 8)), ")");
    if (rd16(l + 6) & 0x41) fail(where, ": local header says encrypted");
    const std::uint64_t data_off = lho + local_size + lnlen + lxlen;
    if (usize > cd_off - data_off)
      fail(where, ": its ", usize, " bytes at offset ", data_off, " run past the central directory at ", cd_off);

    index_.emplace(name, entries_.size());
    entries_.push_back({std::move(name), std::span<const std::byte>(b + data_off, static_cast<std::size_t>(usize)),
                        crc, lho, data_off});
    pos += central_size + nlen + xlen + clen;
  }
}

/// Writes a zip archive of stored entries, streaming each one to disk as it is added (a temp file beside the
/// target, renamed over it by commit(); an archive never committed leaves the target untouched).
///
/// Byte layout, as PyTorchStreamWriter (miniz with MZ_ZIP_FLAG_WRITE_ZIP64) writes it: local headers with
/// flags 0x0808 (data descriptor, UTF-8 name), time/date/CRC/sizes 0, and an extra field ending in a "FB"
/// block padded with 'Z' so that the data starts at a multiple of `alignment`; after the data a descriptor
/// "PK\7\8", CRC-32, sizes (an empty entry has flags 0x0800 and no descriptor). Entries whose size or offset
/// reaches 0xFFFFFFFF (every entry with force_zip64) get zip64 extra fields (the local one with compressed size 0,
/// as miniz) and 8-byte descriptor sizes. The zip64 end record and locator are always written; with force_zip64
/// the classic end record holds the 0xFFFF / 0xFFFFFFFF markers. Version fields are 0, as miniz writes them.
class zip_writer {
 public:
  struct options {
    bool force_zip64 = false;       // zip64 fields everywhere, whatever the sizes (to test readers)
    std::uint64_t alignment = 64;   // data of each entry starts at a multiple of this (torch: 64)
  };

  explicit zip_writer(std::filesystem::path path) : zip_writer(std::move(path), options{}) {}
  zip_writer(std::filesystem::path path, options opt) : out_(path), path_(std::move(path)), opt_(opt) {
    LORALAB_CHECK(opt_.alignment >= 1 && opt_.alignment <= 4096, path_.string(), ": zip alignment ", opt_.alignment,
                  " is outside [1, 4096]");
  }

  /// Appends one stored entry and returns its CRC-32. `name` must be new and at most 65535 bytes.
  std::uint32_t add(std::string_view name, std::span<const std::byte> data) {
    using namespace detail::zip;
    LORALAB_CHECK(!committed_, path_.string(), ": zip entry '", name, "' added after commit()");
    LORALAB_CHECK(!name.empty() && name.size() <= 0xFFFF, path_.string(), ": zip entry name of ", name.size(),
                  " bytes (must be 1..65535)");
    LORALAB_CHECK(names_.emplace(name).second, path_.string(), ": zip entry '", name, "' added twice");
    const std::uint64_t offset = pos_, size = data.size();
    const bool big_size = opt_.force_zip64 || size >= max32, big_offset = opt_.force_zip64 || offset >= max32;
    const bool z64 = big_size || big_offset;

    std::string extra;
    if (z64) {
      put16(extra, 0x0001);
      put16(extra, static_cast<std::uint16_t>((big_size ? 16 : 0) + (big_offset ? 8 : 0)));
      if (big_size) put64(extra, size), put64(extra, 0);  // the compressed size is not known yet, as in miniz
      if (big_offset) put64(extra, offset);
    }
    const std::uint64_t start = offset + local_size + name.size() + extra.size() + 4;  // after the "FB" header
    const auto pad = static_cast<std::uint16_t>((opt_.alignment - start % opt_.alignment) % opt_.alignment);
    extra += "FB";
    put16(extra, pad);
    extra.append(pad, 'Z');
    LORALAB_CHECK(extra.size() <= 0xFFFF, path_.string(), ": zip entry '", name, "': extra field too long");

    std::string h;
    put32(h, sig_local);
    put16(h, 0);  // version needed: miniz writes 0 for stored entries, zip64 or not
    const std::uint16_t flags = size == 0 ? 0x0800 : 0x0808;  // name is UTF-8; data descriptor follows the data
    put16(h, flags);
    for (int k = 0; k < 3; ++k) put16(h, 0);  // method stored, time, date
    for (int k = 0; k < 3; ++k) put32(h, 0);  // CRC and sizes: in the descriptor
    put16(h, static_cast<std::uint16_t>(name.size()));
    put16(h, static_cast<std::uint16_t>(extra.size()));
    h.append(name);
    h += extra;
    out_.write(h);
    const std::uint32_t crc = crc32(data);
    out_.write(data);
    std::string d;
    if (size != 0) {
      put32(d, sig_descriptor);
      put32(d, crc);
      if (z64) put64(d, size), put64(d, size);
      else put32(d, static_cast<std::uint32_t>(size)), put32(d, static_cast<std::uint32_t>(size));
      out_.write(d);
    }
    pos_ += h.size() + size + d.size();
    records_.push_back({std::string(name), offset, size, crc, flags, big_size, big_offset});
    return crc;
  }
  std::uint32_t add(std::string_view name, std::string_view text) {
    return add(name, std::as_bytes(std::span(text.data(), text.size())));
  }

  /// Bytes written so far (the offset of the next local header).
  std::uint64_t size() const { return pos_; }

  /// Writes the central directory and end records, flushes, and renames the file into place.
  void commit() {
    using namespace detail::zip;
    LORALAB_CHECK(!committed_, path_.string(), ": zip_writer::commit() called twice");
    const std::uint64_t cd_off = pos_, n = records_.size();
    std::string buf;
    for (const record& r : records_) {
      std::string extra;
      if (r.big_size || r.big_offset) {
        put16(extra, 0x0001);
        put16(extra, static_cast<std::uint16_t>((r.big_size ? 16 : 0) + (r.big_offset ? 8 : 0)));
        if (r.big_size) put64(extra, r.size), put64(extra, r.size);
        if (r.big_offset) put64(extra, r.offset);
      }
      const auto size32 = static_cast<std::uint32_t>(r.big_size ? max32 : r.size);
      put32(buf, sig_central);
      put16(buf, 0);                                      // made by
      put16(buf, 0);                                      // version needed
      put16(buf, r.flags);
      for (int k = 0; k < 3; ++k) put16(buf, 0);          // method, time, date
      put32(buf, r.crc);
      put32(buf, size32);
      put32(buf, size32);
      put16(buf, static_cast<std::uint16_t>(r.name.size()));
      put16(buf, static_cast<std::uint16_t>(extra.size()));
      for (int k = 0; k < 3; ++k) put16(buf, 0);          // comment length, disk, internal attributes
      put32(buf, 0);                                      // external attributes
      put32(buf, static_cast<std::uint32_t>(r.big_offset ? max32 : r.offset));
      buf += r.name;
      buf += extra;
      if (buf.size() >= (1u << 20)) flush(buf);
    }
    flush(buf);
    const std::uint64_t cd_size = pos_ - cd_off, end64_off = pos_;
    put32(buf, sig_end64);
    put64(buf, end64_size - 12);
    put16(buf, 0x031E);  // made by (UNIX, 3.0), as miniz
    put16(buf, 45);      // version needed: zip64
    put32(buf, 0);
    put32(buf, 0);
    put64(buf, n);
    put64(buf, n);
    put64(buf, cd_size);
    put64(buf, cd_off);
    put32(buf, sig_locator64);
    put32(buf, 0);
    put64(buf, end64_off);
    put32(buf, 1);
    const bool f = opt_.force_zip64;
    put32(buf, sig_end);
    put32(buf, 0);  // disk numbers
    for (int k = 0; k < 2; ++k) put16(buf, static_cast<std::uint16_t>(f || n >= 0xFFFF ? 0xFFFF : n));
    put32(buf, static_cast<std::uint32_t>(f || cd_size >= max32 ? max32 : cd_size));
    put32(buf, static_cast<std::uint32_t>(f || cd_off >= max32 ? max32 : cd_off));
    put16(buf, 0);  // comment length
    flush(buf);
    out_.commit();
    committed_ = true;
  }

 private:
  struct record {
    std::string name;
    std::uint64_t offset, size;
    std::uint32_t crc;
    std::uint16_t flags;
    bool big_size, big_offset;
  };
  void flush(std::string& buf) {
    out_.write(buf);
    pos_ += buf.size();
    buf.clear();
  }

  atomic_file out_;
  std::filesystem::path path_;
  options opt_;
  std::uint64_t pos_ = 0;
  bool committed_ = false;
  std::vector<record> records_;
  std::set<std::string, std::less<>> names_;
};

}  // namespace loralab::io
