#!/usr/bin/env python3
"""Checks that the daemon's build and the demo's (and the tests') turn on
the same features in the crates both use.

Where they differ, `cargo build --release` after `cargo run --release
--example demo` compiles every crate that differs, and all that depend on
them, a second time (78 crates, 7 minutes on this machine). Cargo.toml
turns the dev-dependencies' features on for the daemon too; this says
which one is missing when a dependency changes.

    python3 scripts/features.py     # exit 1 and the differences, if any
"""

import re
import subprocess
import sys


def features(*edges):
    out = subprocess.run(
        ["cargo", "tree", "--locked", "--prefix", "none", "-f", "{p} [{f}]", *edges],
        check=True, capture_output=True, text=True,
    ).stdout
    crates = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+ v\S+)(?: \([^)]*\))? \[([^\]]*)\]", line.strip())
        if m:
            crates.setdefault(m.group(1), set()).update(f for f in m.group(2).split(",") if f)
    return crates


def main():
    daemon = features("-e", "no-dev")
    everything = features()
    differ = [(c, sorted(everything[c] - f), sorted(f - everything[c]))
              for c, f in sorted(daemon.items()) if c in everything and everything[c] != f]
    for crate, more, fewer in differ:
        print(f"{crate}: the demo and tests add {more}" + (f", lack {fewer}" if fewer else ""))
    if differ:
        print(f"{len(differ)} crates are built twice; turn these features on in Cargo.toml's "
              "[dependencies] (or [build-dependencies] for proc-macro crates)", file=sys.stderr)
        sys.exit(1)
    print(f"features: the daemon and the demo agree on all {len(daemon)} crates")


if __name__ == "__main__":
    main()
