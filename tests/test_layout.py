"""The import rules of docs/architecture.md, read from the source with `ast`.

rlhf_train's packages are the loop's stages and may import only the stages before them
(or their own level, without a cycle): a newcomer can then read the tree in the loop's
order. `db` knows no torch, transformers or rlhf_train; rlhf_train knows no Streamlit; the
app knows no torch or transformers. Imports inside functions count as well: a lazy import
is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The loop's order: a package may import packages of its own level or lower.
LEVELS = {
    "kernel": 0,
    "models": 1,
    "prompts": 1,
    "runs": 1,
    "judgments": 1,
    "export": 2,
    "reward": 3,
    "rounds": 4,
    "sft": 4,
    "policy": 4,
    "evaluation": 5,
    "loop": 6,
    "cli": 7,
}


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, with `from A import B` also giving A.B (B may be a
    submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _stage(module: str) -> str | None:
    """The stage package of an rlhf_train module name; "kernel" for top-level modules."""
    parts = module.split(".")
    if parts[0] != "rlhf_train" or len(parts) < 2:
        return None
    return parts[1] if (ROOT / "rlhf_train" / parts[1]).is_dir() else "kernel"


def _stage_of_file(path: Path) -> str:
    relative = path.relative_to(ROOT / "rlhf_train")
    return relative.parts[0] if len(relative.parts) > 1 else "kernel"


def _stage_graph() -> dict[str, dict[str, list[str]]]:
    """stage -> imported stage -> the files that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in _sources("rlhf_train"):
        source = _stage_of_file(path)
        for name in _imports(path):
            target = _stage(name)
            if target is not None and target != source:
                graph[source][target].append(str(path.relative_to(ROOT)))
    return graph


def _third_party(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in _sources(package):
        for name in sorted(_imports(path)):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_every_stage_package_is_in_the_loop_order() -> None:
    stages = {path.name for path in (ROOT / "rlhf_train").iterdir() if path.is_dir()}
    stages.discard("__pycache__")
    assert stages == set(LEVELS) - {"kernel"}


def test_stages_import_only_earlier_stages() -> None:
    graph = _stage_graph()
    backwards = [
        f"{source} -> {target} ({', '.join(sorted(set(files)))})"
        for source, targets in graph.items()
        for target, files in targets.items()
        if LEVELS[target] > LEVELS[source]
    ]
    assert not backwards, "imports against the loop's order:\n" + "\n".join(backwards)


def _assert_acyclic(edges: dict[str, set[str]]) -> None:
    """Depth-first search; a node met again on its own path closes a cycle."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for target in sorted(edges.get(node, ())):
            visit(target, [*path, node])
        done.add(node)

    for node in sorted(edges):
        visit(node, [])


def test_the_stage_graph_has_no_cycle() -> None:
    _assert_acyclic({stage: set(targets) for stage, targets in _stage_graph().items()})


def test_no_cycle_between_modules_of_a_stage() -> None:
    """Within a stage too: the old optimize ↔ optimize_ppo ↔ optimize_trl circle."""
    modules = {}
    for path in _sources("rlhf_train"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = {n for n in _imports(path) if n.startswith("rlhf_train.")}
    _assert_acyclic(
        {
            name: {target for target in imported if target in modules and target != name}
            for name, imported in modules.items()
        }
    )


def test_db_knows_no_torch_transformers_or_rlhf_train() -> None:
    assert _third_party("db", ("torch", "transformers", "rlhf_train", "streamlit")) == []


def test_rlhf_train_knows_no_streamlit() -> None:
    assert _third_party("rlhf_train", ("streamlit",)) == []


def test_the_app_knows_no_torch_or_transformers() -> None:
    assert _third_party("annotate_app", ("torch", "transformers")) == []


def test_the_checks_see_a_forbidden_import(tmp_path: Path) -> None:
    """The reader finds lazy imports and `from` forms, so the rules above can fail."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def later():\n    import torch.nn\n    from rlhf_train.cli import main\n",
        encoding="utf-8",
    )
    assert {"torch.nn", "rlhf_train.cli", "rlhf_train.cli.main"} <= _imports(sample)
    assert _stage("rlhf_train.cli.main") == "cli" and _stage("rlhf_train.errors") == "kernel"
    with pytest.raises(AssertionError, match="cycle: a -> b -> a"):
        _assert_acyclic({"a": {"b"}, "b": {"a"}})
