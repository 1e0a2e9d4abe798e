"""The generated C headers (``firmware/include``) are current and compile; the C driver compiles against them; C code
that builds an instruction with the header gets the encoder's bytes."""

import shutil
import subprocess
from pathlib import Path

import pytest

from haneul.firmware import cheader
from haneul.rtl import isa
from haneul.rtl.registers import register_map

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "firmware" / "include"
DRIVER = ROOT / "firmware" / "driver"
CC = shutil.which("cc") or shutil.which("gcc")
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]

needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on PATH")


@pytest.mark.parametrize("name", cheader.HEADERS)
def test_header_is_current(name):
    committed = (INCLUDE / name).read_text()
    assert committed == cheader.headers()[name], (
        f"firmware/include/{name} is out of date: run `haneul header -o firmware/include`")


def test_header_lists_the_map():
    text = cheader.regs_header()
    for name, offset, register in register_map():
        assert f"HANEUL_REG_{name} " in text and f"0x{offset:03X}u" in text
        for field in register:
            if field.width < 32:
                assert f"HANEUL_{name}_{field.name.upper()}_MASK" in text
    for code in isa.ErrorCode:
        assert f"HANEUL_ERROR_{code.name} = {code.value}," in text
    text = cheader.isa_header()
    for opcode in isa.Opcode:
        assert f"HANEUL_OP_{opcode.name} = {opcode.value}," in text
    assert "HANEUL_LOAD_LOOPS2_SPAD_STRIDE_LSB" in text and "HANEUL_STORE_EXT_ADDR_WIDTH" in text


