"""`make bench`: run every benchmark that exists and print its figures (never fails on them)."""
from __future__ import annotations

import importlib
import sys
import traceback

BENCHES = ["bench.bench_paper", "bench.bench_monitor", "bench.bench_agent", "bench.bench_replay", "bench.bench_mcp",
           "bench.bench_news"]


def main() -> int:
    for name in BENCHES:
        print(f"\n=== {name} ===", flush=True)
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            print(f"(not available: {exc.name})")
            continue
        try:
            module.main()
        except Exception:  # noqa: BLE001 - one broken bench must not hide the others' figures
            traceback.print_exc(file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
