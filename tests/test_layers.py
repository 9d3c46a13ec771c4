"""The layer order docs/architecture.md declares holds: no module imports a
module of a higher layer, and every module has a layer.

The table under "## Layers" in docs/architecture.md is the single source;
this test parses it, so the document cannot drift from the code without a
red test (and an edit to the README's prose cannot break it).
"""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("controller", "nsx_proxy", "nsx_cni", "topologies", "bench")


def declared_layers():
    """{path or folder/: layer number} from docs/architecture.md's table."""
    with open(os.path.join(ROOT, "docs", "architecture.md")) as fh:
        text = fh.read()
    section = text.split("## Layers", 1)[1].split("\n#", 1)[0]
    layers = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0][:1].isdigit():
            continue
        for path in re.findall(r"`([^`]+)`", cells[1]):
            layers[path] = int(cells[0].split()[0])
    return layers


def modules():
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in files:
                if name.endswith(".py") and not (name == "__init__.py" and
                                                 folder == os.path.join(ROOT, pkg)):
                    yield os.path.relpath(os.path.join(folder, name), ROOT)


def layer_of(path, layers):
    if path in layers:
        return layers[path]
    folders = [p for p in layers if p.endswith("/") and path.startswith(p)]
    if folders:
        return layers[max(folders, key=len)]
    return None


def imported_paths(path):
    """Project modules ``path`` imports, as file paths."""
    with open(os.path.join(ROOT, path)) as fh:
        tree = ast.parse(fh.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        if name.split(".")[0] not in PACKAGES:
            continue
        base = os.path.join(*name.split("."))
        for candidate in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.exists(os.path.join(ROOT, candidate)):
                out.add(candidate)
    return out - {path}


def test_every_module_has_a_layer():
    layers = declared_layers()
    missing = [p for p in modules() if layer_of(p, layers) is None]
    assert not missing, f"docs/architecture.md's layer table does not place {missing}"


def upward(layers, paths, imports_of):
    out = []
    for path in paths:
        mine = layer_of(path, layers)
        for dep in imports_of(path):
            theirs = layer_of(dep, layers)
            if theirs is not None and mine is not None and theirs > mine:
                out.append(f"{path} (layer {mine}) imports {dep} (layer {theirs})")
    return out


def test_imports_only_point_down():
    bad = upward(declared_layers(), list(modules()), imported_paths)
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import():
    """The rule is not vacuous: the compiler importing the app would be caught."""
    layers = declared_layers()
    real = imported_paths("controller/compiler.py")
    assert "controller/fragments.py" in real
    bad = upward(layers, ["controller/compiler.py"],
                 lambda _: real | {"controller/app.py"})
    assert bad == ["controller/compiler.py (layer 3) imports controller/app.py (layer 5)"]
