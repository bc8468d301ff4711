// The one registry of a mounted overcache's settings (DESIGN.md, control
// surface): the values -o gave, those stored in the cache by earlier `set`s,
// and the changes made since. `set KEY VALUE` on the control file, `overcache
// set` and the control file's xattrs all come here; the option table
// (config/config.hpp) parses and checks every value, so a setting means the
// same whichever way it is given. Only options a mounted cache can take
// (config::is_live) change here; the others are fixed at mount.
#pragma once

#include "control/stats_text.hpp"
#include "overcache/config/config.hpp"
#include "overcache/util/result.hpp"

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace overcache::control {

// What a change acts on: the mount's data path and adapter. Called with
// the registry's lock held (changes are applied in the order they are
// made); must not call back into the registry.
class SettingsSink {
public:
    virtual ~SettingsSink() = default;
    // Whether the mount can take `next` at all (a mount without a cache
    // cannot start caching): an error says why, and nothing changes.
    virtual Result<void> check(const config::Config& next) = 0;
    // Takes the new values at once.
    virtual void apply(const config::Config& c) = 0;
    // Keeps `name`'s new value for the next mount (the cache's index).
    virtual Result<void> save(const std::string& name, const std::string& value) = 0;
};

struct SetOutcome {
    std::string name;  // as in the option table ('-' taken for '_')
    std::string value; // as the table shows it: "8M", "writeback", "1"
    // The cache mode went from writeback to another: the caller flushes,
    // as bcache does on such a switch.
    bool left_writeback = false;
};

class Settings {
public:
    explicit Settings(config::Config initial) : cfg_(std::move(initial)) {}

    // Parses and checks `value` for `name`, stores it (sink.save), then
    // applies it (sink.apply). A name that is unknown or fixed at mount, a
    // bad value, or a failed save: an error naming it, and nothing changed
    // (not the registry, not the sink, not the index).
    Result<SetOutcome> set(std::string_view name, const std::string& value, SettingsSink& sink);

    // Settings stored in the cache by earlier runs, applied under the
    // options given at mount (`given` wins): returns a warning per stored
    // value that is not taken (unknown to this version, fixed at mount, or
    // no longer valid), each naming it.
    std::vector<std::string> adopt_saved(const std::vector<std::pair<std::string, std::string>>& saved,
                                         const std::vector<std::string>& given);

    // Takes `value` for `name` as the mount's value without a sink (the
    // change was made elsewhere: a live resize sets cache_size itself).
    // A value the table refuses changes nothing.
    void record(const std::string& name, const std::string& value);

    config::Config current() const;
    // The value of one setting as the table shows it; an error for a name
    // that is not a live setting.
    Result<std::string> get(std::string_view name) const;
    // One line a live setting: cache_mode, then the option table's order.
    void add_lines(StatLines& out) const;

private:
    mutable std::mutex mu_;
    config::Config cfg_;
};

} // namespace overcache::control
