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
Split "fresh5" (`safety_eval_fresh5.tsv`), written blind while round 5 (lexicon + model) was built, scored once:
0.80 unsafe recall, 7.8 % of safe captions flagged (its header); the lexicon alone, the default since the model
was switched off for flagging ordinary text: 0.72 / 7.0 %. Blind first scores so far: fresh2 0.62 / 4.0 %,
fresh3 0.81 / 5.4 %, fresh4 0.77 / 6.7 %, fresh5 0.80 / 7.8 %: tuning on each blind set has not moved the next one.

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
              "tune5": EVAL_DIR / "safety_eval_fresh4b.tsv", "fresh5": EVAL_DIR / "safety_eval_fresh5.tsv"}


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


BLIND_LEXICONS = {"fresh2": "4437fdd", "fresh3": "6af0571", "fresh4": "cdae157"}
"""Each blind set and the commit whose lexicon it was first scored with (blind) - see the sets' headers."""
DERIVED = {"fresh2": ("tune3",), "fresh3": ("tune4",), "fresh4": ("tune5",)}
"""The probe sets written after reading a blind set's errors: left out of training with it (they carry its families)."""
MODEL_C = 10.0
MODEL_QUANTILE = 0.98
"""The model's threshold: this quantile of P(unsafe) over the safe captions without context words, each scored by a
model trained without its set (leave-one-set-out inside the training sets): about 2 % of them reach it."""


def all_sets() -> dict[str, list[dict]]:
    """Every labelled set by name (the md5 tune / heldout halves of safety_eval.tsv together as "orig")."""
    sets = {"orig": load_cases()}
    for name, path in FRESH_SETS.items():
        sets[name] = load_cases(path, split=name)
    return sets


