"""Every threshold and option of every Config class and resource is checked before any work starts: NaN, infinities,
values below (or above) a declared bound and unknown option values are refused with a message naming the field."""

import importlib
import math
import pkgutil
import typing
from typing import Literal, get_args, get_origin

import annotated_types
import dagster as dg
import pytest
import yaml
from pydantic import ValidationError

import danqing_assets.defs as defs_pkg
from danqing_assets.definitions import defs
from danqing_assets.defs.common.resources import default_resources
from danqing_assets.defs.common.run_config import config_class_of, config_problems

JOBS = tuple(job.name for job in defs.jobs)  # every job of the code location: together they hold every asset

# str fields that name one of a few options (or a spec with a fixed form): an unknown value must be refused
ENUM_LIKE = {
    ("ImageScoresConfig", "nsfw_scorer"): "clip-zero-shoot",
    ("ClipModelResource", "device"): "gpu0",
    ("EvalConfig", "device"): "cuda0",
    ("ContinuedTrainingConfig", "device"): "gpu",
    ("AblationConfig", "device"): "cuda:x",
    ("ReleaseConfig", "release_name"): "../escape",
    ("FetchImagesConfig", "user_agent"): "bot\r\nX-Injected: 1",
    ("CrawlFeedResource", "listing_template"): "https://data.commoncrawl.org/warc.paths.gz",
    ("CrawlFeedResource", "since"): "../x",
    ("WarehouseResource", "location"): "ftp://bucket/prefix",
    ("WarehouseResource", "s3_endpoint_url"): "127.0.0.1:9000",
}
ENUM_LIKE_LISTS = {("FetchImagesConfig", "allow_networks"): ["127.0.0.1/33"]}
# str fields that are paths, URLs, names or free text: any string is a candidate; their use reports a bad one
FREE_FORM = {
    "WarcFilesConfig": {"source", "base_url"},
    "SourceScoresConfig": {"domain_blacklist_path"},
    "SourceSelectionConfig": {"domain_blacklist_path", "temp_directory"},
    "TextScoresConfig": {"vocab_path", "sensitive_lexicon_path", "temp_directory"},
    "TextRefinementConfig": {"truth_path", "temp_directory"},
    "VisualDiversificationConfig": {"truth_path"},
    "AlignedPairsConfig": {"truth_path"},
    "CuratedPairsConfig": {"index_dir"},
    "FunnelReportConfig": {"snapshots"},
    "ReleaseConfig": {"root"},
    "EvalConfig": {"zero_shot_sets", "retrieval_sets"},
    "PretrainedCheckpointConfig": {"model", "pretrained"},
    "DecontaminationConfig": {"zero_shot_sets", "retrieval_sets"},
    "AblationConfig": {"zero_shot_sets", "retrieval_sets"},
    "WarehouseResource": {"home", "s3_region_name", "s3_profile_name"},
    "S3ClientResource": {"region_name", "endpoint_url", "profile_name"},
    "ImageStoreResource": {"location"},
    "ClipModelResource": {"model_name", "pretrained", "home"},
    "CrawlFeedResource": {"feed"},
}
# the text-safety classifier spec is being reworked with lib/safety.py (its loader refuses unknown specs when the step
# starts); its form is checked there, not here yet
DEFERRED = {("SourceScoresConfig", "text_safety_classifier"), ("SourceSelectionConfig", "text_safety_classifier"),
            ("TextScoresConfig", "text_safety_classifier")}


def op_configs() -> dict[type, tuple[str, str]]:
    """Config class -> (job, op) of every op in the code location's jobs."""
    found = {}
    for job_name in JOBS:
        job = defs.resolve_job_def(job_name)
        for node in job.graph.nodes:
            fields = node.definition.config_schema.as_field().config_type.fields if node.definition.config_schema else {}
            cls = config_class_of(node.definition)
            assert cls is not None or not fields, f"{node.name} has config but no Config class was found"
            if cls is not None:
                found.setdefault(cls, (job_name, node.name))
    return found


def resource_classes() -> dict[type, str]:
    return {type(r): key for key, r in default_resources().items()}


def test_every_config_class_in_defs_is_reached_by_the_check():
    """The walk below covers every Config class the defs modules define (none is left out because no op uses it)."""
    defined = set()
    for mod in pkgutil.walk_packages(defs_pkg.__path__, defs_pkg.__name__ + "."):
        module = importlib.import_module(mod.name)
        defined |= {v for v in vars(module).values() if isinstance(v, type) and issubclass(v, dg.Config)
                    and not issubclass(v, dg.ConfigurableResource) and v.__module__ == module.__name__}
    assert defined and defined <= set(op_configs())


def _bounds(info) -> tuple[float | None, bool, float | None, bool]:
    lo = hi = None
    lo_strict = hi_strict = False
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Gt):
            lo, lo_strict = m.gt, True
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif isinstance(m, annotated_types.Lt):
            hi, hi_strict = m.lt, True
    return lo, lo_strict, hi, hi_strict


