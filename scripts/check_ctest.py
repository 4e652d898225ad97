#!/usr/bin/env python3
"""Checks that ctest really ran every Catch2 test case once (run after ctest, in scripts/run_tests.sh).

catch_discover_tests makes one ctest entry per test case; a name it mangles (it splits at ';') becomes
entries that match no test case, which Catch reports as "No tests ran" and ctest as a pass. This
script fails when
  - the Catch entries ctest knows differ from `torchqat_tests --list-test-names-only` (count or names),
  - the last ctest run (Testing/Temporary/LastTest.log) lacks an entry, or an entry's output does
    not show exactly one test case run (or the skip marker of tests/cpp/skip.h),
  - a test file includes Catch itself instead of tests/cpp/catch_torch.h (which puts torch first, so
    Catch's CHECK is not replaced by c10's aborting CHECK macro).

Usage: check_ctest.py BUILD_DIR
"""
import json
import pathlib
import re
import subprocess
import sys

BINARY = "torchqat_tests"  # tests/cpp/CMakeLists.txt
SKIP_MARKER = "TORCHQAT_SKIP"  # tests/cpp/skip.h, test_cuda.cpp


def catch_entries(build):
    """{ctest name: command} for the entries that run the Catch binary."""
    out = subprocess.run(["ctest", "--show-only=json-v1"], cwd=build, check=True, capture_output=True, text=True)
    entries = {}
    for test in json.loads(out.stdout)["tests"]:
        command = test.get("command") or []
        if command and pathlib.Path(command[0]).name == BINARY:
            entries[test["name"]] = command
    return entries


def listed_names(binary):
    out = subprocess.run([str(binary), "--list-test-names-only"], capture_output=True, text=True)
    # Catch returns the number of listed tests as its exit status; only a crash is negative.
    if out.returncode < 0:
        sys.exit(f"{binary} --list-test-names-only crashed: {out.returncode}\n{out.stderr}")
    return [line for line in out.stdout.splitlines() if line.strip()]


def last_run_outputs(build):
    """{ctest name: output} from the last ctest run's log."""
    log = pathlib.Path(build) / "Testing" / "Temporary" / "LastTest.log"
    if not log.exists():
        return None
    text = log.read_text(errors="replace")
    blocks = re.findall(r'^\d+/\d+ Test: (.*?)\n.*?^Output:\n-+\n(.*?)<end of output>', text, re.S | re.M)
    return {name: output for name, output in blocks}


def cases_run(output):
    """How many test cases Catch's console reporter says it ran, or None when it says nothing."""
    m = re.search(r"in (\d+) test cases?\)", output) or re.search(r"^test cases:\s+(\d+)", output, re.M)
    if m:
        return int(m.group(1))
    return 0 if "No tests ran" in output else None


TEST_DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "cpp"


def direct_catch_includes():
    """Test sources that include catch2/catch.hpp themselves (main.cpp, which has no torch, may)."""
    return [p.name for p in sorted(TEST_DIR.glob("test_*.cpp"))
            if re.search(r'^\s*#\s*include\s*<catch2/catch\.hpp>', p.read_text(), re.M)]


def main(build):
    outputs = last_run_outputs(build)  # first: any ctest call, --show-only too, rewrites the log
    entries = catch_entries(build)
    if not entries:
        sys.exit(f"ctest in {build} has no {BINARY} entries")
    binary = pathlib.Path(next(iter(entries.values()))[0])
    names = listed_names(binary)
    problems = [f"{name} includes <catch2/catch.hpp>; include \"catch_torch.h\" instead"
                for name in direct_catch_includes()]
    if len(names) != len(set(names)):
        problems.append("duplicate test case names in the binary")
    if len(entries) != len(names):
        problems.append(f"{len(entries)} ctest entries for {len(names)} Catch test cases")
    for name in sorted(set(names) - set(entries)):
        problems.append(f"test case without a ctest entry: {name!r}")
    for name in sorted(set(entries) - set(names)):
        problems.append(f"ctest entry that names no test case: {name!r}")
    if outputs is None:
        problems.append("no Testing/Temporary/LastTest.log: run ctest before this check")
        outputs = {}
    for name in sorted(entries):
        if name not in outputs:
            problems.append(f"not run by the last ctest: {name!r}")
            continue
        output = outputs[name]
        if SKIP_MARKER in output:
            continue
        n = cases_run(output)
        if n != 1:
            problems.append(f"{name!r} ran {n if n is not None else 'an unknown number of'} test cases, not 1")
    if problems:
        print("check_ctest: FAILED", *problems, sep="\n  ", file=sys.stderr)
        return 1
    skipped = sum(SKIP_MARKER in outputs.get(n, "") for n in entries)
    print(f"check_ctest: {len(entries)} ctest entries = {len(names)} Catch test cases, each ran once ({skipped} skipped)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
