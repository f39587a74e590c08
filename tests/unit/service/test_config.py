from pathlib import Path

import pytest

from poet_grpc.config import Settings, redacted_db, split_address


def test_environment_then_overrides():
    env = {"POET_GRPC_LISTEN": "0.0.0.0:6000", "POET_DB": "/tmp/x.db", "POET_GATEWAY": "false", "POET_CHECKPOINT_SECONDS": "2.5"}
    settings = Settings.from_env(env, grpc_listen="127.0.0.1:7000", http_listen=None)
    assert settings.grpc_listen == "127.0.0.1:7000"  # the flag wins
    assert settings.http_listen == "127.0.0.1:8080"  # None means "not given"
    assert settings.db == Path("/tmp/x.db")
    assert settings.gateway is False
    assert settings.checkpoint_seconds == 2.5


@pytest.mark.parametrize("url", ["postgresql://poet:secret@db:5432/poet", "postgres://db/poet"])
def test_a_postgresql_url_selects_postgresql_and_stays_a_url(url):
    # A Path would fold "//" and make it a file name.
    assert Settings.from_env({"POET_DB": url}).db == url
    assert Settings.from_env({}, db=url).db == url
    assert "secret" not in redacted_db(url) and redacted_db(Path("x.db")) == "x.db"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"POET_GRPC_LISTEN": "nonsense"}, "grpc_listen must be host:port"),
        ({"POET_HTTP_LISTEN": "127.0.0.1:99999"}, "http_listen must be host:port"),
        ({"POET_GATEWAY": "maybe"}, "POET_GATEWAY must be true or false"),
        ({"POET_MAX_CODE_BYTES": "lots"}, "POET_MAX_CODE_BYTES must be int"),
        ({"POET_MAX_CODE_BYTES": "0"}, "max_code_bytes must be positive"),
        ({"POET_SQLITE_SYNCHRONOUS": "OFF"}, "sqlite_synchronous must be"),
    ],
)
def test_bad_settings_name_the_setting(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_split_address_handles_ipv6():
    assert split_address("[::1]:50051") == ("::1", 50051)
    assert split_address("localhost:0") == ("localhost", 0)