def _fit(clf, cases: list[dict]) -> dict:
    """A `CharNgramModel` dict (threshold left at 0.5) trained on `cases` (sklearn, dev-time only)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = [clf.matching_form(c["caption"]) for c in cases]
    y = [0 if c["labels"] == {"safe"} else 1 for c in cases]
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2, lowercase=False)
    X = vec.fit_transform(texts)
    binary = LogisticRegression(C=MODEL_C, max_iter=5000).fit(X, y)
    rows = [(i, lab) for i, c in enumerate(cases) if c["labels"] != {"safe"} for lab in sorted(c["labels"])]
    cats = sorted({lab for _, lab in rows})
    multi = LogisticRegression(C=MODEL_C, max_iter=5000).fit(X[[i for i, _ in rows]], [lab for _, lab in rows])
    assert list(multi.classes_) == cats
    features = {}
    for g, j in sorted(vec.vocabulary_.items()):
        features[g] = [round(float(vec.idf_[j]), 5), round(float(binary.coef_[0, j]), 5),
                       *(round(float(multi.coef_[k, j]), 5) for k in range(len(cats)))]
    return {"format": "danqing-safety-charngram-1", "threshold": 0.5, "intercept": round(float(binary.intercept_[0]), 5),
            "categories": cats, "cat_intercept": [round(float(x), 5) for x in multi.intercept_], "features": features}


def train_model(clf, sets: dict[str, list[dict]]) -> dict:
    """The model trained on all of `sets`, its threshold chosen by leave-one-set-out inside them (`MODEL_QUANTILE`)."""
    import numpy as np
    from danqing_assets.lib.safety import CharNgramModel

    oof = []
    for inner in sets:
        m = CharNgramModel(_fit(clf, [c for k, v in sets.items() if k != inner for c in v]))
        for c in sets[inner]:
            if c["labels"] == {"safe"} and _context_strength(clf, c["caption"]) < 0.5:
                oof.append(m.unsafe_probability(clf.matching_form(c["caption"])))
    data = _fit(clf, [c for v in sets.values() for c in v])
    data["threshold"] = round(float(np.quantile(oof, MODEL_QUANTILE)), 4)
    data["trained_on"] = sorted(sets)
    return data


def _context_strength(clf, caption: str) -> float:
    ctx: dict[str, float] = {}
    for e in clf._matches(clf.matching_form(caption)):
        if e.kind == "context":
            ctx[e.source] = max(e.weight, ctx.get(e.source, 0.0))
    return sum(ctx.values())


def _write_model(data: dict, path: Path) -> None:
    import json

    sets = ", ".join(data["trained_on"])
    data = {"about": f"Learned second opinion of danqing_assets.lib.safety.SafetyClassifier: logistic regression over "
                     f"character 1-3-grams, trained by benchmarks/bench_safety.py --train-model on the labelled sets "
                     f"{sets} (danqing_assets_tests/lib/data/safety_eval*.tsv as listed in bench_safety.py).", **data}
    path.write_text(json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")


def leave_one_set_out() -> list[tuple]:
    """Per blind set: the blind-time lexicon alone (as first scored), that lexicon + a model trained on every other set,
    and the model alone; each as (recall, false-positive rate)."""
    import subprocess
    import tempfile
    from danqing_assets.lib.safety import SafetyClassifier

    root = Path(__file__).resolve().parent.parent
    sets = all_sets()
    current = SafetyClassifier(model=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for held, commit in BLIND_LEXICONS.items():
            model_path = Path(tmp) / f"model_{held}.json"
            _write_model(train_model(current, {k: v for k, v in sets.items() if k != held and k not in DERIVED[held]}), model_path)
            lex_path = Path(tmp) / f"lexicon_{commit}.txt"
            lex_path.write_bytes(subprocess.run(["git", "show", f"{commit}:danqing_assets/data/safety_lexicon.txt"],
                                                cwd=root, check=True, capture_output=True).stdout)
            lex = evaluate(SafetyClassifier(lex_path, model=False), sets[held])
            both_clf = SafetyClassifier(lex_path, model=model_path)
            both = evaluate(both_clf, sets[held])
            model = both_clf.model
            safe = [c for c in sets[held] if c["labels"] == {"safe"}]
            unsafe = [c for c in sets[held] if c["labels"] != {"safe"}]
            p = lambda c: model.unsafe_probability(both_clf.matching_form(c["caption"])) >= model.threshold
            rows.append((held, commit, model.threshold, (lex["recall"], lex["fp_rate"]), (both["recall"], both["fp_rate"]),
                         (sum(map(p, unsafe)) / len(unsafe), sum(map(p, safe)) / len(safe)),
                         {k: v["recall"] for k, v in both["per"].items()}))
    return rows


def _fmt(x) -> str:
    return "  -  " if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=["tune", "heldout", *FRESH_SETS, "all"], default="all")
    ap.add_argument("--classifier", default="safety")
    ap.add_argument("--errors", action="store_true", help="list misses and false positives")
    ap.add_argument("--loso", action="store_true",
                    help="leave-one-set-out: per blind set, its blind-time lexicon alone vs + a model trained without it")
    ap.add_argument("--train-model", action="store_true",
                    help="train the model on every labelled set and write danqing_assets/data/safety_model.json")
    args = ap.parse_args(argv)
    from danqing_assets.lib.safety import DEFAULT_SAFETY_MODEL, SafetyClassifier, load_text_safety_classifier

    if args.train_model:
        data = train_model(SafetyClassifier(model=False), all_sets())
        _write_model(data, DEFAULT_SAFETY_MODEL)
        print(f"wrote {DEFAULT_SAFETY_MODEL}: {len(data['features'])} n-grams, threshold {data['threshold']}, "
              f"trained on {', '.join(data['trained_on'])}")
        return 0
    if args.loso:
        print("leave-one-set-out: each blind set scored by the lexicon of its blind run, alone and with a model "
              "trained on every other labelled set (recall / false-positive rate)")
        print(f"{'set':<8} {'lexicon':<9} {'t':>6}  {'lexicon alone':<15} {'lexicon + model':<17} {'model alone':<13} per category (lexicon + model)")
        for held, commit, t, lex, both, alone, per in leave_one_set_out():
            cats = " ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()))
            print(f"{held:<8} {commit:<9} {t:>6.3f}  {lex[0]:.2f} / {lex[1]:5.1%}   {both[0]:.2f} / {both[1]:5.1%}     "
                  f"{alone[0]:.2f} / {alone[1]:5.1%}  {cats}")
        return 0

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
