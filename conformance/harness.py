"""The machinery both conformance runners share: run a module's tests on two loops, compare.

A suite script (``cpython.py``, ``uvloop.py``) says which modules there are
and how to load a module's tests for "asyncio" (asyncio's own loop) or
"reactor" (``reactor.aio.EventLoop``); this module runs each module once per
loop in fresh child processes (the script itself, with ``--child``), gives
every test a time limit (a hung test is recorded as "timeout" and the module
goes on in a new child after it), and compares the outcomes test by test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PASSED = ("pass", "xfail")

#: Loads a module's tests for a loop; ``counter[0]`` must go up by one for
#: every real event loop a test makes (to tell tests that ran on a loop).
Loader = Callable[[str, str, list[int], argparse.Namespace], list[unittest.TestCase]]


@dataclass
class Suite:
    """What a suite script tells the harness."""

    name: str  # "cpython", "uvloop": the results file's prefix
    title: str  # the report's first line
    script: Path  # the suite script, run with --child in each child process
    modules: list[str]
    ci_modules: list[str]
    load: Loader
    present: Callable[[argparse.Namespace], list[str]]  # modules this Python has
    child_args: Callable[[argparse.Namespace], list[str]] = field(default=lambda a: [])
    add_arguments: Callable[[argparse.ArgumentParser], None] = field(default=lambda p: None)
    prepare: Callable[[argparse.Namespace], None] = field(default=lambda a: None)


def flatten(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


class _Recorder(unittest.TestResult):
    """Writes one JSON line per finished test; a watchdog ends a hung test."""

    def __init__(self, out: Any, counter: list[int], limit: float) -> None:
        super().__init__()
        self._out = out
        self._counter = counter
        self._limit = limit
        self._current: str | None = None
        self._started = 0.0
        self._loops_before = 0
        self._outcome: tuple[str, str] | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._watchdog, daemon=True).start()

    def _write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(record) + "\n")
            self._out.flush()

    def _watchdog(self) -> None:
        import faulthandler

        while True:
            time.sleep(1.0)
            current, started = self._current, self._started
            if current is not None and time.monotonic() - started > self._limit:
                self._write({"test": current, "outcome": "timeout", "detail": "", "real": None})
                faulthandler.dump_traceback(all_threads=True)
                os._exit(3)

    def startTest(self, test: unittest.TestCase) -> None:  # noqa: N802 (unittest's name)
        super().startTest(test)
        self._outcome = None
        self._loops_before = self._counter[0]
        self._started = time.monotonic()
        self._current = test.id()

    def _set(self, outcome: str, detail: str = "") -> None:
        # The first failure wins over a later success (subtests report each).
        if self._outcome is None or self._outcome[0] == "pass":
            self._outcome = (outcome, detail)

    def addSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802
        self._set("pass")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:  # noqa: N802
        self._set("fail", self._exc_info_to_string(err, test)[-2000:])

    def addError(self, test: unittest.TestCase, err: Any) -> None:  # noqa: N802
        if isinstance(test, unittest.TestCase):
            self._set("error", self._exc_info_to_string(err, test)[-2000:])
        else:  # a class or module fixture failed: record it under its name
            self._write(
                {"test": str(test), "outcome": "error", "detail": str(err[1]), "real": None}
            )

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:  # noqa: N802
        self._set("skip", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:  # noqa: N802
        self._set("xfail")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802
        self._set("xpass")

    def addSubTest(self, test: unittest.TestCase, subtest: Any, err: Any) -> None:  # noqa: N802
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._set(kind, self._exc_info_to_string(err, test)[-2000:])

    def stopTest(self, test: unittest.TestCase) -> None:  # noqa: N802
        super().stopTest(test)
        outcome, detail = self._outcome or ("error", "no outcome reported")
        real = self._counter[0] > self._loops_before
        self._current = None
        self._write({"test": test.id(), "outcome": outcome, "detail": detail, "real": real})


def child(suite: Suite, args: argparse.Namespace) -> int:
    """Run one test module on one loop, writing JSON lines to the fd the parent gave."""
    counter = [0]
    skip: set[str] = set()
    if args.skip_file:
        skip = set(Path(args.skip_file).read_text().split())
    tests = [t for t in suite.load(args.child, args.loop, counter, args) if t.id() not in skip]
    out = os.fdopen(int(os.environ["CONFORMANCE_FD"]), "w", buffering=1)
    recorder = _Recorder(out, counter, args.limit)
    unittest.TestSuite(tests).run(recorder)
    out.close()
    return 0


# ----------------------------------------------------------------- the parent


def run_module(suite: Suite, module: str, loop: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run a module on one loop, restarting after a hung test; its outcomes by test id."""
    outcomes: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    restarts = 0
    fixture_errors: list[dict[str, Any]] = []
    while True:
        with tempfile.NamedTemporaryFile("w", delete=False) as skip:
            skip.write("\n".join(outcomes))
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, CONFORMANCE_FD=str(write_fd), PYTHONPATH=str(ROOT))
        command = [sys.executable, str(suite.script), "--child", module, "--loop", loop]
        command += ["--skip-file", skip.name, "--limit", str(args.limit), *suite.child_args(args)]
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(
                command,
                pass_fds=(write_fd,),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=tempfile.gettempdir(),
            )
            os.close(write_fd)
            lines: list[str] = []
            with os.fdopen(read_fd) as reader:
                remaining = args.module_limit - (time.monotonic() - started)
                timer = threading.Timer(max(remaining, 1.0), proc.kill)
                timer.start()
                lines = reader.read().splitlines()
                timer.cancel()
            code = proc.wait()
            stderr.seek(0)
            tail = stderr.read()[-3000:].decode("utf-8", "replace")
        os.unlink(skip.name)
        for line in lines:
            record = json.loads(line)
            if record["test"].startswith(("setUpClass", "tearDownClass", "setUpModule")) or (
                " (" in record["test"]
            ):
                fixture_errors.append(record)
            else:
                outcomes[record["test"]] = record
        hung = bool(lines) and json.loads(lines[-1])["outcome"] == "timeout"
        over = time.monotonic() - started > args.module_limit
        if hung and not over:
            restarts += 1
            continue
        if code not in (0, 3) or over:
            fixture_errors.append(
                {"test": f"{module} (child exit {code})", "outcome": "error", "detail": tail}
            )
        break
    return {
        "outcomes": outcomes,
        "fixture_errors": fixture_errors,
        "seconds": round(time.monotonic() - started, 1),
        "restarts": restarts,
    }


