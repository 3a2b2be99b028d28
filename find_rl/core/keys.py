"""Metric names (one place, cf. RLlib's ``Columns``). Learner metrics land in
``result["learners"][module_id]["find"][name]``."""

FIND = "find"
REWARD_MEAN = "reward_mean"
ALIGNMENT = "alignment"
CALIB_PRED_MEAN = "calibration_pred_mean"
CALIB_ADV_MEAN = "calibrated_reward_mean"
CALIB_FIT_MSE = "calibration_fit_mse"
ADVANTAGE_MEAN = "advantage_mean"  # of the advantages the policy trains on (calibrated, normalised rewards)
ADVANTAGE_STD = "advantage_std"
SAMPLES = "samples"
SAMPLES_INVALID = "samples_invalid"
POLICY_LOSS = "policy_loss"
ANCHOR = "anchor"
ANCHOR_COEFF_MEAN = "anchor_coeff_mean"
CLIP_FRACTION = "clip_fraction"
APPROX_KL = "approx_kl"
RATIO_MEAN = "ratio_mean"
RATIO_MIN = "ratio_min"
RATIO_MAX = "ratio_max"
ENTROPY = "entropy_per_element"
MU_ABS = "mu_abs_mean"
STD_MEAN = "std_mean"
ESS = "ess"  # mass-covering objectives: normalised effective sample size of q* under the behaviour, mean over prompts
LOG_Z = "log_z"
REPLAYED = "replayed_renders"
SEEDING = "seeding"  # 1 while a seeding family (--mixture-seed-share) only collects aligned draws
BETA = "beta"  # mass-covering objectives: the target's temperature this iteration (annealed with --beta-final)
# per iteration, beside the learner's metrics (find_rl.run.tracking)
ITERATION_S = "iteration_s"
IMAGES_PER_S = "images_per_s"
REWARD_EVALS = "reward_evals_per_prompt"


def alignment_of(prompt: str) -> str:
    return f"alignment/{prompt}"
