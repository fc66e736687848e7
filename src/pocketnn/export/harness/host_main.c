/*
 * Host test driver for generated models (binary protocol, native little-endian int32).
 *
 *   host predict < images   stdin: N_INPUTS values (NAME_input_t) per input, until end of file.
 *                           stdout per input: N_CLASSES int32 scores, then the int32 result
 *                           of NAME_predict (the class or an error code).
 *   host train < steps      stdin per step: int32 n, int32 lr_inv, n * N_INPUTS input values
 *                           (NAME_input_t), n label bytes. stdout: one int32 result per step, then every
 *                           parameter array's raw bytes (NAME_FOR_EACH_PARAM order); with
 *                           -DPNN_WITH_STATE, then every state array's (NAME_FOR_EACH_STATE)
 *                           and the int64 step count.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "pnn_api.h"

static int predict_all(void)
{
    pnn_input_t input[PNN_N_INPUTS];
    int32_t out[PNN_N_CLASSES + 1];
    while (fread(input, 1, sizeof input, stdin) == sizeof input) {
        out[PNN_N_CLASSES] = pnn_predict(input, out);
        fwrite(out, sizeof out, 1, stdout);
    }
    return 0;
}

#ifdef PNN_WITH_TRAINING
#define BATCH_CAPACITY 1024
static pnn_input_t images[BATCH_CAPACITY][PNN_N_INPUTS];
static uint8_t labels[BATCH_CAPACITY];

#define DUMP_PARAM(array) fwrite(array, sizeof(array), 1, stdout);

static int train_all(void)
{
    int32_t header[2];
    while (fread(header, sizeof header, 1, stdin) == 1) {
        const int32_t n = header[0];
        int32_t result;
        if (n < 0 || n > BATCH_CAPACITY) {
            fprintf(stderr, "host: batch of %ld is beyond the harness capacity\n", (long)n);
            return 1;
        }
        if (fread(images, sizeof images[0], (size_t)n, stdin) != (size_t)n
            || fread(labels, 1, (size_t)n, stdin) != (size_t)n) {
            fprintf(stderr, "host: truncated training step\n");
            return 1;
        }
        result = pnn_train_step(&images[0][0], labels, n, header[1]);
        fwrite(&result, sizeof result, 1, stdout);
    }
    PNN_FOR_EACH_PARAM(DUMP_PARAM)
#ifdef PNN_WITH_STATE
    PNN_FOR_EACH_STATE(DUMP_PARAM)
    fwrite(&pnn_steps_done, sizeof pnn_steps_done, 1, stdout);
#endif
    return 0;
}
#endif

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "predict") == 0) return predict_all();
#ifdef PNN_WITH_TRAINING
    if (argc == 2 && strcmp(argv[1], "train") == 0) return train_all();
#endif
    fprintf(stderr, "usage: %s predict|train < input > output\n", argv[0]);
    return 2;
}
