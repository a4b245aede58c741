"""The shape of the house: figures about lungsound's module structure, printed as a table.

    python benchmarks/house.py [--root lungsound] [--json]

Counted from the source alone (the `ast` of every `.py` file under the package, nothing imported or run):

- rooms: packages (folders with `__init__.py`) and loose modules at the package top;
- floors: the longest chain of packages, each importing the next (cycles collapsed), i.e. how many layers deep the
  data flow runs;
- circles: import cycles between files and between packages (strongly connected groups of more than one);
- arrows back up: imports from a package to one that comes later in the data flow (`LAYERS`), such as inference
  importing the training engine;
- function-level imports: `import lungsound...` / `from lungsound...` inside a function body, split into `cli/` and
  the library;
- the largest files by line count.

The order (`LAYERS`) is the one `docs/architecture.md` draws, as dependencies: a stage comes after the stages it
uses (the trainer scores epochs and logs to MLflow, so evaluation and tracking come before training; the vocoder's
loop runs on the engine's parts, so generation comes after it); a name absent from it counts as the foundation
(layer 0).
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import defaultdict
from pathlib import Path

# The data flow, earliest first; a module may import from its own layer or earlier ones.
LAYERS = [
    ("errors", "storage", "documents", "limits", "registry", "audio", "store_retry"),
    ("features",),  # fbank and SpecAugment: transforms of a waveform or a spectrogram, nothing of the data layer
    ("data",),  # recordings, cycles and the feature cache (which applies the features to a data root)
    ("config", "config_rules"),  # typed configs check values against the data's vocabularies (splits, formats, domains)
    ("models",),
    ("methods",),
    ("metrics", "evaluation", "calibration"),  # the engine's evaluation: the trainer scores every epoch
    ("tracking",),  # what the engine logs to: MLflow, below the engine that calls it
    ("training",),
    ("generation",),  # the vocoder's loop runs on the engine's parts (devices, DDP, training state)
    ("inference", "explain"),
    ("sharing", "external"),
    ("compare", "paired", "published", "reports", "device_ood", "results"),
    ("grid", "sweep", "sweep_backends", "sweeps"),
    ("cli",),
]


def layer_of(group: str) -> int:
    for i, names in enumerate(LAYERS):
        if group in names:
            return i
    return 0


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def group_of(module: str) -> str:
    """`lungsound.inference.predictor` -> `inference`; a loose module is its own group."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(tree: ast.AST, module: str, is_package: bool):
    """Yield (imported name, inside a function, first name of its statement) for every import of the package's own
    modules."""
    top = module.split(".")[0]

    def visit(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == top:
                        yield alias.name, in_function, True
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = anchor[: len(anchor) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] == top:
                    for i, alias in enumerate(child.names):  # the statement counts once
                        yield f"{base}.{alias.name}", in_function, i == 0
            yield from visit(child, inside)

    yield from visit(tree, False)


def resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that `name` (a module or a name inside one) refers to."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; groups of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


def longest_chain(graph: dict[str, set[str]]) -> int:
    """Nodes on the longest path of the graph with each cycle collapsed to one node."""
    comp: dict[str, str] = {}
    for group in strongly_connected(graph):
        for member in group:
            comp[member] = group[0]
    dag: dict[str, set[str]] = defaultdict(set)
    for a, targets in graph.items():
        for b in targets:
            ca, cb = comp.get(a, a), comp.get(b, b)
            if ca != cb:
                dag[ca].add(cb)
    memo: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in memo:
            memo[node] = 1 + max((depth(n) for n in dag.get(node, ())), default=0)
        return memo[node]

    nodes = {comp.get(n, n) for n in graph}
    return max((depth(n) for n in nodes), default=0)


def package_graph(file_graph: dict[str, set[str]]) -> tuple[dict[str, set[str]], list[str]]:
    """The imports between packages (loose modules count as their own) and the file imports that run back up."""
    groups: dict[str, set[str]] = defaultdict(set)
    back_up = []
    for module, targets in file_graph.items():
        for target in targets:
            a, b = group_of(module), group_of(target)
            if a != b and "__init__" not in (a, b) and "__main__" not in (a, b):
                groups[a].add(b)
                if layer_of(b) > layer_of(a):
                    back_up.append(f"{module} -> {target}")
    return dict(groups), sorted(back_up)


def measure(root: Path) -> dict:
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    modules = {module_name(p, root): p for p in files}
    file_graph: dict[str, set[str]] = {m: set() for m in modules}  # top-of-file imports
    all_graph: dict[str, set[str]] = {m: set() for m in modules}  # function-level ones too
    inline = {"cli": 0, "library": 0}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for name, in_function, first in imports_of(tree, module, path.name == "__init__.py"):
            target = resolve(name, set(modules))
            if target is None or target == module:
                continue
            all_graph[module].add(target)
            if not in_function:
                file_graph[module].add(target)
            elif first:
                inline["cli" if group_of(module) == "cli" else "library"] += 1
    groups, back_up = package_graph(file_graph)
    all_groups, all_back_up = package_graph(all_graph)
    packages = sorted({group_of(m) for m, p in modules.items() if p.name == "__init__.py" and m.count(".") == 1})
    loose = sorted(group_of(m) for m, p in modules.items() if m.count(".") == 1 and p.name != "__init__.py")
    sizes = sorted(((len(p.read_text(encoding="utf-8").splitlines()), str(p)) for p in files), reverse=True)
    return {
        "files": len(files),
        "packages": packages,
        "loose_modules": loose,
        "floors": longest_chain(dict(groups)),
        "file_cycles": strongly_connected(file_graph),
        "package_cycles": strongly_connected(groups),
        "arrows_back_up": back_up,
        "file_cycles_with_function_imports": strongly_connected(all_graph),
        "package_cycles_with_function_imports": strongly_connected(all_groups),
        "arrows_back_up_with_function_imports": all_back_up,
        "function_level_imports": inline,
        "largest_files": [f"{path} ({lines})" for lines, path in sizes[:5]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "lungsound"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = measure(Path(args.root).resolve())
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"files                    {figures['files']}")
    print(f"rooms                    {len(figures['packages'])} packages + {len(figures['loose_modules'])} loose modules "
          f"({', '.join(figures['loose_modules'])})")
    print(f"floors                   {figures['floors']}")
    for suffix, label in (("", "top-of-file imports"), ("_with_function_imports", "with function-level imports")):
        print(f"circles, files ({label}): {len(figures['file_cycles' + suffix])}"
              + "".join(f"\n    {' <-> '.join(c)}" for c in figures["file_cycles" + suffix]))
        print(f"circles, packages ({label}): {len(figures['package_cycles' + suffix])}"
              + "".join(f"\n    {' <-> '.join(c)}" for c in figures["package_cycles" + suffix]))
        print(f"arrows back up ({label}): {len(figures['arrows_back_up' + suffix])}"
              + "".join(f"\n    {a}" for a in figures["arrows_back_up" + suffix]))
    inline = figures["function_level_imports"]
    print(f"function-level imports   {inline['library']} in the library, {inline['cli']} in cli/")
    print("largest files            " + "\n                         ".join(figures["largest_files"]))


if __name__ == "__main__":
    main()
