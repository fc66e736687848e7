/* Start-up code and semihosting I/O for Cortex-M (ARMv6-M and later); see runtime.h. */
#include "runtime.h"

#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define ADP_STOPPED_RUNTIME_ERROR 0x20023
#define STACK_PAINT 0xA5A5A5A5u

extern int main(void);
extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _sstack[], _estack[];

static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void rt_puts(const char *text)
{
    semihost(SYS_WRITE0, text);
}

void rt_put_int(int64_t value)
{
    char buf[24];
    char *p = buf + sizeof buf - 1;
    uint64_t u = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
    *p = '\0';
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (value < 0) *--p = '-';
    rt_puts(p);
}

void rt_exit(int success)
{
    semihost(SYS_EXIT, (const void *)(success ? ADP_STOPPED_APPLICATION_EXIT
                                              : ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
    }
}

uint32_t rt_stack_used(void)
{
    const uint32_t *p = _sstack;
    while (p < _estack && *p == STACK_PAINT) p++;
    return (uint32_t)((const char *)_estack - (const char *)p);
}

void Reset_Handler(void)
{
    uint32_t *src = _sidata, *dst = _sdata, *sp;
    while (dst < _edata) *dst++ = *src++;
    for (dst = _sbss; dst < _ebss; dst++) *dst = 0;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (dst = _sstack; dst < sp - 16; dst++) *dst = STACK_PAINT;  /* for rt_stack_used */
    rt_exit(main() == 0);
}

static void Fault_Handler(void)
{
    rt_puts("FAULT: the CPU took an exception\n");
    rt_exit(0);
}

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used))
static const vector_t vectors[16] = {
    (vector_t)_estack, Reset_Handler, Fault_Handler, Fault_Handler,  /* SP, reset, NMI, HardFault */
    Fault_Handler, Fault_Handler, Fault_Handler, 0, 0, 0, 0,         /* (v7-M faults), reserved */
    Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler,   /* SVC, debug, PendSV, SysTick */
};
