/*
 * Minimal bare-metal runtime for the pocketnn test firmware: start-up, output through
 * ARM semihosting (QEMU: -semihosting-config enable=on,target=native), exit, and a
 * stack high-water mark. Integer-only: no printf, no floating point anywhere.
 */
#ifndef PNN_RUNTIME_H
#define PNN_RUNTIME_H

#include <stdint.h>

void rt_puts(const char *text);            /* write a string to the host console */
void rt_put_int(int64_t value);            /* write a decimal integer */
void rt_exit(int success);                 /* end the program (QEMU exits 0 or 1) */
uint32_t rt_stack_used(void);              /* deepest stack use so far, in bytes */

#endif
