#!/usr/bin/env python3
"""The crate's import structure: which module names which, the cycles
among them, the imports that point up the stack, and the largest functions.

Usage: python3 scripts/imports.py [src]        (a report on stdout)
       python3 scripts/imports.py --check [src] (exit 1 on a cycle or an upward import)

A module's floor is set by FLOORS below (the stack the README and lib.rs
describe); an import points up when it names a module on a higher floor
than its own. Tests (`#[cfg(test)] mod tests`) are left out: they may
reach anywhere.
"""
import os
import re
import sys

# Lowest floor first. A module takes the floor of the longest prefix
# listed here.
FLOORS = [
    # the ground floor: imports nothing of the crate
    ["secret", "localfile", "paths", "store", "job::confine", "job::template", "history", "health", "rate", "suggest"],
    ["config", "host"],
    ["logging", "job"],
    ["report"],
    ["events"],
    ["ftp"],
    ["upload"],
    # fed by events and receipts; what the daemon tells its supervisor
    # (systemd, the Windows service manager), which is handed the daemon
    # to run rather than importing it
    ["intake", "status", "webhook", "service"],
    ["run"],
    # the wiring: arguments, and the one place the daemon meets its supervisor
    ["cli", "main"],
]


def floor(module):
    best, rank = "", None
    for r, names in enumerate(FLOORS):
        for n in names:
            if (module == n or module.startswith(n + "::")) and len(n) > len(best):
                best, rank = n, r
    return rank


def modules(src):
    out = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib"):
                rel = rel[:-1]
            name = "::".join(rel) if rel else "crate"
            out[name] = path
    return out


def strip_tests(text):
    """Drops `#[cfg(test)] mod tests { ... }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
    while m:
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[: m.start()] + text[i:]
        m = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
    return text


def expand_use(body):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    body = re.sub(r"\s+", "", body)
    m = re.match(r"^(.*?)\{(.*)\}$", body)
    if not m:
        return [body]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    if cur:
        parts.append(cur)
    out = []
    for p in parts:
        out += [prefix + q for q in expand_use(p)]
    return out


def references(name, text):
    """Crate paths the module names, made absolute."""
    refs = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        refs += expand_use(m.group(1))
    refs += re.findall(r"\b(?:crate|super)(?:::\w+)+", text)
    me = name.split("::") if name != "crate" else []
    out = []
    for r in refs:
        parts = r.split("::")
        if parts[0] == "crate":
            out.append(parts[1:])
        elif parts[0] == "super":
            base = list(me)
            while parts and parts[0] == "super":
                base = base[:-1]
                parts = parts[1:]
            out.append(base + parts)
        elif parts[0] == "self":
            out.append(me + parts[1:])
    return out


def resolve(parts, mods):
    for n in range(len(parts), 0, -1):
        cand = "::".join(parts[:n])
        if cand in mods:
            return cand
    return None


def graph(src):
    mods = modules(src)
    edges = {}
    for name, path in mods.items():
        text = strip_tests(open(path, encoding="utf-8").read())
        for parts in references(name, text):
            target = resolve(parts, mods)
            if not target or target == name or name.startswith(target + "::"):
                # A module's own parents hold its declaration, not code it uses
                # (a `mod.rs` that only declares children).
                if target and target != name and mods.get(target, "").endswith("mod.rs"):
                    pass
                continue
            edges.setdefault(name, set()).add(target)
    return mods, edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def upward(edges):
    out = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            fa, fb = floor(a), floor(b)
            if fa is not None and fb is not None and fb > fa:
                out.append((a, b))
    return out


def largest_functions(mods, n=8):
    sizes = []
    for name, path in mods.items():
        lines = open(path, encoding="utf-8").read().split("\n")
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)(?:pub(?:\([^)]*\))? )?(?:async )?fn (\w+)", line)
            if not m or line.rstrip().endswith(";"):
                continue
            indent = m.group(1)
            for j in range(i + 1, len(lines)):
                if lines[j] == indent + "}":
                    sizes.append((j - i + 1, f"{name}::{m.group(2)}"))
                    break
    return sorted(sizes, reverse=True)[:n]


def main():
    args = [a for a in sys.argv[1:] if a != "--check"]
    src = args[0] if args else "src"
    mods, edges = graph(src)
    cyc, up = cycles(edges), upward(edges)
    unplaced = sorted(m for m in mods if floor(m) is None and m != "crate")
    print(f"modules: {len(mods)}, imports between modules: {sum(map(len, edges.values()))}")
    print(f"cycles: {len(cyc)}")
    for c in cyc:
        print("  " + " <-> ".join(c))
    print(f"imports that point up: {len(up)}")
    for a, b in up:
        print(f"  {a} -> {b}  (floor {floor(a)} -> {floor(b)})")
    if unplaced:
        print("modules on no floor: " + ", ".join(unplaced))
    print("largest functions (lines):")
    for size, f in largest_functions(mods):
        print(f"  {size:4} {f}")
    if "--check" in sys.argv and (cyc or up):
        sys.exit(1)


if __name__ == "__main__":
    main()
