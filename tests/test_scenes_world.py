"""The scenes world (find_rl.worlds.scenes): grammar, splits, renderer and the exact scorer. Pure numpy, fast."""

from collections import Counter

import numpy as np
import pytest

from find_rl.worlds.scenes import splits
from find_rl.worlds.scenes.adversarial import adversarial_cases, blank, put, stamp
from find_rl.worlds.scenes.detect import detect_batch
from find_rl.worlds.scenes.geometry import SHAPES, SIZES, relation_scores
from find_rl.worlds.scenes.grammar import CATEGORIES, COLOURS, RELATIONS, all_prompts, parse_prompt
from find_rl.worlds.scenes.render import render_prompts, sample_scenes, sample_training_batch
from find_rl.worlds.scenes.scorer import accuracy_by_category, score

S = {name: i for i, name in enumerate(SHAPES)}
C = {name: i for i, name in enumerate(COLOURS)}


# ---------------------------------------------------------------- grammar


@pytest.mark.parametrize("prompt, word", [("a purple circle", "purple"), ("two red hexagons", "hexagons"),
                                          ("a red circle near a blue square", "near"), ("four circles", "four")])
def test_parse_error_names_the_unknown_word(prompt, word):
    with pytest.raises(ValueError, match=f"unknown word '{word}'") as e:
        parse_prompt(prompt)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("prompt, why", [
    ("two circle", "plural 'circles'"), ("a circles", "singular 'circle'"),
    ("a red circle and a square", "both objects or neither"), ("a red circle and a red square", "two different colours"),
    ("a red circle and a blue circle", "two different colours and shapes"),
    ("a circle and a circle", "twice"), ("two circles and a square", "one of each object"), ("", "count word"),
    ("a circle left of a square and a cross", "at most one relation"), ("a red", "shape word")])
def test_parse_errors_are_one_line_and_say_why(prompt, why):
    with pytest.raises(ValueError, match=why) as e:
        parse_prompt(prompt)
    assert "\n" not in str(e.value)


def test_all_prompts_cover_the_six_categories_and_round_trip():
    prompts = all_prompts()
    assert len(prompts) >= 2000 and len(set(prompts)) == len(prompts)
    assert prompts == all_prompts()  # deterministic order
    parsed = [parse_prompt(p) for p in prompts]
    assert all(p.text == t for p, t in zip(parsed, prompts))
    counts = Counter(p.category for p in parsed)
    assert set(counts) == set(CATEGORIES), counts
    assert parse_prompt("a photo of a red circle").text == "a red circle"
    assert parse_prompt("three blue crosses").instances == parse_prompt("a blue cross").instances * 3


# ---------------------------------------------------------------- splits


def test_every_prompt_has_a_split_and_every_category_has_common_rare_and_policy():
    by = Counter((parse_prompt(p).category, splits.split_of(p)) for p in all_prompts())
    for cat in CATEGORIES:
        for split in splits.TRAINED_SPLITS:
            assert by[cat, split] > 0, (cat, split)
    totals = Counter(splits.split_of(p) for p in all_prompts())
    # pinned: README.md lists these counts; a change to the splits must update both
    assert totals == {"common": 170, "rare": 1029, "policy": 135, "unseen_pairs": 1156, "unseen_relations": 170,
                      "swapped": 52}, totals


def test_splits_follow_the_scene_not_the_phrasing():
    for text in all_prompts():
        p = parse_prompt(text)
        if len(p.objects) == 2:
            mirror = {"and": "and", "left of": "right of", "right of": "left of", "above": "below", "below": "above"}
            twin_text = f"{p.objects[1].text} {mirror[p.relation]} {p.objects[0].text}"
            assert splits.split_of(twin_text) == splits.split_of(text), text


def test_swapped_twins_are_trained_and_their_objects_seen():
    for pair in splits.SWAPPED:
        twin = splits.twin(pair)
        assert twin not in splits.SWAPPED and not (pair | twin) & splits.UNSEEN_PAIRS
        (c1, s1), (c2, s2) = sorted(twin)
        assert splits.split_of(f"a {COLOURS[c1]} {SHAPES[s1]} and a {COLOURS[c2]} {SHAPES[s2]}") in splits.TRAINED_SPLITS
        (c1, s1), (c2, s2) = sorted(pair)
        assert splits.split_of(f"a {COLOURS[c1]} {SHAPES[s1]} and a {COLOURS[c2]} {SHAPES[s2]}") == "swapped"


