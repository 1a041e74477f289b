"""Check that the test suite notices a broken metric (issue #11).

Applies each of eight plausible wrong implementations to the library in turn (Kendall for
Spearman, nominal for ordinal alpha, a 97.5% bootstrap, an unpaired bootstrap, half-to-even
consensus rounding, an image path without its folder, no resume guard on the training-data size,
moved rating-band borders), runs the relevant test files, restores the file, and prints whether a
test failed ("CAUGHT") and which. Run from the repository root:

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/check_mutations.py

It rewrites source files while it runs (each is restored in a ``finally``); run it on a clean tree.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_metrics.py", "tests/test_evaluate_controls.py", "tests/test_evaluate_bench.py",
         "tests/test_labels.py", "tests/test_generate.py", "tests/test_collect.py"]
INDEPENDENT = '''    rng = np.random.default_rng(seed)
    ia = rng.integers(0, x.size, size=(n_boot, x.size))
    ib = rng.integers(0, x.size, size=(n_boot, x.size))
    stats = x[ia].mean(axis=1) - y[ib].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))
    return round(float(np.mean(x - y)), 6), round(lo, 6), round(hi, 6)'''
MUTATIONS = {
    "SRCC computed as Kendall's tau": ("aes_lib/evaluate/stats.py",
        "return float(spearmanr(pred, gt).statistic)",
        "from scipy.stats import kendalltau\n    return float(kendalltau(pred, gt).statistic)"),
    "Krippendorff's alpha ordinal -> nominal": ("aes_lib/collect/stats.py",
        'level_of_measurement="ordinal"', 'level_of_measurement="nominal"'),
    "bootstrap level 95% -> 97.5%": ("aes_lib/evaluate/stats.py", "level: float = 0.95", "level: float = 0.975"),
    "paired bootstrap resampling the two models independently": ("aes_lib/evaluate/stats.py",
        '''    lo, hi = bootstrap_ci(x - y, n_boot=n_boot, seed=seed, level=level)
    return round(float(np.mean(x - y)), 6), round(lo, 6), round(hi, 6)''', INDEPENDENT),
    "consensus grade with round-half-to-even": ("aes_lib/schema.py",
        "math.floor(sum(scores) / len(scores) + 0.5)", "round(sum(scores) / len(scores))"),
    "LLaVA export losing the image folder prefix": ("aes_lib/generate/core.py",
        '"image": ins.image, "conversations"', '"image": ins.image.split("/")[-1], "conversations"'),
    "resume guard on training-file size removed": ("aes_lib/train/loop.py",
        'if state.get("n_train_samples", n_samples) != n_samples:', "if False:"),
    "rating-band thresholds moved": ("aes_lib/evaluate/bench.py", "if mean >= 3.67:", "if mean >= 3.5:"),
}
caught = 0
for name, (rel, old, new) in MUTATIONS.items():
    path = ROOT / rel
    text = path.read_text()
    assert text.count(old) >= 1, (name, old)
    path.write_text(text.replace(old, new))
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *TESTS], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    finally:
        path.write_text(text)
    failed = [l.split(" ")[1] for l in proc.stdout.splitlines() if l.startswith("FAILED")]
    summary = proc.stdout.strip().splitlines()[-1]
    print(f"{name}: {'CAUGHT' if failed else 'NOT CAUGHT'} ({summary})")
    for f in failed:
        print("    ", f)
    caught += bool(failed)
    sys.stdout.flush()
print(f"{caught} of {len(MUTATIONS)} mutations caught")
sys.exit(0 if caught == len(MUTATIONS) else 1)
