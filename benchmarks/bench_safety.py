"""Per-category precision and recall of the text-safety classifier on the independent evaluation sets; training and
leave-one-set-out evaluation of its learned model.

    .venv/bin/python benchmarks/bench_safety.py                 # every evaluation split, side by side
    .venv/bin/python benchmarks/bench_safety.py --split fresh6  # one split
    .venv/bin/python benchmarks/bench_safety.py --errors        # also list every miss and false positive
    .venv/bin/python benchmarks/bench_safety.py --classifier safety-lexicon   # the lexicon alone
    .venv/bin/python benchmarks/bench_safety.py --loso          # per lexicon-blind set: lexicon vs lexicon + model
    .venv/bin/python benchmarks/bench_safety.py --train-model   # retrain danqing_assets/data/safety_model.json

The sets (`danqing_assets_tests/lib/data/`, each file's header gives author, date and provenance):
- evaluation: `safety_eval.tsv` (hand-written before the lexicon; a case is held out when md5(caption) mod 3 == 0,
  but the lexicon's author knew them, so "heldout" overstates generalisation), then the "fresh" sets, each written
  blind by a helper session that read neither the classifier, its lexicon nor another set, scored once, and (fresh1-4)
  tuned on afterwards: fresh1 (round 2), fresh2 (round 3), fresh3 (round 4), fresh4 (round 5), fresh5 (not tuned on),
  fresh6 (written blind for the first learned model, scored once with it, then trained on), fresh7 (written blind for
  the second, never trained or calibrated on); their first scores are in their headers and in the README. tune3-5
  (`safety_eval_fresh2b/3b/4b.tsv`) are probes and look-alikes written by the lexicon's author after reading a blind
  set's errors: not independent. Blind first scores of the lexicon: fresh2 0.62 / 4.0 %,
  fresh3 0.81 / 5.4 %, fresh4 0.77 / 6.7 %, fresh5 0.72 / 7.0 % (recall / safe captions flagged): tuning the lexicon
  on each blind set did not move the next one, hence the learned model.
- training (`safety_train_*.tsv`, `TRAIN_SETS`): w1-w7, unsafe captions, safe look-alikes and ordinary captions, and
  o1-o3, ordinary captions only, each written by a helper session that read neither the classifier nor another set.
  The model is trained on every set but the held-out one (`HELD_OUT`); its two cut-offs are chosen on the
  lexicon-blind sets (`CALIBRATION`), each scored by a model trained without it (`train_model`).

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
              "tune5": EVAL_DIR / "safety_eval_fresh4b.tsv", "fresh5": EVAL_DIR / "safety_eval_fresh5.tsv",
              "fresh6": EVAL_DIR / "safety_eval_fresh6.tsv", "fresh7": EVAL_DIR / "safety_eval_fresh7.tsv"}


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


TRAIN_SETS = {name: EVAL_DIR / f"safety_train_{name}.tsv"
              for name in ("w1", "w2", "w3", "w4", "w5", "w6", "w7", "o1", "o2", "o3")}
"""Labelled sets written for training only (their headers: helper sessions that never read the classifier, its lexicon
or another set): w1-w7 unsafe cases and safe look-alikes and ordinary captions, o1-o3 ordinary captions only."""
HELD_OUT = ("fresh7",)
"""Never trained or calibrated on: the blind set scored once with the shipped model (its header has that score).
fresh6, held out from the first model and scored once with it, is trained on since."""
DERIVED = {"fresh2": ("tune3",), "fresh3": ("tune4",), "fresh4": ("tune5",)}
"""The probe sets written after reading a blind set's errors: left out of training with it (they carry its families)."""
LEXICON_BLIND = ("fresh5", "fresh6", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "o1", "o2", "o3")
"""The sets the current lexicon was never tuned on (on the others the lexicon looks better than it is)."""
CALIBRATION = ("fresh5", "fresh6", "w1", "w2", "w3", "w4", "w5", "w6", "w7")
"""The model's cut-offs are chosen on these lexicon-blind sets, each scored by a model trained without it: unsafe
cases, look-alikes and ordinary captions in about the proportions of the evaluation sets. o1-o3 (ordinary captions
only) are trained on, not calibrated on: held out, each would leave the model with a part of the ordinary text it
ships with missing, and its false positives would say more about that than about the shipped model."""
MODEL_C = 10.0
MODEL_VIEWS = ("chars",)
"""The views the model is trained on (`safety.MODEL_VIEWS`). The pinyin-syllable view doubles the cost of scoring
(stage-2 scoring fell to 0.79x bare jieba) and added nothing on the calibration sets (chars + syllables 0.855 recall
at 1.5 % false positives, chars alone 0.865); homophones are the lexicon's job (it matches them in syllable space)."""
MODEL_WINDOW = (12, 6)
"""Windows (characters, stride) the veto reads a long caption in (`CharNgramModel.local_probability`)."""
MODEL_MIN_DISTINCT = 6
"""Distinct characters a caption needs before the model may flag or clear it (`CharNgramModel`)."""
MAX_CALIBRATION_FP = 0.015
"""The cut-offs keep at most this share of the calibration sets' safe captions flagged (target 2 %, with a margin)."""


