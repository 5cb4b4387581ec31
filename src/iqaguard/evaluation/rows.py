"""The per-image row: what the store keeps for each (metric, attack, defense, image) cell.

Score columns (raw metric units):
    clear (c), attacked (a), defended_clear (dc), defended_attacked (da)
    defended_attacked_adaptive (da_adapt; NaN until adaptive evaluation runs)
Ground truth: truth (higher = better; MOS or minus distortion level), truth_kind, group.
Quality preservation (FR, computed at the input size, never the attacked metric):
    q_{psnr,ssim,ms_ssim}_{c_a, c_dc, c_da}: between the clean image and the attacked,
    defended-clean and defended-attacked images; linf_c_a = ‖a − c‖∞ of the attack.
Metric facts, copied so every row is self-describing: lower_better, range_lo, range_hi.
Cost: defense_seconds (mean of the two purify calls, per image), attack_seconds, grad_calls,
queries (per image).
"""

KEY_COLUMNS = ["cell", "run_id", "metric", "attack", "defense", "dataset", "image"]
SCORE_COLUMNS = ["clear", "attacked", "defended_clear", "defended_attacked", "defended_attacked_adaptive"]
TRUTH_COLUMNS = ["truth", "truth_kind", "group"]
QUALITY_METRICS = ["psnr", "ssim", "ms_ssim"]
QUALITY_PAIRS = ["c_a", "c_dc", "c_da"]
QUALITY_COLUMNS = [f"q_{m}_{p}" for p in QUALITY_PAIRS for m in QUALITY_METRICS] + ["linf_c_a"]
META_COLUMNS = ["lower_better", "range_lo", "range_hi", "seed", "adaptive_wrapper"]
COST_COLUMNS = ["defense_seconds", "attack_seconds", "grad_calls", "queries"]
ROW_COLUMNS = KEY_COLUMNS + SCORE_COLUMNS + TRUTH_COLUMNS + QUALITY_COLUMNS + META_COLUMNS + COST_COLUMNS
CELL_COLUMNS = ["metric", "attack", "defense"]
