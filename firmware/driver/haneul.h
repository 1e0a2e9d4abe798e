/*
 * haneul.h: a small bare-metal driver for the Haneul NPU's control and status registers.
 *
 * The NPU is a block of 32-bit registers (haneul_regs.h) that a host CPU reaches at some base address. A run:
 *
 *     struct haneul npu;
 *     if (haneul_init(&npu, (uintptr_t)0x40000000u) != 0) ...    // checks ID and VERSION, soft reset
 *     haneul_set_window(&npu, dram_base, dram_size);              // memory the NPU may read and write
 *     haneul_start(&npu, program_addr);                           // program: HANEUL_INSTR_BYTES per instruction
 *     int err = haneul_wait(&npu);                                // or haneul_irq_handler() from the interrupt
 *     haneul_read_counters(&npu, &counters);
 *
 * Register access goes through HANEUL_READ32 / HANEUL_WRITE32, plain volatile accesses unless the platform
 * defines them first (for example to add barriers, or to run against a model of the registers).
 */
#ifndef HANEUL_H
#define HANEUL_H

#include <stdint.h>

#include "haneul_regs.h"

#ifndef HANEUL_READ32
#define HANEUL_READ32(addr)         (*(volatile uint32_t *)(addr))
#endif
#ifndef HANEUL_WRITE32
#define HANEUL_WRITE32(addr, value) (*(volatile uint32_t *)(addr) = (value))
#endif

/* Negative return values of the driver's functions (error codes of the NPU itself are positive). */
#define HANEUL_E_NODEV    (-1)  /* no Haneul NPU at the base address (ID mismatch) */
#define HANEUL_E_VERSION  (-2)  /* the NPU's major version differs from the header's */
#define HANEUL_E_BUSY     (-3)  /* a run is in progress */
#define HANEUL_E_TIMEOUT  (-4)  /* the run did not end within the polling budget */

/* The build configuration, from CONFIG0..3. */
struct haneul_config {
    unsigned rows, cols, bus_bytes;
    uint32_t spad_depth, acc_depth;
    unsigned has_add, has_pool, has_depthwise;
};

/* The performance counters of the last run (CYCLES: since reset). */
struct haneul_counters {
    uint64_t cycles, macs;
    uint32_t busy_cycles, active_cycles, dma_rd_bytes, dma_wr_bytes;
    uint32_t stall_fetch, stall_load_dep, stall_compute_dep, stall_store_dep;
    uint32_t stall_dma_rd, stall_dma_wr, stall_out;
};

struct haneul {
    uintptr_t base;
    struct haneul_config config;
    volatile int done;                     /* set by haneul_irq_handler() when a run ends */
    volatile enum haneul_error_code error; /* its error code (HANEUL_ERROR_NONE if it succeeded) */
    volatile uint32_t error_addr;
};

int haneul_init(struct haneul *npu, uintptr_t base);
void haneul_soft_reset(struct haneul *npu);
void haneul_set_window(struct haneul *npu, uint32_t base, uint32_t size);
void haneul_enable_irq(struct haneul *npu, int enable);
int haneul_start(struct haneul *npu, uint32_t program_addr);
void haneul_abort(struct haneul *npu);
int haneul_busy(const struct haneul *npu);
int haneul_wait(struct haneul *npu, unsigned long max_polls);
void haneul_irq_handler(struct haneul *npu);
uint64_t haneul_read64(const struct haneul *npu, uint32_t lo_offset);
void haneul_read_counters(const struct haneul *npu, struct haneul_counters *counters);
const char *haneul_error_name(int code);

#endif /* HANEUL_H */
