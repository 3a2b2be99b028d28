"""Our ImageReward / HPSv2 loaders against the authors' own code, on the same tiny random-weight checkpoints.

How to run (two interpreters: ours, and a side venv holding the released packages; no network at run time)::

    python bench/bench_preference_rewards.py --work /tmp/prefbench [--bpe PATH/bpe_simple_vocab_16e6.txt.gz]
    /tmp/refvenv/bin/python bench/bench_preference_rewards.py --work /tmp/prefbench --official

The first step writes tiny ImageReward and HPSv2.1 folders (``find_rl.rewards.preference_weights``), images and prompts,
and our scores and token ids. The second step, in the side venv, builds the original modules at the tiny sizes
(ImageReward 1.5's ``ImageReward``/``BLIP_Pretrain`` parts, vit.py, med.py; hpsv2 1.2.0's vendored open_clip
``create_model_and_transforms`` + ``tokenize``), loads the same files with ``strict=True`` (so the writers' key
layout must be exactly the original ``state_dict()``), scores through the official entry points
(``ImageReward.score(prompt, PIL image)``; ``model(image, text)`` then ``image_features @ text_features.T`` as
``hpsv2/img_score.py``), and compares. With ``--bpe`` it also compares our tokenisation with open_clip's
``SimpleTokenizer`` on the real BPE vocabulary.

The side venv (what installs there, in this order)::

    python -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm==0.6.13 transformers==4.36.2 ftfy regex \
        einops clip-anytorch huggingface_hub tqdm pillow "setuptools<70" clint pandas braceexpand webdataset
    /tmp/refvenv/bin/pip install --no-deps image-reward==1.5 hpsv2==1.2.0
    /tmp/refvenv/bin/pip install --no-build-isolation fairscale==0.4.13
    # hpsv2 1.2.0's wheel lacks open_clip's BPE file: copy it from HPSv2's repository (hpsv2/src/open_clip/)
    cp bpe_simple_vocab_16e6.txt.gz /tmp/refvenv/lib/python3.11/site-packages/hpsv2/src/open_clip/

(image-reward does not install cleanly: it imports OpenAI's ``clip``, which is not on PyPI (``clip-anytorch``
provides it), its med.py needs transformers 4.x, and timm needs a torchvision that loads, i.e. a CUDA torch here.)

Results to expect (measured on this 2-core CPU, torch 2.13 here, torch 2.14 / transformers 4.36 in the side venv):
every strict load succeeds; images at the model's size (no resampling) agree to 5.1e-7 (ImageReward) and 6.7e-6
(HPSv2, 100 x cos); resized 48x40 images: HPSv2 9.5e-6 (both resize the tensor), ImageReward 8.6e-3 (its transform
resamples an 8-bit PIL image; ours the float tensor), printed but not a pass/fail; ImageReward's BERT ids and, with
``--bpe``, open_clip's ids on its real BPE vocabulary (5 prompts: HTML entities, accents, a 300-character prompt
truncated to 77 tokens) are equal. PASS is printed when the at-size scores agree to <= 1e-4 and all ids are equal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROMPTS = ["a dog", "a green cat", "four pandas on a sofa!", "a photo of a dog on the sofa, highly detailed"]
REAL_PROMPTS = ["A cat with two horns on its head", "a photo of an astronaut riding a horse on mars, 4k, trending",
                "Four   pandas &amp; a sofa!!", "naïve café — 1990s", "x" * 300]


def ours(work: Path, bpe: str | None) -> None:
    import numpy as np
    import torch

    from find_rl.rewards.hps import HPSv2Score, _bpe_tokenizer
    from find_rl.rewards.image_reward import ImageRewardScore
    from find_rl.rewards.preference_weights import save_hps_folder, save_imagereward_folder

    work.mkdir(parents=True, exist_ok=True)
    ir_dir, hps_dir = save_imagereward_folder(work / "imagereward"), save_hps_folder(work / "hps", version="v2.1")
    g = torch.Generator().manual_seed(0)
    sets = {"at_size": torch.randint(0, 256, (len(PROMPTS), 32, 32, 3), generator=g, dtype=torch.uint8),
            "resized": torch.randint(0, 256, (len(PROMPTS), 48, 40, 3), generator=g, dtype=torch.uint8)}
    ir, hps = ImageRewardScore(ir_dir), HPSv2Score(hps_dir)
    out = {"prompts": PROMPTS, "scores": {}}
    for name, u8 in sets.items():
        np.save(work / f"{name}.npy", u8.numpy())
        x = u8.permute(0, 3, 1, 2).float() / 255 * 2 - 1  # [-1, 1], as the sampler hands images to rewards
        out["scores"][name] = {"imagereward": ir(x.numpy(), PROMPTS).tolist(), "hpsv2": hps(x.numpy(), PROMPTS).tolist()}
    out["imagereward_ids"] = ir.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35).input_ids
    if bpe:  # the reward's own tokenisation, over the real vocabulary
        hps.tokenizer = _bpe_tokenizer(Path(bpe).parent)
        out["real_bpe_ids"] = [[t if t != hps.tokenizer.eos_token_id or i == row.index(t) else 0 for i, t in enumerate(row)]
                               for row in hps.token_ids(REAL_PROMPTS).tolist()]  # open_clip pads with 0
    (work / "ours.json").write_text(json.dumps(out))
    print(f"wrote {work}/ours.json; now run this script with --official in the side venv")


def _official_imagereward(folder: Path):
    import importlib
    import site
    import types

    import torch
    from torch import nn

    root = Path(site.getsitepackages()[0]) / "ImageReward"
    pkg = types.ModuleType("ImageReward")  # the package __init__ imports ReFL (diffusers, datasets): skip it
    pkg.__path__ = [str(root)]
    sys.modules["ImageReward"] = pkg
    IR = importlib.import_module("ImageReward.ImageReward")
    blip_mod = importlib.import_module("ImageReward.models.BLIP.blip_pretrain")
    from ImageReward.models.BLIP.med import BertConfig, BertModel
    from ImageReward.models.BLIP.vit import VisionTransformer
    from transformers import BertTokenizer

    state = torch.load(folder / "ImageReward.pt", map_location="cpu")
    width, _, patch, _ = state["blip.visual_encoder.patch_embed.proj.weight"].shape
    size = round((state["blip.visual_encoder.pos_embed"].shape[1] - 1) ** 0.5) * patch
    # BLIP_Pretrain.__init__ with create_vit's 'large' recipe at the tiny sizes (heads 64 wide, drop path 0.1)
    blip = blip_mod.BLIP_Pretrain.__new__(blip_mod.BLIP_Pretrain)
    nn.Module.__init__(blip)
    depth = len({k.split(".")[3] for k in state if k.startswith("blip.visual_encoder.blocks.")})
    blip.visual_encoder = VisionTransformer(img_size=size, patch_size=patch, embed_dim=width, depth=depth,
                                            num_heads=width // 64, drop_path_rate=0.1)
    tokenizer = BertTokenizer.from_pretrained(str(folder / "tokenizer"))  # init_tokenizer, from the folder
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
    blip.tokenizer = tokenizer
    cfg = BertConfig.from_json_file(str(folder / "med_config.json"))
    cfg.encoder_width = width
    blip.text_encoder = BertModel(config=cfg, add_pooling_layer=False)
    blip.vision_proj = nn.Linear(width, 256)
    blip.text_proj = nn.Linear(cfg.hidden_size, 256)
    model = IR.ImageReward.__new__(IR.ImageReward)  # ImageReward.__init__ with the tiny BLIP and MLP(hidden size)
    nn.Module.__init__(model)
    model.device, model.blip, model.preprocess = "cpu", blip, IR._transform(size)
    model.mlp, model.mean, model.std = IR.MLP(cfg.hidden_size), 0.16717362830052426, 1.0333394966054072
    model.load_state_dict(state, strict=True)  # the released layout, exactly
    return model.eval()


def _official_hps(folder: Path):
    import torch
    from hpsv2.src.open_clip import create_model_and_transforms, factory
    from hpsv2.src.open_clip import tokenizer as oc_tok

    state = torch.load(folder / "HPS_v2.1_compressed.pt", map_location="cpu")["state_dict"]
    w, _, patch, _ = state["visual.conv1.weight"].shape
    vocab, tw = state["token_embedding.weight"].shape
    factory._MODEL_CONFIGS["tiny-ViT-H-14"] = {  # ViT-H-14.json at the tiny sizes: vision heads 80 wide, text 64
        "embed_dim": state["visual.proj"].shape[1],
        "vision_cfg": {"image_size": round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5) * patch,
                       "layers": len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")}),
                       "width": w, "head_width": 80, "patch_size": patch},
        "text_cfg": {"context_length": state["positional_embedding"].shape[0], "vocab_size": vocab, "width": tw,
                     "heads": tw // 64,
                     "layers": len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})}}
    model, _, preprocess_val = create_model_and_transforms(  # img_score.initialize_model's arguments, no pretrained tag
        "tiny-ViT-H-14", None, precision="fp32", device="cpu", jit=False, force_quick_gelu=False, force_custom_text=False,
        force_patch_dropout=False, force_image_size=None, pretrained_image=False, image_mean=None, image_std=None,
        light_augmentation=True, aug_cfg={}, output_dict=True, with_score_predictor=False, with_region_predictor=False)
    model.load_state_dict(state)  # strict, as img_score.score loads checkpoint['state_dict']
    oc_tok._tokenizer = oc_tok.SimpleTokenizer(str(folder / "bpe_simple_vocab_16e6.txt.gz"))
    return model.eval(), preprocess_val, oc_tok


def official(work: Path) -> int:
    import numpy as np
    import torch
    from PIL import Image

    mine = json.loads((work / "ours.json").read_text())
    ir = _official_imagereward(work / "imagereward")
    hps, preprocess_val, oc_tok = _official_hps(work / "hps")
    ids = ir.blip.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35).input_ids
    print("ImageReward token ids equal:", ids == mine["imagereward_ids"])
    worst = 0.0 if ids == mine["imagereward_ids"] else float("inf")
    for name in ("at_size", "resized"):
        images = [Image.fromarray(a) for a in np.load(work / f"{name}.npy")]
        with torch.no_grad():
            ref_ir = [ir.score(p, im) for p, im in zip(PROMPTS, images)]  # the official entry point
            text = oc_tok.tokenize(PROMPTS)
            image = torch.stack([preprocess_val(im) for im in images])
            out = hps(image, text)
            cos = torch.diagonal(out["image_features"] @ out["text_features"].T)  # hpsv2.score()'s number
        for reward, ref in (("imagereward", np.array(ref_ir)), ("hpsv2", 100 * cos.numpy())):
            diff = float(np.abs(np.array(mine["scores"][name][reward]) - ref).max())
            print(f"{name:8s} {reward:12s} official {np.round(ref, 5).tolist()}  max |ours - official| = {diff:.2e}")
            if name == "at_size":
                worst = max(worst, diff)
    if "real_bpe_ids" in mine:
        real = oc_tok.SimpleTokenizer()  # the full BPE vocabulary shipped with open_clip
        oc_tok._tokenizer = real
        ref = oc_tok.tokenize(REAL_PROMPTS).tolist()
        same = [a == b for a, b in zip(ref, mine["real_bpe_ids"])]
        print("real BPE token ids equal per prompt:", same)
        worst = worst if all(same) else float("inf")
    print("PASS" if worst <= 1e-4 else "FAIL", f"(largest difference at the model's size: {worst:.2e})")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/prefbench"))
    ap.add_argument("--official", action="store_true", help="the side-venv step: score with the authors' code")
    ap.add_argument("--bpe", help="open_clip's real bpe_simple_vocab_16e6.txt.gz, to compare tokenisations")
    args = ap.parse_args()
    sys.exit(official(args.work) if args.official else ours(args.work, args.bpe))