def all_sets(*, held_out: bool = False) -> dict[str, list[dict]]:
    """Every labelled set by name (the md5 tune / heldout halves of safety_eval.tsv together as "orig"); the held-out
    sets (`HELD_OUT`) only when asked for."""
    sets = {"orig": load_cases()}
    for name, path in {**FRESH_SETS, **TRAIN_SETS}.items():
        if held_out or name not in HELD_OUT:
            sets[name] = load_cases(path, split=name)
    return sets


def _lexicon_scores(clf, cases: list[dict]):
    """Per case, the best stage score of the lexicon alone (the classifier's model is not consulted)."""
    import numpy as np
    from danqing_assets.lib.safety import SafetyClassifier, stage_scores

    lex = clf if clf.model is None else SafetyClassifier(clf.path, model=False)
    captions = [c["caption"] for c in cases]
    return np.array([max(a.score, b.score) for a, b in zip(stage_scores(lex, captions, "source"),
                                                         stage_scores(lex, captions, "text"))])


def _fit(clf, cases: list[dict]) -> dict:
    """A `CharNgramModel` dict (cut-offs left at 0.5 / 0) trained on `cases` (sklearn, dev-time only)."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from danqing_assets.lib.safety import _view

    sks = [clf.matching_form(c["caption"]) for c in cases]
    y = [0 if c["labels"] == {"safe"} else 1 for c in cases]
    vecs, mats = [], []
    for view in MODEL_VIEWS:
        docs = [_view(sk, view) for sk in sks]
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2, lowercase=False)
        mats.append(vec.fit_transform(docs))
        vecs.append(vec)
    X = hstack(mats).tocsr()
    binary = LogisticRegression(C=MODEL_C, max_iter=5000).fit(X, y)
    rows = [(i, lab) for i, c in enumerate(cases) if c["labels"] != {"safe"} for lab in sorted(c["labels"])]
    cats = sorted({lab for _, lab in rows})
    multi = LogisticRegression(C=MODEL_C, max_iter=5000).fit(X[[i for i, _ in rows]], [lab for _, lab in rows])
    assert list(multi.classes_) == cats
    features, offset = {}, 0
    for view, vec in zip(MODEL_VIEWS, vecs):
        table = {}
        for g, j in sorted(vec.vocabulary_.items()):
            col = offset + j
            table[g] = [round(float(vec.idf_[j]), 5), round(float(binary.coef_[0, col]), 5),
                        *(round(float(multi.coef_[k, col]), 5) for k in range(len(cats)))]
        features[view] = table
        offset += len(vec.vocabulary_)
    return {"format": "danqing-safety-charngram-2", "threshold": 0.5, "veto": 0.0, "views": list(MODEL_VIEWS),
            "window": list(MODEL_WINDOW), "min_distinct": MODEL_MIN_DISTINCT,
            "intercept": round(float(binary.intercept_[0]), 5), "categories": cats,
            "cat_intercept": [round(float(x), 5) for x in multi.intercept_], "features": features}


def _training_sets(sets: dict[str, list[dict]], without: str) -> list[dict]:
    return [c for k, v in sets.items() if k != without and k not in DERIVED.get(without, ()) for c in v]


def fused_flags(p, local, distinct, lex, veto: float, threshold: float, min_distinct: int = MODEL_MIN_DISTINCT):
    """What `SafetyClassifier` with a model flags (its `_second_opinion`, vectorised for the cut-off search; a test
    checks the two agree), from P(unsafe), the local P(unsafe), the distinct characters and the lexicon's best stage
    score of each caption (numpy arrays)."""
    enough = distinct >= min_distinct
    return ((lex >= 0.5) & ((local >= veto) | ~enough)) | ((lex < 0.5) & (p >= threshold) & enough)


def choose_cutoffs(oof: dict, max_fp: float = MAX_CALIBRATION_FP) -> tuple[float, float, float, float]:
    """(veto, threshold, recall, fp) of the fused rule (`fused_flags`) on the out-of-fold scores `oof`
    (`out_of_fold`) with the best recall whose false-positive rate on the safe cases is <= max_fp (ties: the higher
    cut-offs)."""
    import numpy as np

    unsafe = oof["unsafe"]
    best = None
    for t in np.round(np.arange(0.50, 0.99, 0.01), 2):
        for v in np.round(np.arange(0.0, min(t, 0.6) + 1e-9, 0.05), 2):
            flag = fused_flags(oof["p"], oof["local"], oof["distinct"], oof["lex"], v, t)
            fp = flag[~unsafe].mean()
            if fp > max_fp:
                continue
            key = (flag[unsafe].mean(), t, v)
            if best is None or key > best[0]:
                best = (key, fp)
    if best is None:
        raise ValueError(f"no cut-offs keep the calibration false positives <= {max_fp:.1%}")
    (recall, t, v), fp = best
    return float(v), float(t), float(recall), float(fp)


def out_of_fold(clf, sets: dict[str, list[dict]], names) -> dict:
    """Every case of the sets `names` scored by a model trained without its set: P(unsafe) "p", the local P(unsafe)
    "local", the skeleton's distinct characters "distinct", the lexicon's best stage score "lex" and the label
    "unsafe" (numpy arrays, in the order of `names`)."""
    import numpy as np
    from danqing_assets.lib.safety import CharNgramModel

    cols: dict[str, list] = {"p": [], "local": [], "distinct": [], "lex": [], "unsafe": []}
    for name in names:
        m = CharNgramModel(_fit(clf, _training_sets(sets, name)))
        sks = [clf.matching_form(c["caption"]) for c in sets[name]]
        cols["p"] += [m.unsafe_probability(sk) for sk in sks]
        cols["local"] += [m.local_probability(sk) for sk in sks]
        cols["distinct"] += [len(set(sk)) for sk in sks]
        cols["lex"] += list(_lexicon_scores(clf, sets[name]))
        cols["unsafe"] += [c["labels"] != {"safe"} for c in sets[name]]
    return {k: np.array(v) for k, v in cols.items()}


def train_model(clf, sets: dict[str, list[dict]]) -> dict:
    """The model trained on all of `sets`; its cut-offs chosen on the calibration sets among them (`CALIBRATION`), each
    scored by a model trained without it (`choose_cutoffs`)."""
    calib = [k for k in CALIBRATION if k in sets]
    veto, threshold, recall, fp = choose_cutoffs(out_of_fold(clf, sets, calib))
    data = _fit(clf, [c for v in sets.values() for c in v])
    data.update(threshold=threshold, veto=veto, trained_on=sorted(sets),
                calibration={"sets": calib, "recall": round(recall, 4), "false_positive_rate": round(fp, 4)})
    return data


def _write_model(data: dict, path: Path) -> None:
    import json

    sets = ", ".join(data["trained_on"])
    views = " and ".join({"chars": "character", "syllables": "pinyin-syllable"}[v] for v in data["views"])
    data = {**data, "about": f"Learned part of danqing_assets.lib.safety.SafetyClassifier: logistic regressions over "
                             f"{views} 1-3-grams, trained by benchmarks/bench_safety.py --train-model on the labelled "
                             f"sets {sets} (danqing_assets_tests/lib/data/safety_*.tsv as listed in bench_safety.py)."}
    path.write_text(json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")


def leave_one_set_out() -> list[tuple]:
    """Per lexicon-blind set with unsafe cases: the lexicon alone, the lexicon with a model trained and calibrated
    without it, and that model alone (at its threshold); each as (recall, false-positive rate), plus the per-category
    recall of the fused classifier."""
    import tempfile
    from danqing_assets.lib.safety import SafetyClassifier

    sets = all_sets()
    lexicon = SafetyClassifier(model=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for held in LEXICON_BLIND:
            if not any(c["labels"] != {"safe"} for c in sets[held]):
                continue
            rest = {k: v for k, v in sets.items() if k != held and k not in DERIVED.get(held, ())}
            path = Path(tmp) / f"model_{held}.json"
            _write_model(train_model(lexicon, rest), path)
            fused = SafetyClassifier(model=path)
            lex, both = evaluate(lexicon, sets[held]), evaluate(fused, sets[held])
            model = fused.model
            safe = [c for c in sets[held] if c["labels"] == {"safe"}]
            unsafe = [c for c in sets[held] if c["labels"] != {"safe"}]
            p = lambda c: model.unsafe_probability(fused.matching_form(c["caption"])) >= model.threshold
            rows.append((held, model.veto, model.threshold, (lex["recall"], lex["fp_rate"]), (both["recall"], both["fp_rate"]),
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
                    help="leave-one-set-out: per lexicon-blind set, the lexicon alone vs + a model trained without it")
    ap.add_argument("--train-model", action="store_true",
                    help="train the model on every labelled set and write danqing_assets/data/safety_model.json")
    args = ap.parse_args(argv)
    from danqing_assets.lib.safety import DEFAULT_SAFETY_MODEL, SafetyClassifier, load_text_safety_classifier

    if args.train_model:
        data = train_model(SafetyClassifier(model=False), all_sets())
        _write_model(data, DEFAULT_SAFETY_MODEL)
        cal = data["calibration"]
        print(f"wrote {DEFAULT_SAFETY_MODEL}: {sum(map(len, data['features'].values()))} n-grams, veto {data['veto']}, "
              f"threshold {data['threshold']} (calibration on {', '.join(cal['sets'])}: recall {cal['recall']:.3f}, "
              f"false positives {cal['false_positive_rate']:.2%}), trained on {', '.join(data['trained_on'])}")
        return 0
    if args.loso:
        print("leave-one-set-out: each set the lexicon was never tuned on, scored by the lexicon alone, by the lexicon "
              "with a model trained and calibrated without it, and by that model alone (recall / false-positive rate)")
        print(f"{'set':<8} {'veto':>5} {'t':>5}  {'lexicon alone':<15} {'lexicon + model':<17} {'model alone':<13} "
              "per category (lexicon + model)")
        for held, veto, t, lex, both, alone, per in leave_one_set_out():
            cats = " ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()))
            print(f"{held:<8} {veto:>5.2f} {t:>5.2f}  {lex[0]:.2f} / {lex[1]:5.1%}   {both[0]:.2f} / {both[1]:5.1%}     "
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
