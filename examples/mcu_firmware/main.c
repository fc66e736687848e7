/*
 * Example firmware: classify with a pocketnn model and keep training it on the device.
 *
 * Generate the model first (a header and a source file, integer-only C99):
 *   pocketnn export-c mnist.npz --out . --name model --with-training
 * then `make` (Cortex-M0, no FPU) and `make run` (QEMU's mps2-an385 board).
 *
 * Copy this file into your firmware project: replace read_sample() with your sensor and
 * the rt_* output calls with your UART. Nothing here needs floating point or malloc.
 */
#include <stdint.h>

#include "model.h"
#include "runtime.h" /* rt_puts, rt_put_int, rt_exit: semihosting output for this demo */

/* A labelled batch collected on the device (MODEL_MAX_BATCH samples at most). */
static uint8_t batch_images[MODEL_MAX_BATCH][MODEL_N_INPUTS];
static uint8_t batch_labels[MODEL_MAX_BATCH];

/* Stand-in for a sensor: a deterministic pseudo-random image with a class-dependent bar. */
static void read_sample(uint8_t image[MODEL_N_INPUTS], uint8_t *label, uint32_t *seed)
{
    int i;
    *seed = *seed * 1664525u + 1013904223u;
    *label = (uint8_t)((*seed >> 24) % MODEL_N_CLASSES);
    for (i = 0; i < MODEL_N_INPUTS; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        image[i] = (uint8_t)((i / 28) % MODEL_N_CLASSES == *label ? 200 + (*seed >> 29)
                                                                    : (*seed >> 31) * 30);
    }
}

static void print_line(const char *what, int32_t value)
{
    rt_puts(what);
    rt_put_int(value);
    rt_puts("\n");
}

int main(void)
{
    int32_t scores[MODEL_N_CLASSES];
    uint32_t seed = 1;
    int step, i, result;

    /* Inference: one call per input; the class is returned, the scores written. */
    read_sample(batch_images[0], &batch_labels[0], &seed);
    result = model_predict(batch_images[0], scores);
    if (result < 0) return 1; /* MODEL_ERR_OVERFLOW: a value left int32 */
    print_line("predicted class ", result);

    /* On-device training: one DFA step per collected batch, learning rate 1/1000. */
    for (step = 0; step < 3; step++) {
        for (i = 0; i < MODEL_MAX_BATCH; i++) read_sample(batch_images[i], &batch_labels[i], &seed);
        result = model_train_step(&batch_images[0][0], batch_labels, MODEL_MAX_BATCH, 1000);
        if (result < 0) {
            print_line("training error ", result);
            return 1;
        }
        print_line("trained: correct before the update ", result);
    }
    print_line("first weight of fc1 now ", model_fc1_W[0][0]);
    return 0;
}
