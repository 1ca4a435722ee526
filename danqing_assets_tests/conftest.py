import os

# An accidental model download must fail at once, not after a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Fuzz tests (danqing_assets_tests/fuzz/): "ci" (the default) is small and derandomized, so CI is quick and repeatable;
# `pytest danqing_assets_tests/fuzz --hypothesis-profile=long` searches for longer, with fresh random inputs each run
# and a local example database. Registered here, before pytest reads --hypothesis-profile.
_FUZZ = dict(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                    HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, derandomize=True, deadline=5000, database=None, print_blob=True,
                          **_FUZZ)
settings.register_profile("long", max_examples=5000, derandomize=False, deadline=5000, print_blob=True, **_FUZZ)
settings.load_profile("ci")


@pytest.fixture
def local_s3(monkeypatch):
    """A real S3 server (moto) on 127.0.0.1: yields (endpoint URL, make_client). Test credentials are set in the
    environment, so clients built elsewhere (dagster-aws resources, worker processes) reach it too."""
    import boto3
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"

    def make_client():
        return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    yield endpoint, make_client
    server.stop()
