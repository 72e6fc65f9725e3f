"""Configuration hygiene: passwords are masked in every DSN and URL shape and scrubbed
from error texts; secrets come from the environment or from files only their owner may
read, and a config file holding one must be as private."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from paycore.config import load_settings, read_secret_file
from paycore.locks import open_lock_service
from paycore.redaction import redact_dsn, redact_text, redact_url, secrets_in

SECRET = "whsec_0123456789abcdef"

REDACTED = {
    # libpq URIs, multi-host, query passwords
    "postgresql://u:s3cret@db/l": "postgresql://u:***@db/l",
    "postgresql://u:s3cret@h1:5432,h2:5433/l?target_session_attrs=read-write": (
        "postgresql://u:***@h1:5432,h2:5433/l?target_session_attrs=read-write"
    ),
    "postgres://u:p%40ss@db/l?sslpassword=k3y&sslmode=require": (
        "postgres://u:***@db/l?sslpassword=***&sslmode=require"
    ),
    "postgresql://u:p@ss@db/l": "postgresql://u:***@db/l",  # an unencoded @ in it
    "postgresql://u@db/l": "postgresql://u@db/l",
    # libpq key=value, quoted or not, multi-host
    "host=db1,db2 port=5432,5433 user=u password=s3cret dbname=l": (
        "host=db1,db2 port=5432,5433 user=u password=*** dbname=l"
    ),
    "host=db password = 'a b\\' c' dbname=l": "host=db password = *** dbname=l",
    "host=db PASSWORD=abc dbname=l": "host=db PASSWORD=*** dbname=l",
    "host=127.0.0.1 password s3cret": "host=127.0.0.1 password ***",  # libpq refuses it
    # Redis
    "redis://:s3cret@h:6379/0": "redis://:***@h:6379/0",
    "rediss://default:s3cret@h:1/0?password=q&x=1": "rediss://default:***@h:1/0?password=***&x=1",
    "unix:///run/redis.sock?db=0&password=s3cret": "unix:///run/redis.sock?db=0&password=***",
    "redis://127.0.0.1:6379/0": "redis://127.0.0.1:6379/0",
    "local": "local",
}


@pytest.mark.parametrize("dsn", list(REDACTED))
def test_redact_dsn_masks_the_password_of_every_shape(dsn: str) -> None:
    """libpq URIs (multi-host, ``sslpassword``), key=value DSNs (quoted or not), Redis
    URLs (user or not, query password): the password is masked, the rest kept."""
    assert redact_dsn(dsn) == REDACTED[dsn]
    assert redact_url(dsn) == REDACTED[dsn]
    for secret in secrets_in(dsn):
        if len(secret) >= 3:
            assert secret not in redact_dsn(dsn)


def test_redact_text_scrubs_passwords_an_error_quotes() -> None:
    """An error text that quotes a DSN's password (as libpq does for a malformed one)
    shows none once scrubbed with ``secrets_in``; URLs inside free text are masked."""
    dsn = "host=db password='pa ss w0rd' dbname=l"
    error = 'invalid dsn: missing "=" after "pa ss w0rd" in connection info string'
    assert "w0rd" not in redact_text(error, secrets_in(dsn))
    text = "cannot reach redis://:hunter22@10.0.0.1:6379/0 (timeout)"
    assert redact_text(text) == "cannot reach redis://:***@10.0.0.1:6379/0 (timeout)"


def test_a_bad_lock_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="no lock backend") as info:
        open_lock_service("mysql://u:hunter22@db/l")
    assert "hunter22" not in str(info.value)


# -- where secrets come from --------------------------------------------------------------------


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    """A secret file open to its group or others is refused, naming the fix; a private
    one is read without its trailing newline; missing or empty ones are refused."""
    path = _private(tmp_path / "secret", SECRET + "\n")
    assert read_secret_file(path, what="x") == SECRET
    for mode in (0o640, 0o604, 0o660):
        path.chmod(mode)
        with pytest.raises(ValueError, match="chmod 600"):
            read_secret_file(path, what="x")
    with pytest.raises(ValueError, match="cannot read"):
        read_secret_file(tmp_path / "absent", what="x")
    with pytest.raises(ValueError, match="empty"):
        read_secret_file(_private(tmp_path / "empty", "\n"), what="x")


def test_secrets_come_from_files_or_the_environment(tmp_path: Path) -> None:
    """``dsn_file``, ``webhook_secret_file``, ``secrets_file`` and ``PAYCORE_*`` variables
    (or ``PAYCORE_*_FILE``) fill the secret settings; the environment wins; the config
    file, holding no secret itself, may be world-readable."""
    dsn_file = _private(tmp_path / "dsn", "host=db password=s3cret dbname=s0\n")
    hook_file = _private(tmp_path / "hook", f"{SECRET}\nwhsec_old_0123456789\n")
    proc_file = _private(tmp_path / "proc", "whsec_processor_0123456789")
    url_file = _private(tmp_path / "redis", "redis://:s3cret@h:6379/0")
    config = tmp_path / "paycore.toml"
    config.write_text(
        f'[[shards]]\nname = "s0"\nbackend = "postgres"\ndsn_file = "{dsn_file}"\n'
        '[[shards]]\nname = "s-1"\nbackend = "postgres"\n'
        f'[[processors]]\nname = "acq-a"\nurl = "http://p:1"\nwebhook_secret_file = "{proc_file}"\n'
        f'[[webhooks]]\nurl = "https://h.example/in"\nsecrets_file = "{hook_file}"\n'
    )
    config.chmod(0o644)
    env = {"PAYCORE_SHARD_S_1_DSN": "host=db2 password=x dbname=s1",
           "PAYCORE_LOCKS_URL_FILE": str(url_file)}  # fmt: skip
    settings = load_settings(config, env=env)
    assert [s.dsn for s in settings.shards] == [
        "host=db password=s3cret dbname=s0",
        "host=db2 password=x dbname=s1",
    ]
    assert settings.processors[0].webhook_secret == "whsec_processor_0123456789"
    assert settings.webhooks[0].secrets == (SECRET, "whsec_old_0123456789")
    assert settings.locks_url == "redis://:s3cret@h:6379/0"
    env = {"PAYCORE_PROCESSOR_ACQ_A_WEBHOOK_SECRET": "whsec_from_env_0123456789",
           "PAYCORE_WEBHOOK_0_SECRETS": "whsec_env_new_0123456789,whsec_env_old_0123456789",
           "PAYCORE_SHARD_S_1_DSN": "host=db2 dbname=s1",
           "PAYCORE_LOCKS_URL": "local"}  # fmt: skip
    settings = load_settings(config, env=env)
    assert settings.processors[0].webhook_secret == "whsec_from_env_0123456789"
    assert settings.webhooks[0].secrets[1] == "whsec_env_old_0123456789"
    assert settings.locks_url == "local"


def test_a_config_file_holding_secrets_must_be_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Inline secrets (a DSN or Redis password, webhook or processor secrets) are refused
    in a file its group or others may read, naming them but not their values; at 0600
    they load; a DSN without a password is no secret; ``x`` and ``x_file`` exclude each other."""
    config = tmp_path / "paycore.toml"
    config.write_text(
        'locks_url = "redis://:hunter22@h:6379/0"\n'
        '[[shards]]\nname = "s0"\nbackend = "postgres"\ndsn = "host=db password=s3cret"\n'
        f'[[webhooks]]\nurl = "https://h.example/in"\nsecrets = ["{SECRET}"]\n'
    )
    config.chmod(0o644)
    with caplog.at_level(logging.DEBUG), pytest.raises(ValueError, match="chmod 600") as info:
        load_settings(config, env={})
    message = str(info.value)
    assert "locks_url" in message
    assert "shards[s0].dsn" in message
    assert "webhooks[0].secrets" in message
    for secret in ("hunter22", "s3cret", SECRET):
        assert secret not in message
        assert secret not in caplog.text
    config.chmod(0o600)
    assert load_settings(config, env={}).shards[0].dsn == "host=db password=s3cret"
    plain = tmp_path / "plain.toml"
    plain.write_text('[[shards]]\nname = "s0"\nbackend = "postgres"\ndsn = "host=db dbname=s0"\n')
    plain.chmod(0o644)
    assert load_settings(plain, env={}).shards[0].dsn == "host=db dbname=s0"
    both = tmp_path / "both.toml"
    both.write_text(
        '[[shards]]\nname = "s0"\nbackend = "postgres"\ndsn = "host=db"\ndsn_file = "/x"\n'
    )
    with pytest.raises(ValueError, match="not both"):
        load_settings(both, env={})
