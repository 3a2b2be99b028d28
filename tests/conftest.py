import os

import pytest
import torch

from session_exit import pytest_sessionfinish  # noqa: F401  (ends the process without finalisation once Ray has run)

torch.set_num_threads(int(os.environ.get("FIND_RL_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def tiny_shapes_model(tmp_path_factory):
    """A freshly built (untrained, seeded) shapes pipeline saved to disk: loads through from_pretrained like the real one."""
    from find_rl.worlds.shapes.pipeline import build_pipeline

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny_shapes"
    build_pipeline().save_pretrained(path, safe_serialization=True)
    return str(path)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny random-weight StableDiffusionPipeline (CLIP text encoder, tokenizer, UNet, VAE, PNDM) saved to disk."""
    from find_rl.diffusion.random_weights import save_pipeline

    return save_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd", "tiny")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    """A tiny random-weight StableDiffusionXLPipeline (two text encoders and tokenizers) saved to disk."""
    from find_rl.diffusion.random_weights import save_pipeline

    return save_pipeline(tmp_path_factory.mktemp("models") / "tiny-sdxl", "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_t2v(tmp_path_factory):
    """A tiny random-weight TextToVideoSDPipeline (ModelScope's text-to-video: UNet3DConditionModel) saved to disk."""
    from find_rl.diffusion.random_weights import save_pipeline

    return save_pipeline(tmp_path_factory.mktemp("models") / "tiny-t2v", "tiny-t2v")


@pytest.fixture(scope="session")
def tiny_animatediff(tmp_path_factory):
    """A tiny random-weight AnimateDiffPipeline (an SD UNet plus a MotionAdapter) saved to disk."""
    from find_rl.diffusion.random_weights import save_pipeline

    return save_pipeline(tmp_path_factory.mktemp("models") / "tiny-animatediff", "tiny-animatediff")


@pytest.fixture(scope="session")
def tiny_xclip(tmp_path_factory):
    """A tiny random-weight XCLIPModel (video-text reward) saved to disk."""
    from find_rl.diffusion.random_weights import save_xclip_model

    return save_xclip_model(tmp_path_factory.mktemp("models") / "tiny-xclip")


@pytest.fixture(scope="session")
def tiny_aesthetic(tmp_path_factory):
    """A tiny random CLIP with a LAION-style aesthetic head beside it (the aesthetic reward's folder format)."""
    from find_rl.diffusion.random_weights import save_aesthetic_model

    return save_aesthetic_model(tmp_path_factory.mktemp("models") / "tiny-aesthetic")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random-weight CLIPModel with its tokenizer saved to disk (the CLIP / PickScore rewards' format)."""
    from find_rl.diffusion.random_weights import save_clip_model

    return save_clip_model(tmp_path_factory.mktemp("models") / "tiny-clip", "tiny")


@pytest.fixture
def ray_local():
    """A private local Ray instance, shut down by its own handle afterwards (never `ray stop`)."""
    import ray

    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_imagereward(tmp_path_factory):
    """A tiny random ImageReward folder in the released layout: ImageReward.pt, med_config.json, tokenizer/vocab.txt."""
    from find_rl.rewards.preference_weights import save_imagereward_folder

    return save_imagereward_folder(tmp_path_factory.mktemp("models") / "tiny-imagereward")


@pytest.fixture(scope="session")
def tiny_hpsv2(tmp_path_factory):
    """A tiny random HPSv2.1 folder in the released layout: HPS_v2.1_compressed.pt and open_clip's BPE file."""
    from find_rl.rewards.preference_weights import save_hps_folder

    return save_hps_folder(tmp_path_factory.mktemp("models") / "tiny-hpsv2", version="v2.1")
