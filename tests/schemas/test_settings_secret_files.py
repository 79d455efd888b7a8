"""Every password and DSN can come from a ``*_FILE`` variable (schemas.settings.env_value)."""

from __future__ import annotations

from schemas.settings import load_settings

VARIABLES = {
    "F2_MQTT_PASSWORD": "mqtt_password",
    "F2_SIM_PASSWORD": "sim_password",
    "F2_PARAMS_DSN": "params_dsn",
    "F2_TIMESERIES_DSN": "timeseries_dsn",
    "F2_REDIS_URL": "redis_url",
    "F2_MQTT_USERNAME": "mqtt_username",
}


def test_each_secret_is_read_from_its_file(tmp_path) -> None:
    environ = {"F2_STACK_DIR": str(tmp_path / "no-stack")}
    for variable in VARIABLES:
        path = tmp_path / variable.lower()
        path.write_text(f"from-file-{variable}\n")
        environ[f"{variable}_FILE"] = str(path)
    settings = load_settings(environ)
    for variable, field in VARIABLES.items():
        assert getattr(settings, field) == f"from-file-{variable}"


def test_plain_variable_wins_over_file(tmp_path) -> None:
    path = tmp_path / "pw"
    path.write_text("from-file")
    environ = {
        "F2_STACK_DIR": str(tmp_path),
        "F2_MQTT_PASSWORD": "plain",
        "F2_MQTT_PASSWORD_FILE": str(path),
    }
    assert load_settings(environ).mqtt_password == "plain"
