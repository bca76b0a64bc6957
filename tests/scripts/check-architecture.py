#!/usr/bin/env python3
"""Architecture rules `make lint` enforces:

1. Crate arrows run one way: no crate with a binary (operator, proxy, CLI, bridges) depends on
   another such crate. Only the test crate (gatehouse-tests) may, for metric names.
2. No module cycles: inside each crate, no top-level module imports (through `crate::…`) a module
   that imports it back, directly or through others.

Prints every violation and exits 1, or prints a one-line summary and exits 0.
"""
import json
import os
import re
import subprocess
import sys

ALLOWED_TO_DEPEND_ON_BINARIES = {"gatehouse-tests"}
# crds has a binary (crdgen) but is the bottom of the graph: it is a library first.
LIBRARIES_WITH_TOOLS = {"gatehouse-crds"}


def metadata():
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def crate_arrows(meta):
    packages = meta["packages"]
    binaries = {
        p["name"] for p in packages
        if p["name"] not in LIBRARIES_WITH_TOOLS and p["name"] not in ALLOWED_TO_DEPEND_ON_BINARIES
        and any("bin" in t["kind"] for t in p["targets"])
    }
    problems = []
    for p in packages:
        if p["name"] in ALLOWED_TO_DEPEND_ON_BINARIES:
            continue
        for d in p["dependencies"]:
            if d["name"] in binaries:
                problems.append(f"crate {p['name']} depends on binary crate {d['name']}: "
                                f"move what they share into a library crate")
    return problems, binaries


USE_CRATE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)


def modules_of(src):
    """Top-level module name -> list of its files."""
    mods = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry in ("main.rs", "lib.rs") or entry == "bin":
            continue
        if entry.endswith(".rs"):
            mods.setdefault(entry[:-3], []).append(path)
        elif os.path.isdir(path):
            for root, _, files in os.walk(path):
                mods.setdefault(entry, []).extend(
                    os.path.join(root, f) for f in files if f.endswith(".rs"))
    # Files included with #[path] (e.g. access_tests.rs) belong to the module that includes them.
    for name, files in list(mods.items()):
        for f in files:
            for inc in re.findall(r'#\[path\s*=\s*"([^"]+)"\]', open(f).read()):
                inc_name = os.path.splitext(os.path.basename(inc))[0]
                if inc_name in mods and inc_name != name:
                    files.extend(mods.pop(inc_name))
    return mods


def strip_comments(text):
    return re.sub(r"//[^\n]*", "", text)


def imports(files, known):
    found = set()
    for f in files:
        text = strip_comments(open(f).read())
        found.update(m for m in USE_CRATE.findall(text) if m in known)
        for group in USE_GROUP.findall(text):
            for item in re.split(r"[,\s]+", re.sub(r"\{[^{}]*\}", "", group)):
                item = item.split("::")[0].strip()
                if item in known:
                    found.add(item)
    return found


def find_cycle(graph):
    state = {}
    stack = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def module_cycles(meta):
    problems = []
    for p in meta["packages"]:
        src = os.path.join(os.path.dirname(p["manifest_path"]), "src")
        if not os.path.isdir(src):
            continue
        mods = modules_of(src)
        graph = {m: imports(files, mods.keys()) - {m} for m, files in mods.items()}
        while True:
            cycle = find_cycle(graph)
            if not cycle:
                break
            problems.append(f"crate {p['name']}: module cycle " + " -> ".join(cycle))
            # Report each cycle once: cut its first edge and look again.
            graph[cycle[0]].discard(cycle[1])
    return problems


def main():
    meta = metadata()
    arrows, binaries = crate_arrows(meta)
    cycles = module_cycles(meta)
    for problem in arrows + cycles:
        print(f"architecture: {problem}", file=sys.stderr)
    if arrows or cycles:
        return 1
    print(f"architecture: {len(meta['packages'])} crates, binary crates {sorted(binaries)} "
          "depend on no other binary crate; no module cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
