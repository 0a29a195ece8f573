/* Fuzz driver for gcc builds: runs LLVMFuzzerTestOneInput over every file of a seed corpus, then
 * over bounded random mutations of them (bit flips, truncation, splices, random bytes), so fuzz
 * targets run in `make test` without clang. With clang, build the same target with
 * -fsanitize=fuzzer instead of this file for coverage-guided fuzzing.
 * Usage: fuzz_x [-runs=N] [-seed=S] [CORPUS_DIR...] */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEDS      256
#define FUZZ_MAX_INPUT 65536

static uint8_t *seeds[MAX_SEEDS];
static size_t seed_len[MAX_SEEDS];
static int nseeds;

static void load_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && nseeds < MAX_SEEDS) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        uint8_t *buf = malloc(FUZZ_MAX_INPUT);
        size_t n = fread(buf, 1, FUZZ_MAX_INPUT, f);
        fclose(f);
        seeds[nseeds] = buf;
        seed_len[nseeds++] = n;
    }
    closedir(d);
}

int main(int argc, char **argv) {
    long runs = 10000;
    unsigned seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "-runs=", 6))
            runs = atol(argv[i] + 6);
        else if (!strncmp(argv[i], "-seed=", 6))
            seed = (unsigned)atol(argv[i] + 6);
        else
            load_dir(argv[i]);
    }
    srand(seed);
    for (int i = 0; i < nseeds; i++)
        LLVMFuzzerTestOneInput(seeds[i], seed_len[i]);
    uint8_t *buf = malloc(FUZZ_MAX_INPUT);
    for (long r = 0; r < runs; r++) {
        size_t n;
        if (nseeds && rand() % 8) {
            int s = rand() % nseeds;
            n = seed_len[s];
            memcpy(buf, seeds[s], n);
            int edits = 1 + rand() % 8;
            for (int e = 0; e < edits && n; e++) {
                switch (rand() % 5) {
                case 0:
                    buf[rand() % n] ^= (uint8_t)(1u << (rand() % 8));
                    break;
                case 1:
                    buf[rand() % n] = (uint8_t)rand();
                    break;
                case 2:
                    n = (size_t)rand() % (n + 1);
                    break;
                case 3: { /* splice in another seed's tail */
                    int o = rand() % nseeds;
                    size_t at = (size_t)rand() % (n + 1),
                           take = seed_len[o] ? (size_t)rand() % seed_len[o] : 0;
                    if (at + take > FUZZ_MAX_INPUT)
                        take = FUZZ_MAX_INPUT - at;
                    memcpy(buf + at, seeds[o] + seed_len[o] - take, take);
                    n = at + take;
                    break;
                }
                default: {
                    size_t i = (size_t)rand() % n;
                    buf[i] = (uint8_t)(buf[i] + 1);
                }
                }
            }
        } else {
            n = (size_t)rand() % 512;
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)rand();
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("fuzz: %d seeds, %ld mutated runs, no crash\n", nseeds, runs);
    free(buf);
    for (int i = 0; i < nseeds; i++)
        free(seeds[i]);
    return 0;
}