def test_write_headers(tmp_path):
    paths = cheader.write_headers(tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(cheader.HEADERS)
    for path in paths:
        assert path.read_text() == (INCLUDE / path.name).read_text()


def _cc(*args, cwd):
    result = subprocess.run([CC, *CFLAGS, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


@needs_cc
@pytest.mark.parametrize("name", cheader.HEADERS)
def test_header_compiles(tmp_path, name):
    _cc("-fsyntax-only", "-x", "c", str(INCLUDE / name), cwd=tmp_path)


@needs_cc
def test_driver_compiles(tmp_path):
    _cc("-c", f"-I{INCLUDE}", str(DRIVER / "haneul.c"), "-o", str(tmp_path / "haneul.o"), cwd=tmp_path)


def test_driver_names_every_error_code():
    source = (DRIVER / "haneul.c").read_text()
    for code in isa.ErrorCode:
        assert f"case HANEUL_ERROR_{code.name}:" in source, code.name


# C against the encoder and against a model of the registers -------------------------------------------------------

INSTR_PROGRAM = r"""
#include <stdio.h>
#include "haneul_isa.h"

static void print(const uint32_t *instr)
{
    unsigned i;
    for (i = 0; i < HANEUL_INSTR_WORDS * 4u; i++)
        printf("%02x", (unsigned)(instr[i / 4u] >> (8u * (i % 4u)) & 0xFFu));
    printf("\n");
}

int main(void)
{
    uint32_t load[HANEUL_INSTR_WORDS] = {0}, store[HANEUL_INSTR_WORDS] = {0};
    HANEUL_INSTR_SET(load, HANEUL_INSTR_OPCODE, HANEUL_OP_LOAD);
    load[0] |= HANEUL_DEP_WAIT_NEXT | HANEUL_DEP_SIGNAL_NEXT;
    HANEUL_INSTR_SET(load, HANEUL_LOAD_EXT_ADDR, 0x80001234u);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_SPAD_ADDR, 100);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LENGTH, 12);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_OFFSET, 2);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_PAD_VALUE, -5);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LOOPS0_COUNT, 7);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LOOPS0_EXT_STRIDE, 0xABCDE);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LOOPS0_SPAD_STRIDE, 1);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LOOPS1_COUNT, 3);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LOOPS1_EXT_STRIDE, 640);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LOOPS1_SPAD_STRIDE, 9);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LOOPS2_COUNT, 2);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LOOPS2_EXT_STRIDE, 0xFFFFF);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_LOOPS2_SPAD_STRIDE, 40);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_PAD0_BEFORE, 1);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_PAD0_AFTER, 2);
    HANEUL_INSTR_SET(load, HANEUL_LOAD_PAD1_AFTER, 1);
    print(load);
    if (HANEUL_INSTR_GET(load, HANEUL_LOAD_LOOPS0_SPAD_STRIDE) != 1u
            || HANEUL_INSTR_GET(load, HANEUL_LOAD_EXT_ADDR) != 0x80001234u)
        return 1;
    HANEUL_INSTR_SET(store, HANEUL_INSTR_OPCODE, HANEUL_OP_STORE);
    HANEUL_INSTR_SET(store, HANEUL_STORE_EXT_ADDR, 0xFFFFFFFFu);
    HANEUL_INSTR_SET(store, HANEUL_STORE_LENGTH, 16);
    HANEUL_INSTR_SET(store, HANEUL_STORE_LOOPS0_COUNT, 65535);
    HANEUL_INSTR_SET(store, HANEUL_STORE_LOOPS0_EXT_STRIDE, 16);
    HANEUL_INSTR_SET(store, HANEUL_STORE_LOOPS1_COUNT, 1);
    HANEUL_INSTR_SET(store, HANEUL_STORE_LOOPS2_COUNT, 1);
    print(store);
    return 0;
}
"""


@needs_cc
def test_c_builds_the_encoders_instructions(tmp_path):
    (tmp_path / "instr.c").write_text(INSTR_PROGRAM)
    _cc(f"-I{INCLUDE}", "instr.c", "-o", "instr", cwd=tmp_path)
    out = subprocess.run([str(tmp_path / "instr")], capture_output=True, text=True, check=True).stdout.split()
    fmt = isa.InstructionFormat()
    load = isa.Load(ext_addr=0x8000_1234, spad_addr=100, length=12, offset=2, pad_value=-5,
                    loops=((7, 0xABCDE, 1), (3, 640, 9), (2, 0xFFFFF, 40)), pad=((1, 2), (0, 1)),
                    wait_next=True, signal_next=True)
    store = isa.Store(ext_addr=0xFFFF_FFFF, length=16, loops=((65535, 16),))
    assert out == [fmt.encode_bytes(load).hex(), fmt.encode_bytes(store).hex()]


DRIVER_PROGRAM = r"""
#include <stdio.h>
#include <stdint.h>

/* A model of the registers: the NPU ends each run one poll after START, the second run with an error. */
static uint32_t regs[HANEUL_CSR_SIZE / 4];
static unsigned runs, polls;
static uint32_t model_read(uintptr_t addr);
static void model_write(uintptr_t addr, uint32_t value);
#define HANEUL_READ32(addr) model_read(addr)
#define HANEUL_WRITE32(addr, value) model_write((addr), (value))
#include "haneul.c"

static uint32_t model_read(uintptr_t addr)
{
    uint32_t offset = (uint32_t)(addr - 0x1000u);
    if (offset == HANEUL_REG_IRQ_STATUS && (regs[HANEUL_REG_STATUS / 4] & HANEUL_STATUS_BUSY_MASK) && ++polls > 1) {
        if (runs == 2) {
            regs[HANEUL_REG_STATUS / 4] = HANEUL_STATUS_ERROR_MASK
                | (uint32_t)HANEUL_ERROR_ADDR_WINDOW << HANEUL_STATUS_ERROR_CODE_SHIFT;
            regs[HANEUL_REG_ERROR_ADDR / 4] = regs[HANEUL_REG_CMD_ADDR / 4] + 3u * HANEUL_INSTR_BYTES;
            regs[offset / 4] |= HANEUL_IRQ_STATUS_ERROR_MASK;
        } else {
            regs[HANEUL_REG_STATUS / 4] = HANEUL_STATUS_DONE_MASK;
            regs[offset / 4] |= HANEUL_IRQ_STATUS_DONE_MASK;
        }
        regs[HANEUL_REG_MACS_LO / 4] = 0x1234u;
        regs[HANEUL_REG_MACS_HI / 4] = runs;
    }
    return regs[offset / 4];
}

static void model_write(uintptr_t addr, uint32_t value)
{
    uint32_t offset = (uint32_t)(addr - 0x1000u);
    if (offset == HANEUL_REG_IRQ_STATUS)
        regs[offset / 4] &= ~value;
    else if (offset == HANEUL_REG_CTRL && (value & HANEUL_CTRL_START_MASK)) {
        runs++;
        polls = 0;
        regs[HANEUL_REG_STATUS / 4] = HANEUL_STATUS_BUSY_MASK;
    } else if (offset != HANEUL_REG_CTRL)
        regs[offset / 4] = value;
}

int main(void)
{
    struct haneul npu;
    struct haneul_counters counters;
    int err;
    unsigned i;

    for (i = 0; i < HANEUL_CSR_SIZE / 4; i++)
        regs[i] = 0;
    if (haneul_init(&npu, 0x1000u) != HANEUL_E_NODEV)
        return 1;
    regs[HANEUL_REG_ID / 4] = HANEUL_ID_RESET;
    regs[HANEUL_REG_VERSION / 4] = HANEUL_VERSION_RESET;
    regs[HANEUL_REG_CONFIG0 / 4] = HANEUL_CONFIG0_RESET;
    regs[HANEUL_REG_CONFIG1 / 4] = HANEUL_CONFIG1_RESET;
    regs[HANEUL_REG_CONFIG3 / 4] = HANEUL_CONFIG3_RESET;
    if (haneul_init(&npu, 0x1000u) != 0)
        return 2;
    haneul_set_window(&npu, 0x80000000u, 0x100000u);
    haneul_enable_irq(&npu, 1);
    if (haneul_start(&npu, 0x80000400u) != 0 || haneul_start(&npu, 0x80000400u) != HANEUL_E_BUSY)
        return 3;
    err = haneul_wait(&npu, 100);
    haneul_read_counters(&npu, &counters);
    printf("%d %s %u %u %u %llx\n", err, haneul_error_name(err), npu.config.rows, npu.config.spad_depth,
           npu.config.has_pool, (unsigned long long)counters.macs);
    if (haneul_start(&npu, 0x80000400u) != 0)
        return 4;
    while (!npu.done)
        haneul_irq_handler(&npu);
    printf("%d %s %lx\n", (int)npu.error, haneul_error_name((int)npu.error), (unsigned long)npu.error_addr);
    return 0;
}
"""


@needs_cc
def test_driver_against_a_register_model(tmp_path):
    (tmp_path / "run.c").write_text("#include \"haneul_regs.h\"\n" + DRIVER_PROGRAM.replace(
        "#include <stdint.h>", "#include <stdint.h>\n#include \"haneul_isa.h\"", 1))
    _cc(f"-I{INCLUDE}", f"-I{DRIVER}", "run.c", "-o", "run", cwd=tmp_path)
    out = subprocess.run([str(tmp_path / "run")], capture_output=True, text=True, check=True).stdout
    config = register_map()["CONFIG0"].fields["rows"].init, register_map()["CONFIG1"].init
    assert out.splitlines() == [
        f"0 none {config[0]} {config[1]} 1 100001234",   # MACS_HI:MACS_LO = 1:0x1234
        f"{isa.ErrorCode.ADDR_WINDOW.value} address outside the window 80000460",
    ]


def test_cli_header(tmp_path, capsys):
    from haneul.cli import main
    assert main(["header", "-o", str(tmp_path / "inc")]) == 0
    out = capsys.readouterr().out
    for name in cheader.HEADERS:
        assert (tmp_path / "inc" / name).read_text() == (INCLUDE / name).read_text()
        assert name in out
    (tmp_path / "file").write_text("")
    assert main(["header", "-o", str(tmp_path / "file" / "inc")]) == 2
    assert "haneul: error: cannot write the headers" in capsys.readouterr().err
