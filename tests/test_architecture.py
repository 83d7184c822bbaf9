"""The package's shape, checked (docs/ARCHITECTURE.md is the prose of these rules).

- Every import of value_harms.* (module top or inside a function: hidden edges count too) goes to a
  package the importer may depend on (ALLOWED below); nothing imports upward.
- Only entry points import the CLI helpers (value_harms.runtime.cli): the scripts train.py, evaluate.py,
  analyze.py and the tools.
- No import cycle between modules.
- Size: a file over 400 code lines, or a function over 60, says why in a `# size:` comment at its top
  (code lines: not blank, not comments, not docstrings).
- Every module is described in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "value_harms"

# package (first component under value_harms) -> packages it may import (besides itself).
# Lowest first: errors / metrics / leaf config modules, the HTTP layer (net), core, store, config, runtime,
# models + data, alignment + scoring, train, eval, analysis (never train or eval), tools (anything).
LEAVES = {"errors", "metrics", "config.paths", "config.access"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "metrics": set(),
    "config.paths": set(),
    "config.access": set(),
    "net": {"errors"},
    "core": {"errors", "config.paths"},
    "store": {"errors", "core"},
    "config": {"errors", "core", "store"},
    "runtime": {"errors", "core", "config", "store", "net"},
    "models": {"errors", "core", "config", "store"},
    "data": {"errors", "core", "config"},
    "alignment": {"errors", "core", "config", "data"},
    "scoring": {"errors", "core", "config", "store", "metrics", "net"},
    "train": {"errors", "core", "config", "store", "runtime", "models", "data", "alignment"},
    "eval": {
        "errors",
        "core",
        "config",
        "store",
        "runtime",
        "models",
        "data",
        "alignment",
        "scoring",
        "train",
        "metrics",
        "net",
    },
    "analysis": {"errors", "core", "config", "store", "runtime", "metrics"},
    "tools": {"*"},
    # `python -m value_harms.<command>` aliases of the tools
    "status": {"tools"},
    "estimate": {"tools"},
    "demo": {"tools"},
    "power": {"tools"},
    "study": {"tools"},
    "judge_check": {"tools"},
    "serve": {"tools"},
    "profiles": {"core"},
    "(root)": set(),  # value_harms/__init__.py: the version only
}
# leaves any module may import: the error classes, the config dir's location and the config getter
ANYONE = {"errors", "config.paths", "config.access"}
ENTRY_PACKAGES = {"tools"}  # besides the scripts at the repository root
MAX_FILE, MAX_FUNCTION = 400, 60


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The dependency unit of a module: a leaf module, else its first package under value_harms."""
    rest = module.split(".")[1:]
    if not rest:
        return "(root)"
    two = ".".join(rest[:2])
    return two if two in LEAVES else rest[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every value_harms import in the file, wherever it is."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("value_harms"):
            for a in node.names:  # `from value_harms.x import y`: y may be a module
                sub = f"{node.module}.{a.name}"
                is_mod = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    PKG.parent / Path(*sub.split("."))
                ).is_dir()
                out.append((node.lineno, sub if is_mod else node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("value_harms")]
    return out


MODULES = sorted(PKG.rglob("*.py"))


def test_every_import_points_down():
    bad = []
    for path in MODULES:
        src = _unit(_module(path))
        allowed = ALLOWED.get(src)
        assert allowed is not None, f"{path.relative_to(ROOT)}: package {src!r} has no rule in ALLOWED"
        for line, target in _imports(path):
            dst = _unit(target)
            if dst in (src, "(root)") or dst in ANYONE or "*" in allowed or dst in allowed:
                continue
            bad.append(f"{path.relative_to(ROOT)}:{line} ({src}) imports {target} ({dst})")
    assert not bad, "imports against the layering (docs/ARCHITECTURE.md):\n" + "\n".join(bad)


def test_analysis_never_reaches_training_or_evaluation():
    for path in (PKG / "analysis").rglob("*.py"):
        targets = [t for _, t in _imports(path)]
        assert not [t for t in targets if _unit(t) in ("train", "eval", "models", "scoring")], path


def test_only_entry_points_import_the_cli():
    importers = [
        p
        for p in MODULES
        if any(t == "value_harms.runtime.cli" or t.startswith("value_harms.runtime.cli.") for _, t in _imports(p))
    ]
    assert all(_unit(_module(p)) in ENTRY_PACKAGES for p in importers), importers
    scripts = {p.name for p in ROOT.glob("*.py") if "value_harms.runtime.cli" in p.read_text()}
    assert scripts == {"train.py", "evaluate.py", "analyze.py"}


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    known = {_module(p) for p in MODULES}
    for p in MODULES:
        graph[_module(p)] = {t for _, t in _imports(p) if t in known and t != _module(p)}
    # a package's __init__ importing its own submodules is how it re-exports them: not a cycle edge back
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if n.startswith(m + "."):
                continue
            if state.get(n) == 1:
                if not m.startswith(n + "."):
                    cycles.append(" -> ".join([*stack[stack.index(n) :], n]) if n in stack else f"{m} -> {n}")
            elif state.get(n) is None:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(graph):
        if state.get(m) is None:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _code_lines(src: str) -> set[int]:
    tree = ast.parse(src)
    doc: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body:
            b = n.body[0]
            if isinstance(b, ast.Expr) and isinstance(getattr(b, "value", None), ast.Constant):
                doc.update(range(b.lineno, b.end_lineno + 1))
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENCODING,
        tokenize.ENDMARKER,
    }
    lines: set[int] = set()
    for t in tokenize.generate_tokens(io.StringIO(src).readline):
        if t.type not in skip:
            lines.update(ln for ln in range(t.start[0], t.end[0] + 1) if ln not in doc)
    return lines


