/*
 * haneul.c: the Haneul NPU driver (see haneul.h).
 */
#include "haneul.h"

#define FIELD(value, reg, field) (((value) & HANEUL_##reg##_##field##_MASK) >> HANEUL_##reg##_##field##_SHIFT)

static uint32_t rd(const struct haneul *npu, uint32_t offset)
{
    return HANEUL_READ32(npu->base + offset);
}

static void wr(const struct haneul *npu, uint32_t offset, uint32_t value)
{
    HANEUL_WRITE32(npu->base + offset, value);
}

int haneul_init(struct haneul *npu, uintptr_t base)
{
    uint32_t config0, config3, version;

    npu->base = base;
    npu->done = 0;
    npu->error = HANEUL_ERROR_NONE;
    npu->error_addr = 0;
    if (rd(npu, HANEUL_REG_ID) != HANEUL_ID_RESET)
        return HANEUL_E_NODEV;
    version = rd(npu, HANEUL_REG_VERSION);
    if (FIELD(version, VERSION, MAJOR) != FIELD(HANEUL_VERSION_RESET, VERSION, MAJOR))
        return HANEUL_E_VERSION;

    config0 = rd(npu, HANEUL_REG_CONFIG0);
    config3 = rd(npu, HANEUL_REG_CONFIG3);
    npu->config.rows = FIELD(config0, CONFIG0, ROWS);
    npu->config.cols = FIELD(config0, CONFIG0, COLS);
    npu->config.bus_bytes = FIELD(config0, CONFIG0, BUS_BYTES);
    npu->config.spad_depth = rd(npu, HANEUL_REG_CONFIG1);
    npu->config.acc_depth = rd(npu, HANEUL_REG_CONFIG2);
    npu->config.has_add = FIELD(config3, CONFIG3, ADD);
    npu->config.has_pool = FIELD(config3, CONFIG3, POOL);
    npu->config.has_depthwise = FIELD(config3, CONFIG3, DEPTHWISE);

    haneul_soft_reset(npu);
    return 0;
}

void haneul_soft_reset(struct haneul *npu)
{
    wr(npu, HANEUL_REG_CTRL, HANEUL_CTRL_SOFT_RESET_MASK);
    npu->done = 0;
    npu->error = HANEUL_ERROR_NONE;
}

void haneul_set_window(struct haneul *npu, uint32_t base, uint32_t size)
{
    wr(npu, HANEUL_REG_WINDOW_BASE, base);
    wr(npu, HANEUL_REG_WINDOW_SIZE, size);
}

void haneul_enable_irq(struct haneul *npu, int enable)
{
    wr(npu, HANEUL_REG_IRQ_ENABLE,
       enable ? HANEUL_IRQ_ENABLE_DONE_MASK | HANEUL_IRQ_ENABLE_ERROR_MASK : 0u);
}

int haneul_busy(const struct haneul *npu)
{
    return (rd(npu, HANEUL_REG_STATUS) & HANEUL_STATUS_BUSY_MASK) != 0;
}

int haneul_start(struct haneul *npu, uint32_t program_addr)
{
    if (haneul_busy(npu))
        return HANEUL_E_BUSY;
    /* Events of an earlier run must not be taken for this one's. */
    wr(npu, HANEUL_REG_IRQ_STATUS, HANEUL_IRQ_STATUS_DONE_MASK | HANEUL_IRQ_STATUS_ERROR_MASK);
    npu->done = 0;
    npu->error = HANEUL_ERROR_NONE;
    npu->error_addr = 0;
    wr(npu, HANEUL_REG_CMD_ADDR, program_addr);
    wr(npu, HANEUL_REG_CTRL, HANEUL_CTRL_START_MASK);
    return 0;
}

void haneul_abort(struct haneul *npu)
{
    wr(npu, HANEUL_REG_CTRL, HANEUL_CTRL_ABORT_MASK);
}

