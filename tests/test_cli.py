import json

import pytest

from nnunet_lightseg import registry
from nnunet_lightseg.cli import main


def test_list_json_names_every_model_with_its_trainers(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in rows} == {s.name for s in registry.all_specs()}
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
