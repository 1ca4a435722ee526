"""Per-category precision and recall of the text-safety classifier on the independent evaluation set.

    .venv/bin/python benchmarks/bench_safety.py                 # tuned and held-out cases, side by side
    .venv/bin/python benchmarks/bench_safety.py --split tune    # only the cases the lexicon was tuned on
    .venv/bin/python benchmarks/bench_safety.py --errors        # also list every miss and false positive
    .venv/bin/python benchmarks/bench_safety.py --classifier safety:/path/lexicon.txt

The set is `danqing_assets_tests/lib/data/safety_eval.tsv` (hand-written alt-text-style captions with provenance,
written before the lexicon; see its header). A case is held out when md5(caption) mod 3 == 0. The same author wrote
the lexicon knowing those cases, so split "heldout" overstates generalisation; splits "fresh1"
(`safety_eval_fresh.tsv`, written after the first lexicon was frozen, tuned on in round 2) and "fresh2"
(`safety_eval_fresh2.tsv`, written after round 2, first scored untuned, then tuned on in round 3) each measured it
once, before they were tuned on. Split "tune3" (`safety_eval_fresh2b.tsv`, safe look-alikes only, written in round 3
by the author of the round-3 lexicon) guards false positives of that round's broader terms; it has no unsafe cases.
Split "fresh3" (`safety_eval_fresh3.tsv`) was written blind (its author read neither the classifier, the lexicon nor
the earlier sets) while round 3 was tuned; its first score is in its header; tuned on in round 4. Split "tune4"
(`safety_eval_fresh3b.tsv`, unsafe probes and safe look-alikes written in round 4 by the author of the round-4
lexicon, one family per fresh3 miss or false positive) guards that round's terms; it is not independent either.
Split "fresh4" (`safety_eval_fresh4.tsv`), written blind while round 4 was tuned, scored once (its first score is in
its header), then tuned on in round 5. Split "tune5" (`safety_eval_fresh4b.tsv`, probes and look-alikes written in
round 5 by the author of the round-5 lexicon, one family per fresh4 miss or false positive) is not independent.

A caption counts as flagged when the stage its category belongs to would reject it at the stage's default threshold
(stage 1 `unsafe_text`: score of the stage-1 categories; stage 2 `sensitive_text`: score of the stage-2 categories).
- recall of category C: flagged cases among the cases labelled C (by either stage: a sexual ad caught as spam is
  still removed);
- precision of C: among the cases whose top category is C, those labelled C;
- false-positive rate: flagged cases among the safe cases (look-alikes included).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

EVAL_DIR = Path(__file__).resolve().parent.parent / "danqing_assets_tests" / "lib" / "data"
EVAL_SET = EVAL_DIR / "safety_eval.tsv"
FRESH_SETS = {"fresh1": EVAL_DIR / "safety_eval_fresh.tsv", "fresh2": EVAL_DIR / "safety_eval_fresh2.tsv",
              "tune3": EVAL_DIR / "safety_eval_fresh2b.tsv", "fresh3": EVAL_DIR / "safety_eval_fresh3.tsv",
              "tune4": EVAL_DIR / "safety_eval_fresh3b.tsv", "fresh4": EVAL_DIR / "safety_eval_fresh4.tsv",
              "tune5": EVAL_DIR / "safety_eval_fresh4b.tsv"}


def load_cases(path: Path = EVAL_SET, *, split: str | None = None) -> list[dict]:
    """The evaluation cases: labels (a set), caption, provenance, split ("tune" / "heldout" by md5, or `split`)."""
    cases = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{path}:{no}: expected labels<TAB>caption<TAB>provenance")
        labels, caption, provenance = fields
        this = split or ("heldout" if int(hashlib.md5(caption.encode("utf-8")).hexdigest(), 16) % 3 == 0 else "tune")
        cases.append({"labels": frozenset(labels.split("|")), "caption": caption, "provenance": provenance,
                      "split": this, "line": no})
    return cases


def evaluate(classifier, cases: list[dict], threshold: float = 0.5) -> dict:
    """Per category: n, caught, recall, predicted, correct, precision; plus the safe cases' false positives."""
    from danqing_assets.lib.safety import stage_scores

    captions = [c["caption"] for c in cases]
    s1 = stage_scores(classifier, captions, "source")
    s2 = stage_scores(classifier, captions, "text")
    per: dict[str, dict] = {}
    fps, misses = [], []
    for case, a, b in zip(cases, s1, s2):
        best = a if a.score >= b.score else b
        flagged = a.score >= threshold or b.score >= threshold
        top = best.category if flagged else None
        case["verdict"] = (flagged, top, best.score, best.evidence)
        if case["labels"] == {"safe"}:
            if flagged:
                fps.append(case)
            continue
        for lab in case["labels"]:
            row = per.setdefault(lab, {"n": 0, "caught": 0, "predicted": 0, "correct": 0})
            row["n"] += 1
            row["caught"] += flagged
        if not flagged:
            misses.append(case)
        if top is not None:
            row = per.setdefault(top, {"n": 0, "caught": 0, "predicted": 0, "correct": 0})
            row["predicted"] += 1
            row["correct"] += top in case["labels"]
    safe = sum(c["labels"] == {"safe"} for c in cases)
    unsafe = len(cases) - safe
    caught = sum(c["verdict"][0] for c in cases if c["labels"] != {"safe"})
    for row in per.values():
        row["recall"] = row["caught"] / row["n"] if row["n"] else None
        row["precision"] = row["correct"] / row["predicted"] if row["predicted"] else None
    return {"per": per, "safe": safe, "fp": fps, "misses": misses, "unsafe": unsafe,
            "recall": caught / unsafe if unsafe else None, "fp_rate": len(fps) / safe if safe else None}


