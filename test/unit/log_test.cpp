// Logging: warnings and errors of one kind are rate-limited (a backing that
// fails every request must not flood the journal), with a count of what was
// left out; other kinds, and info lines, are not held back by them.
#include "util/log.hpp"

#include <chrono>
#include <cstdio>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <string>
#include <thread>
#include <unistd.h>

namespace log = overcache::log;

namespace {

// Runs `fn` with stderr going to a temporary file; returns what it wrote.
template <typename Fn> std::string capture_stderr(Fn fn) {
    char path[] = "/tmp/overcache-log-test.XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::unlink(path);
    std::fflush(stderr);
    const int saved = ::dup(STDERR_FILENO);
    ::dup2(fd, STDERR_FILENO);
    fn();
    std::fflush(stderr);
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
    std::string out;
    char buf[4096];
    ssize_t n = 0;
    ::lseek(fd, 0, SEEK_SET);
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        out.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    return out;
}

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (std::size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1))
        ++n;
    return n;
}

} // namespace

TEST_SUITE("unit") {

    TEST_CASE("repeated warnings and errors are rate-limited, with a count of the rest") {
        log::set_rate_limit(3, std::chrono::seconds(1));
        const std::string out = capture_stderr([] {
            for (int i = 0; i < 20; ++i)
                log::warn("cache: fill failed: /data/file", i, ": Input/output error");
            // Another kind, and info lines, are not held back.
            log::error("writeback: cannot open /x: Permission denied");
            for (int i = 0; i < 5; ++i)
                log::info("mounted something ", i);
            // A new window: the next one comes with the count.
            std::this_thread::sleep_for(std::chrono::milliseconds(1100));
            log::warn("cache: fill failed: /data/file99: Input/output error");
        });
        INFO(out);
        CHECK(count(out, "cache: fill failed:") == 4);
        CHECK(count(out, "/data/file0:") == 1);
        CHECK(count(out, "/data/file2:") == 1);
        CHECK(count(out, "/data/file3:") == 0);
        CHECK(count(out, "/data/file99:") == 1);
        CHECK(count(out, "17 more messages like the next one were left out (at most 3 of a "
                         "kind every 1 s)") == 1);
        // The count comes right before the line it is about.
        CHECK(out.find("left out") < out.find("/data/file99"));
        CHECK(count(out, "writeback: cannot open /x") == 1);
        CHECK(count(out, "mounted something") == 5);
        log::set_rate_limit(10, std::chrono::seconds(60));
    }
}
