import json
import logging

from connectors.logs import JsonLineFormatter


def test_extra_fields_become_top_level_keys() -> None:
    record = logging.makeLogRecord(
        {
            "name": "f2.decode",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "dead-lettered %s",
            "args": ("x",),
            "stage": "decode",
            "mac": "e4fd45f654be",
            "reason": "bad_crc",
        }
    )
    line = json.loads(JsonLineFormatter().format(record))
    assert line["msg"] == "dead-lettered x"
    assert line["level"] == "warning"
    assert (line["stage"], line["mac"], line["reason"]) == ("decode", "e4fd45f654be", "bad_crc")
