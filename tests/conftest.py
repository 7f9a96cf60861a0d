import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def demo_nnunet(tmp_path_factory):
    """The demo dataset, small, planned and preprocessed (2d and 3d_fullres) with the stock tools.

    Returns (env, dataset_folder). Shared by every CLI integration test.
    """
    from cli_helpers import clean_env, run
    from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID, DemoSettings, write_dataset

    root = str(tmp_path_factory.mktemp("nnunet"))
    env = clean_env(root)
    folder = write_dataset(env["nnUNet_raw"], DemoSettings(num_training=6, num_test=2, shape=(24, 32, 28), seed=1))
    run(["nnUNetv2_plan_and_preprocess", "-d", str(DEFAULT_DATASET_ID), "-c", "2d", "3d_fullres", "-np", "1",
         "--verify_dataset_integrity"], env)
    return env, folder
