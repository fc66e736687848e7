/*
 * Name-independent access to a generated model, for the harness programs. Compile with
 *   -DPNN_HEADER='"model.h"' -DPNN_PREFIX=model -DPNN_PREFIX_UPPER=MODEL
 * (and -DPNN_WITH_TRAINING for a model generated with --with-training; -DPNN_WITH_STATE too
 * for one whose training keeps optimizer state: a fixed-point MLP's velocities and step count).
 */
#ifndef PNN_API_H
#define PNN_API_H

#include PNN_HEADER

#define PNN_CAT_(a, b) a##b
#define PNN_CAT(a, b) PNN_CAT_(a, b)

#define PNN_N_INPUTS PNN_CAT(PNN_PREFIX_UPPER, _N_INPUTS)
#define PNN_N_CLASSES PNN_CAT(PNN_PREFIX_UPPER, _N_CLASSES)
#define PNN_FOR_EACH_PARAM PNN_CAT(PNN_PREFIX_UPPER, _FOR_EACH_PARAM)
#define pnn_input_t PNN_CAT(PNN_PREFIX, _input_t)
#define pnn_predict PNN_CAT(PNN_PREFIX, _predict)
#define pnn_train_step PNN_CAT(PNN_PREFIX, _train_step)
#ifdef PNN_WITH_STATE
#define PNN_FOR_EACH_STATE PNN_CAT(PNN_PREFIX_UPPER, _FOR_EACH_STATE)
#define pnn_steps_done PNN_CAT(PNN_PREFIX, _steps_done)
#endif

#endif
