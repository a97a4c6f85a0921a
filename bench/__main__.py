"""`python -m bench [NAME ...]`: run the named benchmarks (default: all), in this order."""

import importlib
import sys

ALL = ["cold", "concurrency", "startup", "loop", "overhead", "profile_tracking", "bookkeeping", "search_quality", "ensemble_gain",
       "search_features", "peers", "suggest_scale", "gpu"]

if __name__ == "__main__":
    for name in sys.argv[1:] or ALL:
        if name not in ALL:
            raise SystemExit(f"unknown benchmark {name!r}: one of {', '.join(ALL)}")
        print(f"== bench {name}", flush=True)
        importlib.import_module(f"bench.{name}").main([])