def compare(stock: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Which tests pass on asyncio's loop and not on ours, and the rates."""
    stock_out, our_out = stock["outcomes"], ours["outcomes"]
    passed_stock = {t for t, r in stock_out.items() if r["outcome"] in PASSED}
    passed_both = {t for t in passed_stock if our_out.get(t, {}).get("outcome") in PASSED}
    real = {t for t in passed_stock if our_out.get(t, {}).get("real")}
    real_both = real & passed_both
    only_stock = sorted(passed_stock - passed_both)
    only_ours = sorted(
        t
        for t, r in our_out.items()
        if r["outcome"] in PASSED and stock_out.get(t, {}).get("outcome") not in PASSED
    )
    return {
        "tests": len(set(stock_out) | set(our_out)),
        "passed_on_asyncio": len(passed_stock),
        "passed_on_both": len(passed_both),
        "ran_on_reactor": len(real),
        "ran_on_reactor_and_passed": len(real_both),
        "differences": [
            {
                "test": t,
                "asyncio": stock_out[t]["outcome"],
                "reactor": our_out.get(t, {}).get("outcome", "missing"),
                "detail": our_out.get(t, {}).get("detail", "")[-1500:],
            }
            for t in only_stock
        ],
        "passed_only_on_reactor": only_ours,
        # Neither loop passed these (and neither skipped them): the suite's own
        # trouble on this machine or Python, listed so it can be checked.
        "failed_on_both": {
            t: {"asyncio": r["outcome"], "reactor": our_out.get(t, {}).get("outcome")}
            for t, r in sorted(stock_out.items())
            if r["outcome"] not in (*PASSED, "skip")
            and our_out.get(t, {}).get("outcome") not in (*PASSED, "skip")
        },
    }


def main(suite: Suite, description: str, argv: list[str] | None = None) -> int:
    """The runner's command line: run the modules on both loops, report, write the JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("modules", nargs="*", help="test modules (default: all named)")
    parser.add_argument("--ci", action="store_true", help="run the CI subset of modules")
    parser.add_argument("--jobs", type=int, default=2, help="child processes at once (default 2)")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds per test (default 60)")
    parser.add_argument(
        "--module-limit", type=float, default=900.0, help="seconds per module and loop"
    )
    parser.add_argument("--target", type=float, default=0.95, help="pass-rate target (0.95)")
    parser.add_argument("--out", help="the JSON results file (default conformance/results/...)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=["asyncio", "reactor"], help=argparse.SUPPRESS)
    parser.add_argument("--skip-file", help=argparse.SUPPRESS)
    suite.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        return child(suite, args)
    if not 1 <= args.jobs <= 8:
        parser.error("--jobs must be between 1 and 8")
    suite.prepare(args)
    wanted = args.modules or (suite.ci_modules if args.ci else suite.modules)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    available = suite.present(args)
    present = [m for m in wanted if m in available]
    absent = [m for m in wanted if m not in present]
    started = time.monotonic()
    jobs = [(m, loop) for m in present for loop in ("asyncio", "reactor")]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda j: run_module(suite, j[0], j[1], args), jobs))
    runs = {job: result for job, result in zip(jobs, done, strict=True)}
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "modules": {},
        "absent_in_this_python": absent,
    }
    totals = {"passed_on_asyncio": 0, "passed_on_both": 0, "ran_on_reactor": 0}
    totals["ran_on_reactor_and_passed"] = 0
    print(f"Python {report['python']}: {suite.title} on asyncio's loop and reactor.aio")
    print(f"{'module':22} {'tests':>6} {'asyncio':>8} {'both':>6} {'rate':>7}  on-reactor")
    for module in present:
        stock, ours = runs[(module, "asyncio")], runs[(module, "reactor")]
        result = compare(stock, ours)
        result["seconds"] = {"asyncio": stock["seconds"], "reactor": ours["seconds"]}
        result["fixture_errors"] = {
            "asyncio": stock["fixture_errors"],
            "reactor": ours["fixture_errors"],
        }
        result["skipped_on_both"] = sum(
            1
            for t, r in ours["outcomes"].items()
            if r["outcome"] == "skip" and stock["outcomes"].get(t, {}).get("outcome") == "skip"
        )
        report["modules"][module] = result
        for key in totals:
            totals[key] += result[key]
        rate = result["passed_on_both"] / max(result["passed_on_asyncio"], 1)
        real = f"{result['ran_on_reactor_and_passed']}/{result['ran_on_reactor']}"
        print(
            f"{module:22} {result['tests']:6} {result['passed_on_asyncio']:8} "
            f"{result['passed_on_both']:6} {rate:7.1%}  {real}"
        )
    rate = totals["passed_on_both"] / max(totals["passed_on_asyncio"], 1)
    real_rate = totals["ran_on_reactor_and_passed"] / max(totals["ran_on_reactor"], 1)
    report["totals"] = dict(totals, rate=rate, rate_on_reactor=real_rate)
    report["seconds"] = round(time.monotonic() - started, 1)
    print(
        f"{'total':22} {'':6} {totals['passed_on_asyncio']:8} {totals['passed_on_both']:6} "
        f"{rate:7.1%}  {totals['ran_on_reactor_and_passed']}/{totals['ran_on_reactor']} "
        f"({real_rate:.1%}) in {report['seconds']} s"
    )
    for module in present:
        for diff in report["modules"][module]["differences"]:
            print(
                f"  differs: {diff['test']}: asyncio {diff['asyncio']}, reactor {diff['reactor']}"
            )
        for which in ("asyncio", "reactor"):
            for err in report["modules"][module]["fixture_errors"][which]:
                print(f"  fixture error on {which}: {err['test']}")
    if absent:
        print("not in this Python:", ", ".join(absent))
    out = Path(args.out) if args.out else HERE / "results" / f"{suite.name}-{version}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print("wrote", out)
    return 0 if rate >= args.target else 1
