/* treeread: the "small-file tree" workload of contrib/bench/run.sh.
 *
 * Walks a directory tree the way a build or a `grep -r` does (readdir, then
 * open, read to the end and close each regular file, one at a time) and
 * prints one JSON object: files, bytes and elapsed seconds. fio's opendir=
 * mode opens its files up front and keeps them open, which would leave out
 * the per-file lookup/open/close cost that dominates small-file trees, so the
 * bench uses this instead.
 *
 *   treeread DIR
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned long long files_read;
static unsigned long long bytes_read;
static char buf[1 << 17];

static int visit(const char* path, const struct stat* st, int type, struct FTW* ftw) {
    (void)st;
    (void)ftw;
    if (type != FTW_F)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "treeread: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "treeread: read %s: %s\n", path, strerror(errno));
            close(fd);
            return 1;
        }
        if (n == 0)
            break;
        bytes_read += (unsigned long long)n;
    }
    close(fd);
    files_read++;
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: treeread DIR\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (nftw(argv[1], visit, 64, FTW_PHYS) != 0) {
        fprintf(stderr, "treeread: walking %s failed\n", argv[1]);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("{\"files\": %llu, \"bytes\": %llu, \"seconds\": %.6f}\n", files_read, bytes_read,
           secs);
    return 0;
}
