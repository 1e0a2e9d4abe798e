"""The ``haneul`` command line: inspect and run models, generate Verilog and C headers.

Errors a user can cause are reported as one line, ``haneul: error: ...``, with exit status 2 and no traceback.
"""

import argparse
import json
import sys

import numpy as np

from haneul.errors import HaneulError

__all__ = ["main"]

BACKENDS = ("golden", "reference")


def _load(path):
    from haneul.firmware import tflite
    return tflite.load(path)


def cmd_inspect(args):
    graph = _load(args.model)
    print(f"{graph.name}: {len(graph.operators)} operators, inputs "
          + ", ".join(f"{t.name} {list(t.shape)} (scale {t.scale:g}, zp {t.zero_point})" for t in graph.inputs)
          + ", outputs " + ", ".join(f"{t.name} {list(t.shape)}" for t in graph.outputs))
    for op in graph.operators:
        print(op.describe())
    print(f"total MACs: {graph.macs:,}")
    return 0


def _run_backend(backend, args, graph, x):
    if backend == "golden":
        from haneul.sim import golden
        return golden.run(graph, x)
    if backend == "reference":
        from haneul.sim.reference import ReferenceInterpreter
        return ReferenceInterpreter(args.model).run(x)
    raise HaneulError(f"unknown backend {backend!r}")  # pragma: no cover - argparse restricts the choice


def cmd_run(args):
    from haneul.firmware.inputs import load_input, random_input
    graph = _load(args.model)
    if len(graph.inputs) != 1:
        raise HaneulError(f"the model has {len(graph.inputs)} inputs; `haneul run` feeds single-input models")
    tensor = graph.inputs[0]
    if args.input is None:
        x = random_input(tensor, args.seed)
        source = f"random (seed {args.seed})"
        print(f"no --input given: using a deterministic random int8 input (seed {args.seed})")
    else:
        x = load_input(args.input, tensor)
        source = str(args.input)
    outputs = _run_backend(args.backend, args, graph, x)
    out = np.asarray(outputs[0]).reshape(graph.outputs[0].shape)
    flat = out.reshape(-1)
    top = int(np.argmax(flat))
    np.set_printoptions(threshold=64, linewidth=120)
    print(f"backend: {args.backend}")
    print(f"input: {source}")
    print(f"output {list(out.shape)} int8: {flat if flat.size <= 64 else flat[:64]}{' ...' if flat.size > 64 else ''}")
    t = graph.outputs[0]
    prob = t.scale * (int(flat[top]) - t.zero_point)
    print(f"top class: {top} (score {int(flat[top])}, dequantised {prob:.4f})")
    if args.output:
        np.save(args.output, out)
    if args.report_json:
        report = {"backend": args.backend, "model": str(args.model), "input": source,
                  "output_shape": list(out.shape), "top_class": top, "macs": graph.macs,
                  "output": flat.astype(int).tolist()}
        with open(args.report_json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


# Verilog generation ---------------------------------------------------------------------------------------------

def _datapath(config, args):
    from haneul.rtl.datapath import Datapath
    return Datapath(config, add=False if args.no_add else None, pool=False if args.no_pool else None,
                    depthwise=False if args.no_depthwise else None)


def _npu(config, args):
    from haneul.rtl.npu import NPU
    return NPU(config, data_width=args.data_width, add=False if args.no_add else None,
               pool=False if args.no_pool else None, depthwise=False if args.no_depthwise else None)


def _systolic(config, args):
    from haneul.rtl.systolic import SystolicArray
    return SystolicArray(config)


#: ``haneul generate --top``: how to build the component, and the Verilog module name.
GENERATE_TOPS = {
    "npu": (_npu, "haneul_npu"),
    "datapath": (_datapath, "haneul_datapath"),
    "systolic": (_systolic, "haneul_systolic"),
}


def _config_fields():
    """The parameters of ``DatapathConfig`` as (field, option) pairs: every field is an option of ``generate``."""
    import dataclasses
    from haneul.rtl.config import DatapathConfig
    return [(field, "--" + field.name.replace("_", "-")) for field in dataclasses.fields(DatapathConfig)]


def cmd_generate(args):
    from amaranth.back import verilog
    from haneul.rtl.axi import amba_ports
    from haneul.rtl.config import DatapathConfig

    params = {f.name: getattr(args, f.name) for f, _ in _config_fields() if getattr(args, f.name) is not None}
    build, name = GENERATE_TOPS[args.top]
    try:
        config = DatapathConfig(**params)
        top = build(config, args)
    except (TypeError, ValueError) as e:
        raise HaneulError(f"bad datapath parameters: {e}") from None
    try:
        f = open(args.output, "w")
    except OSError as e:
        raise HaneulError(f"cannot write {args.output}: {e.strerror}") from None
    with f:
        # The NPU top gets AMBA port names (m_axi_*, s_axil_*, irq); blocks keep Amaranth's <port>__<member>.
        f.write(verilog.convert(top, name=name, ports=amba_ports(top)))
    print(f"wrote {name} ({config.rows} x {config.cols} array, scratchpad {config.spad_depth} x {config.rows} B, "
          f"accumulator {config.acc_depth} x {config.cols} x 4 B) to {args.output}")
    return 0


def cmd_header(args):
    from haneul.firmware import cheader
    try:
        paths = cheader.write_headers(args.output)
    except OSError as e:
        raise HaneulError(f"cannot write the headers to {args.output}: {e.strerror}") from None
    for path in paths:
        print(f"wrote {path}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="haneul", description="Haneul edge NPU: model tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="list the operators of a TFLite INT8 model")
    p.add_argument("model", help="TFLite INT8 model file")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("run", help="run a TFLite INT8 model")
    p.add_argument("model", help="TFLite INT8 model file")
    p.add_argument("--backend", choices=BACKENDS, default="golden",
                   help="golden: the numpy golden model; reference: LiteRT's reference kernels")
    p.add_argument("--input", help="input: .npy (int8), .bin (raw int8) or an image (PNG/JPEG)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input used when --input is absent")
    p.add_argument("--output", help="save the output tensor as .npy")
    p.add_argument("--report-json", help="write a JSON report (backend, output_shape, top_class, macs, ...)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("generate", help="write the Verilog of the NPU (or of one block) for a configuration")
    for field, option in _config_fields():
        kind = type(field.default)
        p.add_argument(option, dest=field.name, type=kind, metavar="N" if kind is int else "NAME",
                       help=f"DatapathConfig.{field.name} (default {field.default})")
    p.add_argument("--no-add", action="store_true", help="datapath without the element-wise adder (ADD)")
    p.add_argument("--no-pool", action="store_true", help="datapath without the pooling unit (POOL)")
    p.add_argument("--no-depthwise", action="store_true",
                   help="datapath without the depthwise unit (DWCONV; about 2.1 k LUT4 per lane)")
    p.add_argument("--top", choices=sorted(GENERATE_TOPS), default="npu",
                   help="component to convert (default npu: module haneul_npu with m_axi_*, s_axil_*, irq)")
    p.add_argument("--data-width", type=int, default=128, metavar="BITS",
                   help="width of the NPU's AXI4 memory port (default 128)")
    p.add_argument("-o", "--output", required=True, help="Verilog file to write")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("header", help="write the C headers (registers, instruction set) of the default build")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for haneul_regs.h, haneul_isa.h")
    p.set_defaults(func=cmd_header)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HaneulError as e:
        print(f"haneul: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
