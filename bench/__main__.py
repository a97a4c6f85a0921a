"""`python -m bench [NAME ...]`: run the named benchmarks (default: all), in this order.
`python -m bench NAME --option ...` (or `python -m bench commits REV REV ...`): one benchmark with its
own arguments, as BENCHMARKS.md writes them."""

import importlib
import sys

ALL = ["cold", "concurrency", "startup", "loop", "overhead", "profile_tracking", "bookkeeping", "search_quality", "ensemble_gain",
       "search_features", "peers", "suggest_scale", "history", "gpu"]
WITH_ARGUMENTS = [*ALL, "commits"]  # commits compares the revisions it is given; not part of a plain run


def run(name: str, argv: list[str]) -> None:
    print(f"== bench {name}", flush=True)
    importlib.import_module(f"bench.{name}").main(argv)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] in WITH_ARGUMENTS and (args[0] == "commits" or any(a.startswith("-") for a in args[1:])):
        run(args[0], args[1:])
    else:
        for name in args or ALL:
            if name not in ALL:
                raise SystemExit(f"unknown benchmark {name!r}: one of {', '.join(ALL)}")
            run(name, [])