def test_sizes_are_small_or_explained():
    over = []
    for path in MODULES:
        src = path.read_text()
        lines = src.splitlines()
        code = _code_lines(src)
        if len(code) > MAX_FILE and not any(ln.startswith("# size:") for ln in lines[:40]):
            over.append(f"{path.relative_to(ROOT)}: {len(code)} code lines, no '# size:' reason at its top")
        for n in ast.walk(ast.parse(src)):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                k = sum(1 for ln in code if n.lineno <= ln <= n.end_lineno)
                head = "\n".join(lines[n.lineno - 1 : n.lineno + 25])
                if k > MAX_FUNCTION and "# size:" not in head:
                    over.append(f"{path.relative_to(ROOT)}:{n.lineno} {n.name}: {k} code lines, no '# size:' reason")
    assert not over, "\n".join(over)


def test_every_module_is_in_the_architecture_doc():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [
        str(p.relative_to(PKG)) for p in MODULES if p.name != "__init__.py" and str(p.relative_to(PKG)) not in doc
    ]
    assert not missing, f"modules without a line in docs/ARCHITECTURE.md: {missing}"


@pytest.mark.parametrize("rule", ["store", "core", "metrics", "errors"])
def test_the_lowest_layers_stay_low(rule):
    """The issue's own examples, spelled out: core, metrics and errors import nothing else of the package
    (core: only the config dir's location), store only errors and core."""
    for path in (PKG / rule).rglob("*.py") if (PKG / rule).is_dir() else [PKG / f"{rule}.py"]:
        units = {_unit(t) for _, t in _imports(path)} - {rule, "(root)"}
        assert units <= ALLOWED[rule], (path, units)


def _private_uses(src: str, own: str, where: str) -> list[str]:
    """Where the source of module `own` reaches a `_private` name of another module of the package:
    `from value_harms.x import _y` (module top or inside a function) and `x._y` where `x` names a module of the
    package (`import value_harms.x as x`, `from value_harms import x`, `value_harms.x._y`). Dunder names
    (`__version__`) are public; `__future__` is not the package."""
    modules: dict[str, str] = {}  # local name -> module of the package it names
    out = []
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("value_harms"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in KNOWN_MODULES:
                    modules[a.asname or a.name] = sub
                elif a.name.startswith("_") and not a.name.startswith("__") and node.module != own:
                    out.append(f"{where}:{node.lineno} imports {a.name} from {node.module}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("value_harms"):
                    modules[a.asname or "value_harms"] = a.name if a.asname else "value_harms"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            head, _, rest = ast.unparse(node.value).partition(".")
            target = modules.get(head)
            target = f"{target}.{rest}" if target and rest else target
            if target in KNOWN_MODULES and target != own:
                out.append(f"{where}:{node.lineno} uses {target}.{node.attr}")
    return out


KNOWN_MODULES = {_module(p) for p in MODULES}


def test_no_module_uses_another_modules_private_names():
    """What a module shares is public: no `_private` name crosses a module boundary (tests may use them)."""
    bad = [use for p in MODULES for use in _private_uses(p.read_text(), _module(p), str(p.relative_to(ROOT)))]
    assert not bad, "private names used across modules (make them public where they are defined):\n" + "\n".join(bad)


def test_the_private_name_check_sees_each_form():
    """The check above finds each way a private name is reached, and passes a module's own names and dunders."""
    code = (
        "from __future__ import annotations\n"
        "from value_harms import __version__\n"
        "from value_harms.eval.job import (\n    prepare_job,\n    _hidden,\n)\n"
        "from value_harms.eval.probe import _own\n"
        "from value_harms.models import loading\n"
        "import value_harms.store.files as F\n"
        "import value_harms.store.identity\n"
        "def f(self):\n"
        "    from value_harms.store.records import _migrated\n"
        "    return loading._tiny, F._UMASK, value_harms.store.identity._HASHES, loading.tiny_dict, self._x\n"
    )
    found = [f.split(" ", 1)[1] for f in _private_uses(code, "value_harms.eval.probe", "probe.py")]
    assert found == [
        "imports _hidden from value_harms.eval.job",
        "imports _migrated from value_harms.store.records",
        "uses value_harms.models.loading._tiny",
        "uses value_harms.store.files._UMASK",
        "uses value_harms.store.identity._HASHES",
    ], found