def _held_out_in(objects) -> list[str]:
    """The held-out compositions shown by one image's detected objects."""
    found = [f"unseen pair {o.colour, o.shape}" for o in objects if (o.colour, o.shape) in splits.UNSEEN_PAIRS]
    forbidden = splits.forbidden_relations()
    for a in objects:
        for b in objects:
            if a is b:
                continue
            if frozenset({(a.colour, a.shape), (b.colour, b.shape)}) in splits.SWAPPED:
                found.append(f"swapped pair {a.colour, a.shape} {b.colour, b.shape}")
            scores = relation_scores(np.array(a.centre), np.array(a.dims), np.array(b.centre), np.array(b.dims))
            if (forbidden[a.shape, b.shape] & (scores > 0.5)).any():
                found.append(f"unseen relation {a.shape} {b.shape}")
    return found


def test_training_data_never_shows_a_held_out_composition():
    rng = np.random.default_rng(0)
    images, prompts = sample_training_batch(20_000, rng)
    assert images.shape == (20_000, 3, 32, 32) and images.dtype == np.float32
    assert {splits.split_of(p) for p in prompts} <= set(splits.TRAINED_SPLITS)
    result = score(images, prompts)
    assert result.aligned.all(), [p for p, a in zip(prompts, result.aligned) if not a][:5]
    bad = [(p, _held_out_in(d.objects)) for p, d in zip(prompts, result.detections) if _held_out_in(d.objects)]
    assert not bad, bad[:5]
    # and the scene records agree with the detections: no unseen pair anywhere
    sc = sample_scenes(prompts[:5000], rng, training=True)
    shown = {(int(c), int(s)) for c, s in zip(sc.colour.ravel(), sc.shape.ravel()) if s >= 0}
    assert not shown & splits.UNSEEN_PAIRS


def test_training_frequencies_follow_the_knobs():
    rng = np.random.default_rng(1)
    from find_rl.worlds.scenes.render import sample_training_prompts
    freq = Counter(sample_training_prompts(50_000, rng))
    for cat in CATEGORIES:
        texts = [t for t in all_prompts() if parse_prompt(t).category == cat and splits.split_of(t) in ("common", "rare")]
        mean = {r: np.mean([freq[t] for t in texts if (splits.rare_factor(parse_prompt(t)) < 1) == r]) for r in (False, True)}
        assert mean[True] < 0.5 * mean[False], (cat, mean)
    counting = [(parse_prompt(t).objects[0].count, v) for t, v in freq.items() if parse_prompt(t).category == "counting"]
    threes, twos = (sum(v for n, v in counting if n == k) for k in (3, 2))
    assert threes < 0.5 * twos


# ---------------------------------------------------------------- scorer on ground truth and noise


def test_scorer_judges_ground_truth_right_in_every_category():
    rng = np.random.default_rng(2)
    by_cat = {c: [t for t in all_prompts() if parse_prompt(t).category == c] for c in CATEGORIES}
    prompts = [by_cat[c][i] for c in CATEGORIES for i in rng.choice(len(by_cat[c]), 1000)]
    result = score(render_prompts(prompts, rng), prompts)
    acc, strict = accuracy_by_category(prompts, result.aligned), accuracy_by_category(prompts, result.strict)
    assert min(acc[c] for c in CATEGORIES) >= 0.995, f"ground-truth accuracy per category {acc}"
    assert min(strict[c] for c in CATEGORIES) >= 0.995, f"strict ground-truth accuracy per category {strict}"
    assert np.all(result.reward[result.aligned] == 1.0) and np.all(result.reward[~result.aligned] < 1.0)
    # factors: every prompt object matched to a box of a world size inside the canvas
    n_inst = np.array([len(parse_prompt(p).instances) for p in prompts])
    filled = ~np.isnan(result.factors[..., 0])
    assert np.array_equal(filled.sum(axis=1), n_inst)
    assert set(np.unique(result.factors[..., 2][filled])) <= set(SIZES)


