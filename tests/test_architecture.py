"""The package map in docs/architecture.md is whole, and the modules stay small and acyclic.

Why: the map is how a newcomer finds where a thing lives; a module added without a row
makes it lie. Import cycles (also those behind ``TYPE_CHECKING`` or through a package's
``__init__``) are where a design's layers stop meaning anything, and a module past 400
lines is where two jobs usually share a file.
"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "noise_scale"
MAX_LINES = 400


def modules() -> dict[str, pathlib.Path]:
    """Every module by dotted name (a package by its own name, for its ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def mapped() -> set[str]:
    """The modules docs/architecture.md names: ``pkg/mod.py`` from its table's rows."""
    names, where = set(), ""
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[0] or "x") <= {"-"}:
            continue
        if cells[0]:
            where = "" if cells[0] == "root" else cells[0].strip("`").split("`")[0]
        names |= {where + m for m in re.findall(r"`([\w/]+\.py)`", cells[1])}
    return names


def test_every_module_is_on_the_map_and_nothing_else():
    files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if p.name != "__init__.py" and p.parent.name != "configs"}
    on_map = mapped()
    assert not files - on_map, f"add to docs/architecture.md: {sorted(files - on_map)}"
    assert not on_map - files, f"docs/architecture.md names what is gone: {sorted(on_map - files)}"


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these (a module over {MAX_LINES} lines holds two jobs): {long}"


def imports(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
    """What a module imports from the package, anywhere in it (a function's own import
    and one behind TYPE_CHECKING count: they are the same dependency, paid later), and the
    packages whose ``__init__`` each of those runs first, less the module's own packages
    (Python has begun those before the module: a submodule's import of a sibling is not a
    cycle through its package's ``__init__``)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            parts = t.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
    parts = name.split(".")
    own = {".".join(parts[:i]) for i in range(1, len(parts) + (1 if is_package else 0))}
    return found - own - {name}


def test_no_import_cycle():
    known = modules()
    graph = {n: imports(p, n, set(known)) for n, p in known.items()}
    # a package's __init__ is run before any of its modules: importing a.b imports a
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle(tmp_path):
    """The control: two modules importing each other (one behind TYPE_CHECKING) are found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from noise_scale import b\n")
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from noise_scale import a\n")
    known = {"noise_scale", "noise_scale.a", "noise_scale.b"}
    assert "noise_scale.b" in imports(a, "noise_scale.a", known)
    assert "noise_scale.a" in imports(b, "noise_scale.b", known)
