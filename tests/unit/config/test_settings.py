from pathlib import Path

import pytest

from callbridge.config.settings import Settings, all_fields, env_name, load_settings
from callbridge.core.errors import ConfigError


def test_defaults_need_no_file_and_no_env() -> None:
    s = load_settings(environ={})
    assert (s.sip.host, s.sip.port) == ("0.0.0.0", 5060)
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert s.rtp.timeout == 30.0
    assert s.default_agent == "voice"
    assert s.llm.provider == "demo"  # offline brain, no account needed


@pytest.mark.parametrize(
    ("dotted", "env"),
    [
        ("sip.host", "CALLBRIDGE_SIP_HOST"),
        ("sip.port", "CALLBRIDGE_SIP_PORT"),
        ("http.host", "CALLBRIDGE_HTTP_HOST"),
        ("http.port", "CALLBRIDGE_HTTP_PORT"),
        ("data_dir", "CALLBRIDGE_DATA_DIR"),
        ("public_url", "CALLBRIDGE_PUBLIC_URL"),
        ("api_token", "CALLBRIDGE_API_TOKEN"),
    ],
)
def test_public_env_names(dotted: str, env: str) -> None:
    assert env_name(dotted) == env
    assert dotted in dict(all_fields())


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('data_dir = "/srv/cb"\n[sip]\nport = 5070\nhost = "127.0.0.1"\n')
    s = load_settings(cfg, environ={"CALLBRIDGE_SIP_PORT": "5080"})
    assert s.sip.port == 5080
    assert s.sip.host == "127.0.0.1"
    assert s.data_dir == "/srv/cb"


