"""The stage registry is held to the code: reasons, SQL, assets and groups must agree with it."""

import re
from pathlib import Path

import pytest

from danqing_assets.lib import reasons as R
from danqing_assets.lib import stages
from danqing_assets.lib.sql import SQL_DIR, load_sql, strip_literals

PACKAGE = Path(stages.__file__).resolve().parents[1]
_THEN_LITERAL = re.compile(r"\bTHEN\s+'([a-z][a-z0-9_]*)'", re.I)
# a CASE expression (without nested CASEs) whose value is named reason or rule_reason
_REASON_CASE = re.compile(r"\bCASE\b((?:(?!\bCASE\b|\bEND\b).)*)\bEND\s+AS\s+(?:rule_)?reason\b", re.I | re.S)


def sql_reasons(name: str) -> set[str]:
    """The reason literals a decision query can return: `THEN 'reason'` in the CASE expressions that produce its
    `reason` (or `rule_reason`) column."""
    text = re.sub(r"--[^\n]*", " ", load_sql(name))
    return {r for block in _REASON_CASE.findall(text) for r in _THEN_LITERAL.findall(block)}


def reason_constant(reason: str) -> str:
    names = [k for k, v in vars(R).items() if k.isupper() and v == reason]
    assert len(names) == 1, f"reason {reason!r} needs exactly one constant in lib/reasons.py, has {names}"
    return names[0]


FILTERS = [s for s in stages.PIPELINE if s.ledger]


@pytest.mark.parametrize("stage", FILTERS, ids=lambda s: s.group)
def test_sql_returns_exactly_the_registered_sql_reasons(stage):
    if not stage.assets:
        pytest.skip(f"{stage.group} has not landed yet: its reasons are reserved")
    returned = set().union(*(sql_reasons(f) for f in stage.sql)) if stage.sql else set()
    assert returned <= set(stage.reasons), f"{stage.group}: SQL returns unregistered reasons {returned - set(stage.reasons)}"
    assert set(stage.reasons) - stage.code_reasons == returned, (
        f"{stage.group}: registered SQL reasons the SQL never returns: {set(stage.reasons) - stage.code_reasons - returned}"
    )


@pytest.mark.parametrize("stage", FILTERS, ids=lambda s: s.group)
def test_every_code_reason_is_produced_somewhere_in_code(stage):
    sources = [p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")
               if p.name not in ("reasons.py", "stages.py")]
    for reason in stage.code_reasons:
        assert reason in stage.reasons
        const = reason_constant(reason)
        used = any(re.search(rf"\b{const}\b", src) or f'"{reason}"' in src for src in sources)
        if stage.assets:  # a stage still to land (stage 4) reserves its reasons
            assert used, f"{stage.group}: reason {reason!r} is registered as produced in code but nothing produces it"


def test_reasons_are_snake_case_and_unique_within_a_stage():
    for stage in FILTERS:
        assert len(set(stage.reasons)) == len(stage.reasons), stage.group
        for r in stage.reasons:
            assert R.is_valid_reason(r), r
            reason_constant(r)


def test_sql_files_follow_the_naming_rule_and_belong_to_a_stage():
    registered = {f for s in stages.PIPELINE for f in s.sql}
    on_disk = {str(p.relative_to(SQL_DIR)) for p in SQL_DIR.rglob("*.sql")}
    assert on_disk == registered, "every decision query is registered with its stage, and only those exist"
    for stage in stages.PIPELINE:
        for f in stage.sql:
            folder, name = f.split("/")
            assert folder == stage.group
            assert name[:-4] in stage.assets, f"{f}: a decision query is named after the asset it decides"


def test_decision_queries_return_pair_id_reason_detail():
    for f in (f for s in stages.PIPELINE for f in s.sql):
        last_select = strip_literals(load_sql(f)).rsplit("\nSELECT", 1)[1]
        columns = re.findall(r"(?:^|,)\s*(pair_id)\b|\bAS\s+(reason|detail)\b", last_select)
        names = [a or b for a, b in columns]
        assert names == ["pair_id", "reason", "detail"], f"{f} returns {names}"


def test_registry_describes_the_defs_tree():
    defs_dir = PACKAGE / "defs"
    modules = sorted(p.stem for p in defs_dir.glob("s*_*.py"))
    groups = [s.group for s in stages.PIPELINE if s.assets]
    assert modules == sorted(groups), "one module per stage, named after its group"
    assert groups == sorted(groups), "stage modules sort in pipeline order"


def test_every_registered_asset_is_defined_and_every_asset_registered():
    from danqing_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    defined = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    registered = {a: s.group for s in stages.PIPELINE for a in s.assets}
    assert defined == registered


def test_derived_views():
    assert stages.LEDGER_STAGES == ("source", "text", "fetch", "image", "cross_modal", "cross_batch")
    assert stages.stage_of("no_noun") == "text"
    assert stages.stage_of("decode_error") == "fetch"  # the first stage that can reject for it
    assert stages.reason_order("image")["unscored"] < stages.reason_order("image")["too_small"]
    assert stages.SOURCE.paper_kept == pytest.approx(706 / 1050)
    with pytest.raises(KeyError):
        stages.stage_of("no_such_reason")
