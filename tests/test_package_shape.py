"""The package's shape (docs/design.md, Package layout): stages are leaves, library modules are shared.

A stage module is one a workflow script calls (`workflow/scripts/*.py`); everything else in `src/mtcxr`
is library. No module imports a stage module but the stage itself and the application modules that
drive stages from the command line (`cli`, `preflight`): a stage reads what another stage wrote
through a library reader, never through the other stage's code.
"""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src/mtcxr"
APPLICATION = {"mtcxr.cli", "mtcxr.preflight"}
MAX_PARAMETERS = 10


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.AST, known: set[str]) -> set[str]:
    """Every mtcxr module a file imports, at the top or inside a function (`from mtcxr.x import y`
    counts `mtcxr.x.y` where that is a module)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mtcxr")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtcxr"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names} & known
    return found & known


def modules() -> dict[str, ast.AST]:
    return {module_name(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def stage_modules(known: set[str]) -> set[str]:
    stages = set()
    for script in (REPO / "workflow/scripts").glob("*.py"):
        stages |= imported_modules(ast.parse(script.read_text()), known)
    return stages - {"mtcxr.logs"}


def test_every_workflow_script_calls_a_stage_module():
    known = set(modules())
    stages = stage_modules(known)
    assert {"mtcxr.data.ingest", "mtcxr.models.project", "mtcxr.retrieval.index", "mtcxr.xtra.memory"} <= stages
    assert all(name.count(".") == 2 for name in stages), "a stage module lives in a concern's subpackage"


def test_no_module_imports_another_stage():
    trees = modules()
    stages = stage_modules(set(trees))
    offences = [
        f"{name} imports the stage module {imported}"
        for name, tree in trees.items()
        if name not in APPLICATION
        for imported in imported_modules(tree, set(trees)) & stages
        if imported != name
    ]
    assert not offences, "\n".join(offences)


def test_no_public_function_takes_more_than_ten_parameters():
    offences = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                count = len([n for n in names if n not in ("self", "cls")])
                if count > MAX_PARAMETERS:
                    offences.append(f"{name}.{node.name}: {count} parameters")
    assert not offences, "settings that travel together travel as one object:\n" + "\n".join(offences)


def test_the_checks_would_catch_an_offence():
    """The import reader sees a lazy import inside a function, and the parameter count sees eleven."""
    tree = ast.parse("def f():\n    from mtcxr.xtra import memory\n")
    assert imported_modules(tree, {"mtcxr.xtra", "mtcxr.xtra.memory"}) == {"mtcxr.xtra", "mtcxr.xtra.memory"}
    eleven = ast.parse("def g(" + ", ".join(f"a{i}" for i in range(11)) + "): pass").body[0]
    assert len(eleven.args.args) > MAX_PARAMETERS


# Stages that never need torch (docs/design.md, Performance principles): importing it costs a job about 4 CPU s
# of its few seconds, and the tiny run starts dozens of such jobs.
TORCH_FREE_STAGES = [
    "mtcxr.retrieval.evaluate",
    "mtcxr.retrieval.index",
    "mtcxr.generation.score",
    "mtcxr.labels.extract",
    "mtcxr.summary.summarize",
    "mtcxr.summary.figures",
]


def test_stages_that_need_no_torch_do_not_import_it():
    script = "import importlib, sys\n" + "".join(f"importlib.import_module({name!r})\n" for name in TORCH_FREE_STAGES)
    script += "print(sorted(name for name in ('torch', 'open_clip') if name in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
