#include "nn/name_pattern.h"

#include <c10/util/Exception.h>

namespace torchqat::nn::detail {

std::string glob_to_regex(const std::string& glob) {
  std::string re;
  const size_t n = glob.size();
  for (size_t i = 0; i < n; ++i) {
    const char c = glob[i];
    if (c == '*') {
      re += ".*";
    } else if (c == '?') {
      re += '.';
    } else if (c == '[') {
      // A set runs to the next ']' (a ']' right after '[' or '[!' belongs to the set); without
      // one, '[' is literal, as in fnmatch.
      size_t j = i + 1;
      if (j < n && glob[j] == '!') ++j;
      if (j < n && glob[j] == ']') ++j;
      while (j < n && glob[j] != ']') ++j;
      if (j >= n) {
        re += "\\[";
        continue;
      }
      std::string set = glob.substr(i + 1, j - i - 1);
      std::string body = "[";
      size_t k = 0;
      if (!set.empty() && set[0] == '!') {
        body += '^';
        k = 1;
      }
      for (; k < set.size(); ++k) {
        // Inside a class only these are special to ECMAScript ('-' keeps its range meaning).
        if (set[k] == '\\' || set[k] == '^' || set[k] == '[' || set[k] == ']') body += '\\';
        body += set[k];
      }
      re += body + "]";
      i = j;
    } else if (std::string("\\^$.|+(){}").find(c) != std::string::npos) {
      re += '\\';
      re += c;
    } else {
      re += c;
    }
  }
  return re;
}

NamePattern::NamePattern(std::string glob) : glob_(std::move(glob)) {
  try {
    regex_ = std::regex(glob_to_regex(glob_));
  } catch (const std::regex_error& e) {  // e.g. a reversed range "[z-a]"
    TORCH_CHECK_VALUE(false, "module name pattern '", glob_, "' is not a valid glob: ", e.what());
  }
}

bool NamePattern::matches(const std::string& module_name) const {
  for (size_t dot = module_name.find('.'); dot != std::string::npos; dot = module_name.find('.', dot + 1)) {
    if (std::regex_match(module_name.substr(0, dot), regex_)) return true;
  }
  return std::regex_match(module_name, regex_);
}

}  // namespace torchqat::nn::detail
