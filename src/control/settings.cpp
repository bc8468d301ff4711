// DOC: changing a mounted cache's settings. A change is checked whole on a
// copy (the value, then the checks between options), stored, and only then
// applied and kept: a bad value or a failed save changes nothing, and what
// the mount runs with is always what the next mount will start from. One
// lock orders changes, so two `set`s of related settings (gc_low_percent
// and gc_high_percent) are checked against each other's result, never
// against a stale copy.
#include "control/settings.hpp"

#include <algorithm>

namespace overcache::control {
namespace {

std::string canonical(std::string_view name) {
    std::string n(name);
    std::replace(n.begin(), n.end(), '-', '_');
    return n;
}

Result<void> check_live(const std::string& name) {
    if (config::find_option(name) == nullptr)
        return fail(Errc::BadValue, "unknown setting '" + name + "' (see overcache get)");
    if (!config::is_live(name))
        return fail(Errc::BadValue,
                    "setting " + name + " is fixed at mount (give it with -o " + name + "=...)");
    return {};
}

} // namespace

Result<SetOutcome> Settings::set(std::string_view raw_name, const std::string& value,
                                 SettingsSink& sink) {
    const std::string name = canonical(raw_name);
    if (auto r = check_live(name); !r)
        return fail(r.error());
    std::lock_guard lk(mu_);
    config::Config next = cfg_;
    if (auto r = config::set_option(next, name, value); !r)
        return fail(r.error());
    SetOutcome out;
    out.name = name;
    out.value = config::option_value(next, name).value_or(value);
    out.left_writeback = cfg_.cache_mode == config::CacheMode::writeback &&
                         next.cache_mode != config::CacheMode::writeback;
    if (auto r = sink.check(next); !r)
        return fail(r.error());
    if (auto r = sink.save(name, out.value); !r)
        return fail(r.error().code, "setting " + name + " not changed: storing it failed: " +
                                        to_string(r.error()));
    sink.apply(next);
    cfg_ = std::move(next);
    return out;
}

std::vector<std::string>
Settings::adopt_saved(const std::vector<std::pair<std::string, std::string>>& saved,
                      const std::vector<std::string>& given) {
    std::vector<std::string> warnings;
    std::lock_guard lk(mu_);
    for (const auto& [name, value] : saved) {
        if (std::find(given.begin(), given.end(), name) != given.end())
            continue; // the mount's own option wins
        if (name == "cache_size")
            continue; // the superblock is its record, never the stored settings
        if (auto r = check_live(name); !r) {
            warnings.push_back("stored setting " + name + "=" + value + " ignored: " +
                               r.error().message);
            continue;
        }
        if (auto r = config::set_option(cfg_, name, value); !r)
            warnings.push_back("stored setting " + name + "=" + value +
                               " ignored: " + r.error().message);
    }
    return warnings;
}

void Settings::record(const std::string& name, const std::string& value) {
    std::lock_guard lk(mu_);
    (void)config::set_option(cfg_, name, value);
}

config::Config Settings::current() const {
    std::lock_guard lk(mu_);
    return cfg_;
}

Result<std::string> Settings::get(std::string_view raw_name) const {
    const std::string name = canonical(raw_name);
    if (auto r = check_live(name); !r)
        return fail(r.error());
    std::lock_guard lk(mu_);
    return config::option_value(cfg_, name).value_or("");
}

void Settings::add_lines(StatLines& out) const {
    std::lock_guard lk(mu_);
    // cache_mode leads, as it always has in the control file.
    out.emplace_back("cache_mode", config::to_string(cfg_.cache_mode));
    for (const auto& o : config::option_table())
        if (config::is_live(o.name) && std::string_view(o.name) != "cache_mode")
            out.emplace_back(o.name, config::option_value(cfg_, o.name).value_or(""));
}

} // namespace overcache::control