def _fmt(x) -> str:
    return "  -  " if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=["tune", "heldout", *FRESH_SETS, "all"], default="all")
    ap.add_argument("--classifier", default="safety")
    ap.add_argument("--errors", action="store_true", help="list misses and false positives")
    args = ap.parse_args(argv)
    from danqing_assets.lib.safety import load_text_safety_classifier

    t0 = time.perf_counter()
    clf = load_text_safety_classifier(args.classifier)
    load_s = time.perf_counter() - t0
    cases = load_cases() + [c for name, path in FRESH_SETS.items() for c in load_cases(path, split=name)]
    splits = ["tune", "heldout", *FRESH_SETS] if args.split == "all" else [args.split]
    results = {}
    for split in splits:
        sub = [c for c in cases if c["split"] == split]
        results[split] = evaluate(clf, sub)
    cats = sorted({k for r in results.values() for k in r["per"]})
    print(f"classifier {args.classifier!r} (loaded in {load_s:.2f} s); {EVAL_SET.name} + "
          f"{' + '.join(p.name for p in FRESH_SETS.values())}: {len(cases)} cases")
    header = "category     " + "".join(f"| {s:^26} " for s in splits)
    print(header)
    print("             " + "".join("|   n  recall  precision    " for _ in splits))
    for cat in cats:
        line = f"{cat:<13}"
        for split in splits:
            row = results[split]["per"].get(cat, {"n": 0, "recall": None, "precision": None})
            line += f"| {row['n']:>3}   {_fmt(row['recall'])}     {_fmt(row['precision'])}       "
        print(line)
    for split in splits:
        r = results[split]
        fp_rate = "-" if r["fp_rate"] is None else f"{r['fp_rate']:.1%}"
        print(f"{split}: unsafe recall {_fmt(r['recall'])} ({r['unsafe']} cases), false positives on safe captions "
              f"{len(r['fp'])}/{r['safe']} = {fp_rate}")
        if args.errors:
            for c in r["misses"]:
                print(f"  MISS {'|'.join(sorted(c['labels']))}: {c['caption']}  -> {c['verdict']}")
            for c in r["fp"]:
                print(f"  FP   {c['caption']}  -> {c['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
