/*
 * Drives the DFA training step that `pocketnn export-c --with-training --name base`
 * generates over an epoch's batches, for benchmarks/bench.py (the native C baseline).
 *
 *   c_baseline IMAGES LABELS ORDER
 *     IMAGES: N * BASE_N_INPUTS bytes; LABELS: N bytes; ORDER: int32 sample indices.
 *   stdin, one command a line:
 *     train START COUNT LR_INV   trains samples ORDER[START .. START+COUNT) in batches of
 *                                BASE_MAX_BATCH; prints "CPU_NS WALL_NS CORRECT"
 *     dump PATH                  writes every parameter array's bytes to PATH
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime in -std=c99 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base.h"

static void *slurp(const char *path, long *size)
{
    FILE *f = fopen(path, "rb");
    void *data;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc(*size > 0 ? (size_t)*size : 1);
    if (data && fread(data, 1, (size_t)*size, f) != (size_t)*size) {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

static long long ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

#define DUMP_PARAM(array) fwrite(array, sizeof(array), 1, out);

int main(int argc, char **argv)
{
    static uint8_t batch[BASE_MAX_BATCH * BASE_N_INPUTS], batch_labels[BASE_MAX_BATCH];
    long n_images, n_labels, n_order;
    const uint8_t *images, *labels;
    const int32_t *order;
    char line[4096];
    if (argc != 4) {
        fprintf(stderr, "usage: %s IMAGES LABELS ORDER\n", argv[0]);
        return 2;
    }
    images = slurp(argv[1], &n_images);
    labels = slurp(argv[2], &n_labels);
    order = slurp(argv[3], &n_order);
    if (!images || !labels || !order) {
        fprintf(stderr, "c_baseline: cannot read the data files\n");
        return 1;
    }
    n_order /= (long)sizeof(int32_t);
    while (fgets(line, sizeof line, stdin)) {
        long start, count, lr_inv;
        char path[4000];
        if (sscanf(line, "train %ld %ld %ld", &start, &count, &lr_inv) == 3) {
            const long long cpu = ns(CLOCK_PROCESS_CPUTIME_ID), wall = ns(CLOCK_MONOTONIC);
            long correct = 0;
            if (start < 0 || count < 0 || start + count > n_order) {
                fprintf(stderr, "c_baseline: samples out of range\n");
                return 1;
            }
            for (long s = start; s < start + count; s += BASE_MAX_BATCH) {
                const int n = (int)(start + count - s < BASE_MAX_BATCH ? start + count - s
                                                                       : BASE_MAX_BATCH);
                for (int i = 0; i < n; i++) {
                    const long k = order[s + i];
                    memcpy(batch + (long)i * BASE_N_INPUTS, images + k * BASE_N_INPUTS,
                           BASE_N_INPUTS);
                    batch_labels[i] = labels[k];
                }
                const int r = base_train_step(batch, batch_labels, n, (int32_t)lr_inv);
                if (r < 0) {
                    fprintf(stderr, "c_baseline: base_train_step returned %d\n", r);
                    return 1;
                }
                correct += r;
            }
            printf("%lld %lld %ld\n", ns(CLOCK_PROCESS_CPUTIME_ID) - cpu, ns(CLOCK_MONOTONIC) - wall,
                   correct);
            fflush(stdout);
        } else if (sscanf(line, "dump %3999s", path) == 1) {
            FILE *out = fopen(path, "wb");
            if (!out) return 1;
            BASE_FOR_EACH_PARAM(DUMP_PARAM)
            fclose(out);
            printf("ok\n");
            fflush(stdout);
        }
    }
    return 0;
}
