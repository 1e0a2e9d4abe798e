"""``haneul generate``: Verilog of the NPU (or a block) for a configuration, run as a subprocess like a user would."""

import re
import subprocess
import sys

import pytest

from haneul.rtl.commands import word_width
from haneul.rtl.config import DatapathConfig


def haneul(*args):
    return subprocess.run([sys.executable, "-m", "haneul.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def ports(verilog, module):
    """``{name: (direction, width)}`` of the ports of ``module``."""
    body = verilog.split(f"module {module}(", 1)[1].split("endmodule", 1)[0]
    found = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", body, re.M):
        found[name] = (direction, int(msb) + 1 if msb else 1)
    return found


@pytest.mark.parametrize("rows, cols, extra", [
    (4, 4, ["--spad-depth", 256, "--acc-depth", 64]),
    (8, 16, []),
])
def test_generate_datapath(rows, cols, extra, tmp_path):
    out = tmp_path / "dp.v"
    r = haneul("generate", "--top", "datapath", "--rows", rows, "--cols", cols, *extra, "-o", out)
    assert r.returncode == 0, r.stderr
    assert f"wrote haneul_datapath ({rows} x {cols} array" in r.stdout
    text = out.read_text()
    found = ports(text, "haneul_datapath")
    cfg = DatapathConfig(rows=rows, cols=cols, **{k.lstrip("-").replace("-", "_"): v
                                                  for k, v in zip(extra[::2], extra[1::2])})
    expected = {
        "clk": ("input", 1), "rst": ("input", 1),
        "cmd__valid": ("input", 1), "cmd__ready": ("output", 1), "cmd__payload": ("input", word_width(cfg)),
        "spad_wr__valid": ("input", 1), "spad_wr__ready": ("output", 1),
        "spad_wr__payload": ("input", cfg.spad_addr_width + 8 * rows),
        "ppu_param__valid": ("input", 1), "ppu_param__ready": ("output", 1),
        "out__valid": ("output", 1), "out__ready": ("input", 1), "out__payload": ("output", 8 * cols),
        "busy": ("output", 1), "idle": ("output", 1),
        "error": ("output", 1), "error_code": ("output", 4), "error_clear": ("input", 1),
        "busy_cycles": ("output", 32), "active_cycles": ("output", 32), "macs": ("output", 48),
    }
    for name, port in expected.items():
        assert found.get(name) == port, f"{name}: {found.get(name)} != {port}"
    assert set(found) == set(expected) | {"ppu_param__payload", "add_param__valid", "add_param__ready",
                                          "add_param__payload"}


def test_generate_without_vector_units(tmp_path):
    out = tmp_path / "dp.v"
    r = haneul("generate", "--top", "datapath", "--rows", 2, "--cols", 2, "--spad-depth", 64, "--acc-depth", 16,
               "--no-add", "--no-pool", "--no-depthwise", "-o", out)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    found = ports(text, "haneul_datapath")
    assert "cmd__payload" in found and not any(name.startswith("add_param") for name in found)
    assert "dw_unit" not in text and "dw_reader" not in text


def test_generate_npu(tmp_path):
    """The default top is the whole NPU, with AMBA port names: m_axi_* (AXI4), s_axil_* (AXI4-Lite), irq."""
    out = tmp_path / "npu.v"
    r = haneul("generate", "--rows", 4, "--cols", 4, "--spad-depth", 256, "--acc-depth", 64, "--no-depthwise",
               "--data-width", 64, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "wrote haneul_npu (4 x 4 array" in r.stdout
    found = ports(out.read_text(), "haneul_npu")
    axi = {"awaddr": ("output", 32), "awlen": ("output", 8), "awsize": ("output", 3), "awburst": ("output", 2),
           "awvalid": ("output", 1), "awready": ("input", 1), "wdata": ("output", 64), "wstrb": ("output", 8),
           "wlast": ("output", 1), "bresp": ("input", 2), "bvalid": ("input", 1), "bready": ("output", 1),
           "araddr": ("output", 32), "arlen": ("output", 8), "arvalid": ("output", 1), "rdata": ("input", 64),
           "rresp": ("input", 2), "rlast": ("input", 1), "rvalid": ("input", 1), "rready": ("output", 1)}
    for name, port in axi.items():
        assert found.get(f"m_axi_{name}") == port, name
    axil = {"awaddr": ("input", 12), "wdata": ("input", 32), "wstrb": ("input", 4), "bresp": ("output", 2),
            "araddr": ("input", 12), "rdata": ("output", 32), "rvalid": ("output", 1), "rready": ("input", 1)}
    for name, port in axil.items():
        assert found.get(f"s_axil_{name}") == port, name
    assert found["irq"] == ("output", 1)
    assert set(found) <= {"clk", "rst", "irq"} | {n for n in found if n.startswith(("m_axi_", "s_axil_"))}


def test_generate_systolic(tmp_path):
    out = tmp_path / "sa.v"
    r = haneul("generate", "--top", "systolic", "--rows", 2, "--cols", 3, "-o", out)
    assert r.returncode == 0, r.stderr
    found = ports(out.read_text(), "haneul_systolic")
    assert found["act__payload"] == ("input", 2 * 8 + 1)
    assert found["weight__payload"] == ("input", 3 * 8)


@pytest.mark.parametrize("args, message", [
    (["--rows", 0], "Row count must be a positive integer, not 0"),
    (["--spad-depth", 1000], "Scratchpad depth must be a power of two, not 1000"),
    (["--acc-width", 24], "accumulator width must be 32, not 24"),
    (["--acc-banks", 1024, "--acc-depth", 512], "Accumulator bank count 1024 exceeds its depth 512"),
])
def test_generate_bad_parameters(args, message, tmp_path):
    out = tmp_path / "bad.v"
    r = haneul("generate", *args, "-o", out)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("haneul: error: bad datapath parameters: ")
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_generate_unwritable(tmp_path):
    r = haneul("generate", "--rows", 2, "--cols", 2, "--top", "systolic", "-o", tmp_path / "no" / "such" / "x.v")
    assert r.returncode == 2
    assert r.stderr.startswith("haneul: error: cannot write") and "Traceback" not in r.stderr
