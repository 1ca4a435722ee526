import os

# An accidental model download must fail at once, not after a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


import pytest  # noqa: E402


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
