#include "torchqat/calib/method.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <sstream>

namespace torchqat {
namespace calib {

const std::vector<std::string>& calibrate_methods(bool allow_auto) {
  static const std::vector<std::string> with_auto = {"max", "entropy", "percentile", "mse", "auto"};
  static const std::vector<std::string> without_auto = {"max", "entropy", "percentile", "mse"};
  return allow_auto ? with_auto : without_auto;
}

void check_calibrate_method(const std::string& method, const std::string& what, bool allow_auto) {
  const auto& methods = calibrate_methods(allow_auto);
  if (std::find(methods.begin(), methods.end(), method) != methods.end()) return;
  std::ostringstream list;
  for (size_t i = 0; i < methods.size(); ++i) list << (i ? ", " : "") << "'" << methods[i] << "'";
  TORCH_CHECK_VALUE(false, what, ": method must be one of ", list.str(), ", got '", method, "'");
}

bool uses_histogram(const std::string& method, bool per_channel) { return method != "max" && !per_channel; }

std::string histogram_search(const std::string& method) { return method == "max" ? "percentile" : method; }

}  // namespace calib
}  // namespace torchqat
