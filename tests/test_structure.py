"""The house rules, checked mechanically on the source (README "Layout"):

* layers: every import of a ``tdd_video`` module points to its own package or to a LOWER layer;
* no two files import each other (no cycle in the file-level import graph);
* the package never imports the build tools (``tools/``), edits ``sys.path`` or defines ``main()``
  outside ``tdd_video/cli``;
* every ``docs/math.md §N`` citation resolves to a heading of docs/math.md, and no file points to a
  document outside the repository.
"""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tdd_video"

# low -> high; a module may import its own package and anything in a lower layer
LAYERS = [
    {"errors"},
    {"typed"},
    {"core", "zoo"},
    {"families", "lora", "data", "unet_checkpoint"},
    {"methods", "sampling"},
    {"eval"},
    {"engine"},
    {"apps"},
    {"cli"},
]


def _part(module: str) -> str | None:
    """'tdd_video.sampling.sample' -> 'sampling'; 'tdd_video' itself -> None."""
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[0] == "tdd_video" else None


def _layer(part: str) -> int:
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"tdd_video.{part} is in no layer of tests/test_structure.py")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file, module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _package_files() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "toy-" not in str(p))


def _resolve(module: str, known: set[str]) -> str | None:
    """The longest known module name that `module` starts with (a name imported from a module maps to it)."""
    while module:
        if module in known:
            return module
        module = module.rpartition(".")[0]
    return None


def test_imports_point_down_the_layers():
    bad = []
    for path in _package_files():
        me = _module_name(path)
        src = _part(me)
        if src is None:                      # tdd_video/__init__.py: lazy re-exports only
            continue
        for line, mod in _imports(path):
            dst = _part(mod)
            if mod.split(".")[0] == "tools":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports the build tools ({mod})")
            if dst is None or dst == src:
                continue
            if _layer(dst) >= _layer(src):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({src}, layer {_layer(src)}) imports {mod} "
                           f"({dst}, layer {_layer(dst)})")
    assert not bad, "imports that run up (or sideways across) the layers:\n" + "\n".join(sorted(set(bad)))


def test_no_two_files_import_each_other():
    files = _package_files()
    known = {_module_name(p) for p in files}
    graph = {m: set() for m in known}
    for path in files:
        me = _module_name(path)
        for _, mod in _imports(path):
            dst = _resolve(mod, known)
            if dst and dst != me and dst != "tdd_video":
                graph[me].add(dst)
    # Tarjan's strongly connected components
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"files that import each other (directly or in a loop): {cycles}"


def test_package_has_no_path_edits_and_mains_only_in_cli():
    bad = []
    for path in _package_files():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if "sys.path" in text:
            bad.append(f"{rel}: edits sys.path")
        tree = ast.parse(text)
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("main")]
        if mains and rel.parts[1] != "cli":
            bad.append(f"{rel}: defines {mains[0].name}() outside tdd_video/cli")
        if 'if __name__ == "__main__"' in text:
            bad.append(f"{rel}: runs as a script (entry points live in tdd_video/cli)")
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------------------------- docs
_SECTION = r"§\d+[a-z]?(?:\.\d+)?"
_CITATION = re.compile(rf"docs/math\.md\s+((?:{_SECTION}(?:[–-]{_SECTION[1:]})?)"
                       rf"(?:\s*,\s*{_SECTION}(?:[–-]{_SECTION[1:]})?)*)")


def _headings() -> set[str]:
    found = set()
    for line in (ROOT / "docs" / "math.md").read_text().splitlines():
        m = re.match(r"#+\s+§(\d+[a-z]?(?:\.\d+)?)\b", line)
        if m:
            found.add(m.group(1))
    return found


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    paths = [ROOT / f for f in out]
    return [p for p in paths if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".json", ".toml", ".txt", "")]


def test_every_math_citation_resolves():
    heads = _headings()
    assert {"1a", "1b", "1c", "3.3", "8", "12"} <= heads
    bad, seen = [], 0
    for path in _tracked_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for m in _CITATION.finditer(text):
            for ref in re.findall(r"\d+[a-z]?(?:\.\d+)?", m.group(1)):
                seen += 1
                if ref not in heads:
                    bad.append(f"{path.relative_to(ROOT)}: docs/math.md §{ref}")
    assert seen > 50, "the citation pattern found almost nothing: is the checker broken?"
    assert not bad, "citations without a heading in docs/math.md:\n" + "\n".join(bad)


def test_no_pointers_outside_the_repository():
    bad = []
    for path in _tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for word in ("shared/", "SPEC.md", "DESIGN.md"):
            if word in text:
                bad.append(f"{path.relative_to(ROOT)}: mentions {word}")
    assert not bad, "\n".join(bad)
