#include "overcache_config.h"

#include <cstdio>

int main(int argc, char** argv) {
    (void)argc;
    (void)argv;
    std::printf("overcache %s\n", OVERCACHE_VERSION);
    return 0;
}
