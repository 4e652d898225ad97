#pragma once
// Internal: the module-name patterns of ReplaceOptions (include / exclude / rules).
#include <regex>
#include <string>

namespace torchqat::nn::detail {

// A glob with Python fnmatch.fnmatchcase semantics (`*`, `?`, `[seq]`, `[!seq]`; `*` crosses
// dots), so a pattern means the same here as in the Python package. It matches a dotted module
// name when it matches the name or one of its ancestors' ("a" and "a.b" for "a.b.c"): a pattern
// naming a block selects everything in it.
class NamePattern {
 public:
  explicit NamePattern(std::string glob);
  bool matches(const std::string& module_name) const;
  const std::string& glob() const { return glob_; }

 private:
  std::string glob_;
  std::regex regex_;
};

// fnmatch.translate: the glob as an ECMAScript regex matched against the whole name.
std::string glob_to_regex(const std::string& glob);

}  // namespace torchqat::nn::detail
