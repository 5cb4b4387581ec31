"""The per-image row: what the store keeps for each (metric, attack, defense, image) cell.

Score columns (raw metric units):
    clear (c), attacked (a), defended_clear (dc), defended_attacked (da)
    defended_attacked_adaptive (da_adapt; NaN until adaptive evaluation runs)
Ground truth: truth (higher = better; MOS or minus distortion level), truth_kind, group.
Family: family ("purification" | "training" | "certified"), from ``Defense.family``.
Quality preservation (purification only; FR, at the input size, never the attacked metric):
    q_{ssim_rgb,psnr_rgb}_{c_a, c_dc, c_da}: the study's measure (RGB SSIM with scikit-image's
    defaults, RGB PSNR with data range 1) between the clean image — put through the defense's
    geometric alignment (``Purifier.align``) for the defended pairs — and the attacked,
    defended-clean and defended-attacked images; q_{psnr,ssim,ms_ssim}_{...}: the same pairs on
    BT.601 luma (``channel=y``), kept as extra columns.
Perturbation sizes: linf_c_a / l2_c_a (transfer attack), linf_c_ad / l2_c_ad (adaptive attack).
Certified family: cert_lo, cert_hi (the certified interval of the smoothed clean score for every
    ‖δ‖₂ ≤ cert_eps), cert_abstained (1 = no certificate).
Metric facts, copied so every row is self-describing: lower_better, range_lo, range_hi.
Cost: defense_seconds (mean of the defended-clean and defended-attacked calls, per image),
defense_forwards (metric forward passes per defended score; > 1 for smoothing), fit_seconds
(training of a trained defense, shared by its cells), attack_seconds, grad_calls, queries (per image).
"""

KEY_COLUMNS = ["cell", "run_id", "metric", "attack", "defense", "dataset", "image", "family"]
SCORE_COLUMNS = ["clear", "attacked", "defended_clear", "defended_attacked", "defended_attacked_adaptive"]
TRUTH_COLUMNS = ["truth", "truth_kind", "group"]
STUDY_QUALITY = ["ssim_rgb", "psnr_rgb"]
LUMA_QUALITY = {"psnr": "psnr:channel=y", "ssim": "ssim:channel=y", "ms_ssim": "ms_ssim:channel=y"}
QUALITY_METRICS = STUDY_QUALITY + list(LUMA_QUALITY)
QUALITY_PAIRS = ["c_a", "c_dc", "c_da"]
QUALITY_COLUMNS = [f"q_{m}_{p}" for p in QUALITY_PAIRS for m in QUALITY_METRICS] \
    + ["linf_c_a", "l2_c_a", "linf_c_ad", "l2_c_ad"]
CERT_COLUMNS = ["cert_lo", "cert_hi", "cert_abstained", "cert_eps"]
META_COLUMNS = ["lower_better", "range_lo", "range_hi", "seed", "adaptive_wrapper"]
COST_COLUMNS = ["defense_seconds", "defense_forwards", "fit_seconds", "attack_seconds", "grad_calls", "queries"]
ROW_COLUMNS = KEY_COLUMNS + SCORE_COLUMNS + TRUTH_COLUMNS + QUALITY_COLUMNS + CERT_COLUMNS + META_COLUMNS \
    + COST_COLUMNS
CELL_COLUMNS = ["metric", "attack", "defense"]