def _base(annotation):
    if get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def bad_values() -> tuple[list[tuple[type, str, object, str]], list[str]]:
    """(class, field, bad value, what the message must say) for every numeric and option field; and the fields that
    cannot be tested so (a number without a lower bound, a str field nobody classified)."""
    out, unchecked = [], []
    classes = list(op_configs()) + list(resource_classes())
    for cls in classes:
        for name, info in cls.model_fields.items():
            base = _base(info.annotation)
            key = (cls.__name__, name)
            if base is bool:
                continue
            if base in (int, float):
                lo, lo_strict, hi, hi_strict = _bounds(info)
                if lo is None:
                    unchecked.append(f"{cls.__name__}.{name} declares no lower bound (ge= or gt=)")
                    continue
                out.append((cls, name, lo if lo_strict else (lo - 1 if base is int else lo - 0.5), "greater than"))
                if hi is not None:
                    out.append((cls, name, hi if hi_strict else (hi + 1 if base is int else hi + 0.5), "less than"))
                if base is float:
                    out += [(cls, name, v, f"(got {v!r})") for v in (math.nan, math.inf, -math.inf)]
                else:
                    out.append((cls, name, math.nan, ""))
            elif get_origin(base) is Literal:
                out.append((cls, name, "no-such-option", "no-such-option"))
            elif key in ENUM_LIKE:
                out.append((cls, name, ENUM_LIKE[key], ""))
            elif key in ENUM_LIKE_LISTS:
                out.append((cls, name, ENUM_LIKE_LISTS[key], ""))
            elif name not in FREE_FORM.get(cls.__name__, set()) and key not in DEFERRED:
                unchecked.append(f"{cls.__name__}.{name}: classify it (an option or spec: refuse unknown values and "
                                 "list it in ENUM_LIKE; a path, URL or name: FREE_FORM)")
    return out, unchecked


CASES, UNCHECKED = bad_values()


def test_every_number_is_bounded_and_every_option_is_classified():
    assert UNCHECKED == []


@pytest.mark.parametrize("cls, field, value, says", CASES, ids=[f"{c.__name__}.{f}={v!r}" for c, f, v, _ in CASES])
def test_a_bad_value_is_refused_by_the_run_config_check(cls, field, value, says):
    if issubclass(cls, dg.ConfigurableResource):
        key = resource_classes()[cls]
        job = next((j for j in map(defs.resolve_job_def, JOBS)
                    if any(key in n.definition.required_resource_keys for n in j.graph.nodes)), None)
        if job is None:  # used by the sensor only: configured in code, checked when the code location loads
            with pytest.raises(ValidationError) as err:
                cls(**{field: value})
            assert field in str(err.value)
            return
        run_config = {"resources": {key: {"config": {field: value}}}}
        where = f"resources:{key}:config:{field}"
    else:
        job_name, op = op_configs()[cls]
        job = defs.resolve_job_def(job_name)
        run_config = {"ops": {op: {"config": {field: value}}}}
        where = f"ops:{op}:config:{field}"
    problems = config_problems(job, run_config)
    assert problems, f"{where} = {value!r} was accepted"
    text = "\n".join(problems)
    assert field in text and says in text, text
    # the run config as a user writes it (YAML: .nan, .inf) is refused the same way
    assert config_problems(job, yaml.safe_load(yaml.safe_dump(run_config)))


def test_the_defaults_pass():
    for job_name in JOBS:
        assert config_problems(defs.resolve_job_def(job_name), {}) == []


def test_related_values_out_of_order_are_refused():
    job = defs.resolve_job_def("curation_job")
    assert "low_quantile (0.9) is above high_quantile (0.5)" in "\n".join(config_problems(
        job, {"ops": {"aligned_pairs": {"config": {"low_quantile": 0.9, "high_quantile": 0.5}}}}))
    assert "min_similarity (0.5) is above max_similarity (0.2)" in "\n".join(config_problems(
        job, {"ops": {"aligned_pairs": {"config": {"min_similarity": 0.5, "max_similarity": 0.2}}}}))


def _curation_job():
    return defs.resolve_job_def("curation_job")


def test_a_launched_run_with_bad_config_fails_before_its_first_step(tmp_path):
    """Before: the run ingested and scored (the step with the bad value failed last, or NaN was used as a threshold);
    now the run fails before any step starts, naming each bad value."""
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        instance.add_dynamic_partitions("snapshots", ["s"])
        result = dg.execute_job(
            dg.reconstructable(_curation_job), instance=instance, tags={"dagster/partition": "s"},
            run_config={"ops": {"visually_diversified_pairs": {"config": {"max_nsfw_score": math.nan,
                                                                            "max_aspect": -1.0}}},
                        "execution": {"config": {"in_process": {}}}},
            raise_on_error=False)
        events = [r.dagster_event for r in instance.all_logs(result.run_id) if r.dagster_event]
    assert not result.success
    assert not [e for e in events if e.event_type == dg.DagsterEventType.STEP_START]
    failure = next(e for e in events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    message = str(failure.event_specific_data.error.message)
    assert "run config refused before any step ran (2 bad values)" in message
    assert "visually_diversified_pairs.config.max_nsfw_score: Input should be a finite number (got nan)" in message
    assert "max_aspect: Input should be greater than or equal to 1" in message


def test_the_cli_refuses_bad_config_before_it_starts_a_run(tmp_path, monkeypatch, capsys):
    from danqing_assets.cli import main

    monkeypatch.setenv("DANQING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    assert main(["snapshot", "add", "s", str(crawl)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("ops:\n  image_scores:\n    config:\n      nsfw_scorer: nudenet\n      max_pixels: -5\n")
    assert main(["materialize", "s", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown nsfw scorer 'nudenet'" in err and "max_pixels: Input should be greater than or equal to 1" in err
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        assert instance.get_runs_count() == 0