def test_noise_is_never_aligned():
    rng = np.random.default_rng(3)
    every = all_prompts()
    prompts = [every[i] for i in rng.choice(len(every), 1000)]
    uniform = rng.uniform(-1, 1, size=(1000, 3, 32, 32)).astype(np.float32)
    gauss = np.clip(rng.normal(-0.5, 0.6, size=(1000, 3, 32, 32)), -1, 1).astype(np.float32)
    for images in (uniform, gauss):
        result = score(images, prompts)
        assert not result.aligned.any() and result.reward.max() < 1.0


# ---------------------------------------------------------------- adversarial images


@pytest.mark.parametrize("case", adversarial_cases(), ids=lambda c: c.name)
def test_adversarial_images_are_rejected(case):
    result = score(case.image[None], [case.prompt])
    assert not result.aligned[0] and not result.strict[0] and result.reward[0] < 1.0, (case.name, result.detections[0])


def test_a_faint_speck_is_dropped_and_a_correct_image_passes():
    image = put(blank(), "circle", "red", 3, 3)
    assert score(image[None], ["a red circle"]).aligned[0]
    faint = stamp(image.copy(), np.ones((1, 2), bool), "green", 25, 25, value=0.2)
    assert score(faint[None], ["a red circle"]).aligned[0]


def test_reward_rises_with_every_satisfied_clause():
    prompt = "a red circle left of a blue square"
    steps = [
        blank(),  # only "clean" holds
        put(blank(), "circle", "red", 2, 10),  # + the circle's shape and colour
        put(put(blank(), "circle", "red", 18, 10), "square", "red", 2, 10),  # + the square's shape, the count
        put(put(blank(), "circle", "red", 18, 10), "square", "blue", 2, 10),  # + the square's colour
        put(put(blank(), "circle", "red", 2, 10), "square", "blue", 18, 10),  # + the relation: aligned
    ]
    result = score(np.stack(steps), [prompt] * len(steps))
    assert np.all(np.diff(result.reward) > 0), result.reward
    assert result.aligned.tolist() == [False] * 4 + [True] and result.reward[-1] == 1.0 and result.reward[-2] < 1.0


def test_relation_scores_follow_geneval():
    # B 10 px right of A, same row: A is left of B, and B right of A; a tiny offset is no relation
    a, b, dims = np.array([5.0, 5.0]), np.array([15.0, 5.0]), np.array([4.0, 4.0])
    assert relation_scores(a, dims, b, dims)[RELATIONS.index("left of")] == pytest.approx((10 - 0.8) / 10)
    assert relation_scores(b, dims, a, dims)[RELATIONS.index("right of")] > 0.5
    assert not (relation_scores(a, dims, a + 0.5, dims) > 0.5).any()


def test_detect_reports_box_and_colour():
    d = detect_batch(put(blank(), "triangle", "magenta", 5, 7, s=13)[None])[0]
    (o,) = d.objects
    assert (o.shape, o.colour, o.box, o.size, o.centre) == (S["triangle"], C["magenta"], (5, 7, 18, 20), 13, (11.5, 13.5))


def test_training_sizes_knob_draws_only_those_sprites_and_evaluation_scenes_keep_every_size():
    from find_rl.worlds.scenes.render import sample_scenes, sample_training_batch
    from find_rl.worlds.scenes.splits import Knobs

    images, prompts = sample_training_batch(300, np.random.default_rng(0), Knobs(sizes=(11,)))
    result = score(images, prompts)
    sides = result.factors[..., 2][~np.isnan(result.factors[..., 2])]
    assert result.aligned.all() and set(np.unique(sides)) == {11}
    sc = sample_scenes(prompts, np.random.default_rng(1), knobs=Knobs(sizes=(11,)))  # evaluation scenes: every size
    assert set(np.unique(sc.size[sc.shape >= 0])) == set(SIZES)
    with pytest.raises(ValueError, match="subset of"):
        Knobs(sizes=(10,))
