#include "nn/checkpoint_bounds.h"

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace torchqat::detail {
namespace {

[[noreturn]] void corrupt(const std::string& source, const std::string& why) {
  C10_THROW_ERROR(Error, c10::str("torchqat::load_checkpoint: cannot read ", source,
                                  ": the file is truncated or corrupted (", why, ")"));
}

struct Bytes {
  const unsigned char* p;
  uint64_t n;
  bool has(uint64_t off, uint64_t len) const { return off <= n && len <= n - off; }
  // k little-endian bytes at off; the caller has checked has(off, k).
  uint64_t le(uint64_t off, int k) const {
    uint64_t v = 0;
    for (int i = k - 1; i >= 0; --i) v = (v << 8) | p[off + static_cast<uint64_t>(i)];
    return v;
  }
};

struct Entry {
  std::string name;
  uint64_t method = 0, comp = 0, uncomp = 0, local = 0;
};

constexpr uint64_t kEocdSig = 0x06054b50, kZip64LocatorSig = 0x07064b50, kZip64EocdSig = 0x06064b50;
constexpr uint64_t kCentralSig = 0x02014b50, kLocalSig = 0x04034b50, kMax32 = 0xFFFFFFFF;

// The zip64 extra field (id 1) holds, in this order, the 8-byte values of the fields that read 0xFFFFFFFF.
void apply_zip64(const Bytes& b, uint64_t pos, uint64_t end, Entry& e, const std::string& source) {
  while (pos + 4 <= end) {
    const uint64_t id = b.le(pos, 2), size = b.le(pos + 2, 2);
    pos += 4;
    if (size > end - pos) corrupt(source, "a zip extra field runs past its entry");
    if (id == 1) {
      uint64_t q = pos;
      for (uint64_t* field : {&e.uncomp, &e.comp, &e.local}) {
        if (*field != kMax32) continue;
        if (q + 8 > pos + size) corrupt(source, "a zip64 field is missing");
        *field = b.le(q, 8);
        q += 8;
      }
    }
    pos += size;
  }
}

std::vector<Entry> central_directory(const Bytes& b, const std::string& source) {
  if (b.n < 22) corrupt(source, "no zip directory");
  // The end-of-directory record: the last signature within the final 22 + 65535 (comment) bytes.
  const uint64_t lowest = b.n > 22 + 65535 ? b.n - 22 - 65535 : 0;
  uint64_t eocd = b.n;
  for (uint64_t i = b.n - 22 + 1; i-- > lowest;) {
    if (b.le(i, 4) == kEocdSig) {
      eocd = i;
      break;
    }
  }
  if (eocd == b.n) corrupt(source, "no zip directory");
  uint64_t count = b.le(eocd + 10, 2), cd_size = b.le(eocd + 12, 4), cd_off = b.le(eocd + 16, 4);
  if (count == 0xFFFF || cd_size == kMax32 || cd_off == kMax32) {
    if (eocd < 20 || b.le(eocd - 20, 4) != kZip64LocatorSig) corrupt(source, "no zip64 directory locator");
    const uint64_t rec = b.le(eocd - 20 + 8, 8);
    if (!b.has(rec, 56) || b.le(rec, 4) != kZip64EocdSig) corrupt(source, "the zip64 directory record is out of the file");
    count = b.le(rec + 32, 8);
    cd_size = b.le(rec + 40, 8);
    cd_off = b.le(rec + 48, 8);
  }
  if (!b.has(cd_off, cd_size)) corrupt(source, "the zip directory is out of the file");
  if (count > cd_size / 46) corrupt(source, "the zip directory states more entries than it holds");
  std::vector<Entry> entries;
  uint64_t pos = cd_off;
  const uint64_t end = cd_off + cd_size;
  for (uint64_t k = 0; k < count; ++k) {
    if (end - pos < 46 || b.le(pos, 4) != kCentralSig) corrupt(source, "a zip directory entry is malformed");
    Entry e;
    e.method = b.le(pos + 10, 2);
    e.comp = b.le(pos + 20, 4);
    e.uncomp = b.le(pos + 24, 4);
    e.local = b.le(pos + 42, 4);
    const uint64_t name_len = b.le(pos + 28, 2), extra_len = b.le(pos + 30, 2), comment_len = b.le(pos + 32, 2);
    if (end - pos - 46 < name_len + extra_len + comment_len) corrupt(source, "a zip directory entry runs past the directory");
    e.name.assign(reinterpret_cast<const char*>(b.p + pos + 46), name_len);
    apply_zip64(b, pos + 46 + name_len, pos + 46 + name_len + extra_len, e, source);
    entries.push_back(std::move(e));
    pos += 46 + name_len + extra_len + comment_len;
  }
  return entries;
}

// Where the entry's data starts, after checking that it lies in the file with a possible size.
uint64_t entry_data(const Bytes& b, const Entry& e, const std::string& source) {
  if (!b.has(e.local, 30) || b.le(e.local, 4) != kLocalSig) corrupt(source, "zip entry '" + e.name + "' has no header");
  const uint64_t start = e.local + 30 + b.le(e.local + 26, 2) + b.le(e.local + 28, 2);
  if (!b.has(start, e.comp)) corrupt(source, "zip entry '" + e.name + "' ends past the file");
  // Stored entries are their own size; deflate expands at most 1032:1.
  const bool size_ok = e.method == 0 ? e.uncomp == e.comp : (e.method == 8 && e.uncomp / 1032 <= e.comp);
  if (!size_ok) corrupt(source, "zip entry '" + e.name + "' states an impossible size");
  return start;
}

// Walks a pickle's opcodes (protocols 0-5): every stated length fits in what is left, and every
// memo index read was defined and every one written is at most the next.
void check_pickle(const unsigned char* p, uint64_t n, const std::string& name, const std::string& source) {
  uint64_t pos = 0, memo = 0;
  auto fail = [&](const char* why) { corrupt(source, c10::str("pickle '", name, "' ", why, " at byte ", pos)); };
  auto need = [&](uint64_t k) {
    if (k > n - pos) fail("runs past its end");
  };
  auto le = [&](int k) {
    need(static_cast<uint64_t>(k));
    uint64_t v = 0;
    for (int i = k - 1; i >= 0; --i) v = (v << 8) | p[pos + static_cast<uint64_t>(i)];
    pos += static_cast<uint64_t>(k);
    return v;
  };
  auto skip = [&](uint64_t len) {
    need(len);
    pos += len;
  };
  auto line = [&]() {
    const void* nl = std::memchr(p + pos, '\n', n - pos);
    if (nl == nullptr) fail("has an unterminated line");
    const auto end = static_cast<uint64_t>(static_cast<const unsigned char*>(nl) - p);
    std::string s(reinterpret_cast<const char*>(p + pos), end - pos);
    pos = end + 1;
    return s;
  };
  auto index = [&](const std::string& s) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0') fail("has a malformed memo index");
    return static_cast<uint64_t>(v);
  };
  auto put = [&](uint64_t id) {
    if (id > memo) fail("writes a memo index beyond the next");
    memo = std::max(memo, id + 1);
  };
  auto get = [&](uint64_t id) {
    if (id >= memo) fail("reads an undefined memo index");
  };
  while (pos < n) {
    switch (p[pos++]) {
      case '.':  // STOP
        return;
      case '(': case '0': case '1': case '2': case 'N': case 'R': case 'a': case 'b': case 'd': case '}':
      case 'e': case 'l': case ']': case 'o': case 's': case 't': case ')': case 'u': case 'Q': case 0x81:
      case 0x85: case 0x86: case 0x87: case 0x88: case 0x89: case 0x8f: case 0x90: case 0x91: case 0x92:
      case 0x93: case 0x97: case 0x98:
        break;
      case 0x94: ++memo; break;  // MEMOIZE
      case 'K': case 0x80: case 0x82: skip(1); break;
      case 'M': case 0x83: skip(2); break;
      case 'J': case 0x84: skip(4); break;
      case 'G': case 0x95: skip(8); break;
      case 'h': get(le(1)); break;
      case 'j': get(le(4)); break;
      case 'q': put(le(1)); break;
      case 'r': put(le(4)); break;
      case 'U': case 0x8c: case 'C': case 0x8a: skip(le(1)); break;
      case 'X': case 'T': case 'B': case 0x8b: skip(le(4)); break;
      case 0x8d: case 0x8e: case 0x96: skip(le(8)); break;
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': line(); break;
      case 'p': put(index(line())); break;
      case 'g': get(index(line())); break;
      case 'c': case 'i': line(); line(); break;
      default: --pos; fail("has an unknown opcode");
    }
  }
  fail("ends without STOP");
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t k = std::strlen(suffix);
  return s.size() >= k && s.compare(s.size() - k, k, suffix) == 0;
}

}  // namespace

void check_checkpoint_bounds(const std::vector<char>& bytes, const std::string& source) {
  const Bytes b{reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()};
  for (const Entry& e : central_directory(b, source)) {
    const uint64_t start = entry_data(b, e, source);
    if (!ends_with(e.name, "pkl")) continue;  // data.pkl, constants.pkl, *.debug_pkl
    if (e.method != 0) corrupt(source, "pickle '" + e.name + "' is compressed, which torch never writes");
    check_pickle(b.p + start, e.comp, e.name, source);
  }
}

}  // namespace torchqat::detail
