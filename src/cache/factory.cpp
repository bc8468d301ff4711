// DOC: chooses the DataPath for a mount. Until the caching path lands
// (issue #3) every mode is served by the passthrough.
#include "overcache/cache/factory.hpp"

namespace overcache::cache {

Result<std::unique_ptr<DataPath>> open_data_path(const config::Config& /*cfg*/,
                                                 const MountPaths& /*paths*/) {
    return make_passthrough();
}

} // namespace overcache::cache