/* Takes the events in IRQ_STATUS (clearing them) and records how the run ended. Returns nonzero if it ended. */
static int collect(struct haneul *npu)
{
    uint32_t events = rd(npu, HANEUL_REG_IRQ_STATUS);
    uint32_t status;

    if (events == 0)
        return 0;
    wr(npu, HANEUL_REG_IRQ_STATUS, events);
    status = rd(npu, HANEUL_REG_STATUS);
    npu->error = (enum haneul_error_code)FIELD(status, STATUS, ERROR_CODE);
    npu->error_addr = (status & HANEUL_STATUS_ERROR_MASK) ? rd(npu, HANEUL_REG_ERROR_ADDR) : 0u;
    npu->done = 1;
    return 1;
}

void haneul_irq_handler(struct haneul *npu)
{
    collect(npu);
}

int haneul_wait(struct haneul *npu, unsigned long max_polls)
{
    unsigned long polls;

    for (polls = 0; !npu->done; polls++) {
        if (max_polls && polls >= max_polls)
            return HANEUL_E_TIMEOUT;
        collect(npu);
    }
    return (int)npu->error;
}

uint64_t haneul_read64(const struct haneul *npu, uint32_t lo_offset)
{
    uint32_t lo = rd(npu, lo_offset);          /* latches the upper half */
    uint32_t hi = rd(npu, lo_offset + 4u);
    return (uint64_t)hi << 32 | lo;
}

void haneul_read_counters(const struct haneul *npu, struct haneul_counters *c)
{
    c->cycles = haneul_read64(npu, HANEUL_REG_CYCLES_LO);
    c->macs = haneul_read64(npu, HANEUL_REG_MACS_LO);
    c->busy_cycles = rd(npu, HANEUL_REG_BUSY_CYCLES);
    c->active_cycles = rd(npu, HANEUL_REG_ACTIVE_CYCLES);
    c->dma_rd_bytes = rd(npu, HANEUL_REG_DMA_RD_BYTES);
    c->dma_wr_bytes = rd(npu, HANEUL_REG_DMA_WR_BYTES);
    c->stall_fetch = rd(npu, HANEUL_REG_STALL_FETCH);
    c->stall_load_dep = rd(npu, HANEUL_REG_STALL_LOAD_DEP);
    c->stall_compute_dep = rd(npu, HANEUL_REG_STALL_COMPUTE_DEP);
    c->stall_store_dep = rd(npu, HANEUL_REG_STALL_STORE_DEP);
    c->stall_dma_rd = rd(npu, HANEUL_REG_STALL_DMA_RD);
    c->stall_dma_wr = rd(npu, HANEUL_REG_STALL_DMA_WR);
    c->stall_out = rd(npu, HANEUL_REG_STALL_OUT);
}

const char *haneul_error_name(int code)
{
    switch (code) {
    case HANEUL_E_NODEV:                return "no Haneul NPU at this address";
    case HANEUL_E_VERSION:              return "unsupported NPU version";
    case HANEUL_E_BUSY:                 return "NPU busy";
    case HANEUL_E_TIMEOUT:              return "timeout";
    case HANEUL_ERROR_NONE:             return "none";
    case HANEUL_ERROR_ILLEGAL_OPCODE:   return "illegal opcode";
    case HANEUL_ERROR_BAD_COUNT:        return "bad count";
    case HANEUL_ERROR_BAD_RANGE:        return "bad range";
    case HANEUL_ERROR_UNSUPPORTED:      return "unsupported (unit not built)";
    case HANEUL_ERROR_ADDR_WINDOW:      return "address outside the window";
    case HANEUL_ERROR_BUS_SLVERR:       return "bus error (SLVERR)";
    case HANEUL_ERROR_BUS_DECERR:       return "bus error (DECERR)";
    case HANEUL_ERROR_ABORTED:          return "aborted";
    case HANEUL_ERROR_DEADLOCK:         return "deadlock";
    default:                            return "unknown error";
    }
}
