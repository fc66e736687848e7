/*
 * Smallest firmware that keeps a generated model's code and data: one prediction (and one
 * training step when built with -DPNN_WITH_TRAINING) on an all-zero input. Used to measure
 * flash, RAM and stack with arm-none-eabi-size.
 */
#include <stdint.h>

#include "pnn_api.h"

static const pnn_input_t input[PNN_N_INPUTS];
volatile int32_t pnn_sink;

int main(void)
{
    int32_t scores[PNN_N_CLASSES];
    pnn_sink = pnn_predict(input, scores);
#ifdef PNN_WITH_TRAINING
    {
        static const uint8_t label;
        pnn_sink = pnn_train_step(input, &label, 1, 1000);
    }
#endif
    return 0;
}
