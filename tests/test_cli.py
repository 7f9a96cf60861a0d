import ast
import importlib.util
import json
import os
import pkgutil
import sys

import pytest

from nnunet_lightseg import output_folder, registry
from nnunet_lightseg.errors import OutputFolderError
from nnunet_lightseg.cli import main


def test_list_json_names_every_model_with_its_trainers(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in rows} == {s.name for s in registry.paper_specs()}  # baselines: list --baselines
    base = next(r for r in rows if r["model"] == "UltraLightUNet")
    assert {"nnUNetTrainerUltraLightUNet", "nnUNetTrainerUltraLightUNet_Paper"} <= set(base["trainers"])
    assert base["dims"] == [2, 3] and base["paper"]
    assert all(r["trainers"] for r in rows)


@pytest.mark.parametrize("patch", [[24, 32, 28], [64, 48]])
def test_profile_json_is_case_insensitive_and_complete(capsys, patch):
    assert main(["profile", "ultralightunet_t", "--in-channels", "2", "--classes", "3", "--patch", *map(str, patch),
                 "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "UltraLightUNet_T" and result["patch"] == patch
    assert result["in_channels"] == 2 and result["classes"] == 3
    assert result["params"] > 0 and result["gmac"] > 0 and result["latency_s"] > 0 and result["threads"] >= 1


def test_profile_reports_unknown_models_and_impossible_requests(capsys):
    assert main(["profile", "NoSuchNet", "--in-channels", "1", "--classes", "2", "--patch", "32", "32", "32"]) == 2
    assert "Known models" in capsys.readouterr().err
    three_d_only = [s.name for s in registry.all_specs() if s.dims == (3,)]
    if three_d_only:
        assert main(["profile", three_d_only[0], "--in-channels", "1", "--classes", "2", "--patch", "32", "32",
                     "--no-latency"]) == 2
        assert "3d_fullres" in capsys.readouterr().err


def _package_modules() -> dict[str, str]:
    """Every module of the installed package: dotted name -> source file. `architectures` and
    `trainers` live in top-level folders mapped into the package (pyproject), so they are walked too."""
    modules = {}
    for package in ("nnunet_lightseg", "nnunet_lightseg.architectures", "nnunet_lightseg.trainers"):
        imported = importlib.import_module(package)
        modules[package] = imported.__file__
        for info in pkgutil.walk_packages(imported.__path__, f"{package}."):
            modules[info.name] = importlib.util.find_spec(info.name).origin
    return modules


def _imports(name: str, path: str, modules: dict[str, str]) -> set[str]:
    """The package modules `name` imports anywhere in its source (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                      for alias in node.names}
    return {module for module in found if module in modules and module != name}


def test_the_package_has_no_import_cycles():
    modules = _package_modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles = []

    def visit(name, path):
        for target in sorted(graph[name]):
            if target in path:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in done:
                visit(target, path + [target])
        done.add(name)

    done = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_the_leaf_modules_import_only_the_standard_library():
    leaves = ("errors", "schedules", "nnunet_env", "output_folder")
    for leaf in leaves:
        path = _package_modules()[f"nnunet_lightseg.{leaf}"]
        top = {node.module if isinstance(node, ast.ImportFrom) else alias.name
               for node in ast.parse(open(path).read()).body if isinstance(node, (ast.Import, ast.ImportFrom))
               for alias in getattr(node, "names", [])}
        third_party = {m for m in top if m.split(".")[0] not in sys.stdlib_module_names and m != "__future__"}
        assert third_party <= {f"nnunet_lightseg.{other}" for other in leaves}, (leaf, third_party)


def test_output_folders_are_claimed_only_when_new_empty_or_ours(tmp_path):
    new, empty, ours, theirs = (str(tmp_path / name) for name in ("new", "empty", "ours", "theirs"))
    assert output_folder.claim(new) is None and output_folder.is_ours(new)
    os.mkdir(empty)
    assert output_folder.claim(empty) is None and os.listdir(empty) == [output_folder.MARKER]
    output_folder.claim(ours)
    open(os.path.join(ours, "result.txt"), "w").write("ours")
    assert output_folder.claim(ours) is None and open(os.path.join(ours, "result.txt")).read() == "ours"
    os.mkdir(theirs)
    open(os.path.join(theirs, "data.txt"), "w").write("theirs")
    with pytest.raises(OutputFolderError, match=r"did not write \(data.txt\).*--force"):
        output_folder.claim(theirs)
    assert os.listdir(theirs) == ["data.txt"]
    with pytest.raises(OutputFolderError, match="is a file"):
        output_folder.claim(os.path.join(theirs, "data.txt"), force=True)
    aside = output_folder.claim(theirs, force=True)
    assert os.path.dirname(aside) == theirs and os.listdir(aside) == ["data.txt"]
    assert open(os.path.join(aside, "data.txt")).read() == "theirs"