def test_config_file_from_env(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[rtp]\ntimeout = 12.5\n")
    assert load_settings(environ={"CALLBRIDGE_CONFIG": str(cfg)}).rtp.timeout == 12.5


@pytest.mark.parametrize(
    ("env", "field", "words"),
    [
        ({"CALLBRIDGE_SIP_PORT": "abc"}, "sip.port", "integer"),
        ({"CALLBRIDGE_SIP_PORT": "70000"}, "sip.port", "0-65535"),
        ({"CALLBRIDGE_LOG_FORMAT": "xml"}, "log.format", "text, json"),
        ({"CALLBRIDGE_PUBLIC_URL": "example.com"}, "public_url", "https://"),
        ({"CALLBRIDGE_RTP_PORT_MIN": "30000"}, "rtp.port_min", "rtp.port_max"),
        ({"CALLBRIDGE_RTP_CODECS": "PCMU,G729"}, "rtp.codecs", "PCMU, PCMA"),
        ({"CALLBRIDGE_SIP_T1": "0"}, "sip.t1", "> 0"),
        ({"CALLBRIDGE_SIP_ALLOW_FROM": "10.0.0.0/8, intranet"}, "sip.allow_from", "'intranet'"),
        ({"CALLBRIDGE_SIP_AUTH_ROUTES": "agent"}, "sip.auth_users", "CALLBRIDGE_SIP_AUTH_USERS"),
        ({"CALLBRIDGE_SIP_AUTH_USERS": "alice"}, "sip.auth_users", "user:password"),
        ({"CALLBRIDGE_SIP_AUTH_ALGORITHMS": "SHA-512"}, "sip.auth_algorithms", "SHA-256"),
        (
            {
                "CALLBRIDGE_ACCOUNTS_T_REGISTRAR": "sip.example.net",
                "CALLBRIDGE_ACCOUNTS_T_USERNAME": "a",
                "CALLBRIDGE_ACCOUNTS_T_ALLOW_FROM": "nowhere",
            },
            "accounts.t.allow_from",
            "'nowhere'",
        ),
    ],
)
def test_bad_values_name_the_field_and_the_fix(env: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ=env)
    assert exc.value.field.startswith(field)
    assert words in str(exc.value)


def test_unknown_key_in_file_suggests(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[sip]\nprot = 5060\n")
    with pytest.raises(ConfigError, match=r"did you mean 'sip\.port'"):
        load_settings(cfg, environ={})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_api_needs_token_off_loopback() -> None:
    with pytest.raises(ConfigError, match="CALLBRIDGE_API_TOKEN"):
        load_settings(environ={"CALLBRIDGE_HTTP_HOST": "0.0.0.0"})
    s = load_settings(
        environ={"CALLBRIDGE_HTTP_HOST": "0.0.0.0", "CALLBRIDGE_API_TOKEN": "s3cret-token"}
    )
    assert "s3cret" not in repr(s)


def test_settings_repr_hides_token() -> None:
    assert "zzz" not in repr(Settings(api_token="zzz"))


def test_llm_provider_needs_its_settings() -> None:
    with pytest.raises(ConfigError, match="CALLBRIDGE_LLM_BASE_URL"):
        load_settings(environ={"CALLBRIDGE_LLM_PROVIDER": "openai"})
    s = load_settings(
        environ={
            "CALLBRIDGE_LLM_PROVIDER": "openai",
            "CALLBRIDGE_LLM_BASE_URL": "http://127.0.0.1:11434/v1",
            "CALLBRIDGE_LLM_MODEL": "llama3.2",
        }
    )
    assert s.llm.base_url == "http://127.0.0.1:11434/v1"
    with pytest.raises(ConfigError, match=r"llm\.provider"):
        load_settings(environ={"CALLBRIDGE_LLM_PROVIDER": "gpt"})
    with pytest.raises(ConfigError, match=r"agent\.greet"):
        load_settings(environ={"CALLBRIDGE_AGENT_GREET": "maybe"})


def test_openai_speech_needs_a_base_url() -> None:
    from callbridge.config.settings import load_settings
    from callbridge.core.errors import ConfigError

    for kind in ("stt", "tts"):
        with pytest.raises(ConfigError, match=rf"{kind}\.base_url"):
            load_settings(environ={f"CALLBRIDGE_AGENT_{kind.upper()}": "openai"})


def test_speech_api_keys_are_secret() -> None:
    from callbridge.config.settings import SECRET_SETTINGS, load_settings

    s = load_settings(
        environ={
            "CALLBRIDGE_AGENT_STT": "openai",
            "CALLBRIDGE_STT_BASE_URL": "http://127.0.0.1:9/v1",
            "CALLBRIDGE_STT_API_KEY": "sk-stt-secret",
            "CALLBRIDGE_TTS_API_KEY": "sk-tts-secret",
        }
    )
    assert s.stt.api_key == "sk-stt-secret"
    assert "sk-" not in repr(s) and "sk-" not in repr(s.stt) and "sk-" not in repr(s.tts)
    assert {"stt.api_key", "tts.api_key"} <= SECRET_SETTINGS


def test_accounts_from_file_and_password_from_env(tmp_path: Path) -> None:
    from callbridge.config.settings import load_settings

    conf = tmp_path / "callbridge.toml"
    conf.write_text(
        '[accounts.provider]\nregistrar = "sip.example.com:5070"\nusername = "alice"\n'
        'expires = 600\nagent = "echo"\n'
    )
    s = load_settings(conf, environ={"CALLBRIDGE_ACCOUNTS_PROVIDER_PASSWORD": "s3cret"})
    a = s.accounts["provider"]
    assert (a.registrar, a.username, a.password, a.expires, a.agent, a.register) == (
        "sip.example.com:5070", "alice", "s3cret", 600, "echo", True,
    )  # fmt: skip
    assert "s3cret" not in repr(s) and "s3cret" not in repr(a)


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[accounts.p]\nusername = "a"\n', "accounts.p.registrar"),
        ('[accounts.p]\nregistrar = "r"\nusername = "a"\nexpire = 5\n', "accounts.p.expire"),
        ('[accounts.p]\nregistrar = "r"\nusername = "a"\nexpires = "soon"\n', "accounts.p.expires"),
        ('[accounts.p]\nregistrar = "r"\nusername = "a"\nagent = "nobody"\n', "accounts.p.agent"),
    ],
)
def test_bad_accounts_name_the_field(tmp_path: Path, toml: str, field: str) -> None:
    from callbridge.config.settings import load_settings
    from callbridge.core.errors import ConfigError

    conf = tmp_path / "c.toml"
    conf.write_text(toml)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(conf, environ={})


def test_auth_users_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ={"CALLBRIDGE_SIP_AUTH_USERS": "alice:pw1, topsecret"})
    assert "topsecret" not in str(exc.value) and "pw1" not in str(exc.value)
    s = load_settings(
        environ={"CALLBRIDGE_SIP_AUTH_USERS": "alice:a:b", "CALLBRIDGE_SIP_AUTH_ROUTES": "*"}
    )
    assert "alice:a:b" not in repr(s)
