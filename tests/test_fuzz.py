"""Schemathesis against ``/openapi.json``, with a valid token: no 5xx, and every 4xx carries the JSON error body
``{"error_code": "CSBS.xxxx" | "APIGW.xxxx", "error_msg": ...}``; 2xx answers match their documented schema.

Every operation of the document is fuzzed in both of schemathesis' modes (data that fits the schema and data that
does not), with a cloud-admin token (``token create --cloud-admin``: it reaches every project, so generated
project ids get past authorization and into the handlers). Bounded by ``OPENCSBS_FUZZ_EXAMPLES`` per operation
and mode (default 15: about a minute today). The longer run documented in docs/deployment.md:

    OPENCSBS_FUZZ_EXAMPLES=1000 .venv/bin/python -m pytest --timeout=3600 tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import re

import pytest

import schemathesis
from hypothesis import HealthCheck, given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402

EXAMPLES = int(os.environ.get("OPENCSBS_FUZZ_EXAMPLES", "15"))
ERROR_CODE = re.compile(r"(CSBS|APIGW)\.\d{4}")


def check_answer(case, response) -> str | None:
    """What is wrong with ``response`` (None: nothing)."""
    status = response.status_code
    if status >= 500:
        return f"server error {status}: {response.text[:300]}"
    if status >= 400:
        ctype = response.headers.get("content-type") or ""
        ctype = ctype[0] if isinstance(ctype, list) else ctype  # schemathesis keeps header values as lists
        if not ctype.startswith("application/json"):
            return f"{status} without a JSON content type"
        try:
            body = json.loads(response.text)
        except ValueError:
            return f"{status} with a body that is not JSON: {response.text[:200]}"
        if not isinstance(body, dict) or set(body) != {"error_code", "error_msg"}:
            return f"{status} body is not the error shape: {response.text[:200]}"
        if not ERROR_CODE.fullmatch(str(body["error_code"])) or not isinstance(body["error_msg"], str):
            return f"{status} with an undocumented error code: {body}"
    return None


def test_schemathesis_finds_no_5xx_and_only_documented_errors(client, make_token, inventory):
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    token = make_token(None, "cloud-admin")
    problems: dict[tuple[str, str, str], str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in GenerationMode:
            fuzz = _fuzzer(operation, mode, token, problems)
            try:
                fuzz()
            except Unsatisfiable:
                pass  # e.g. no way to break the schema of an operation without parameters
    assert operations >= 3
    assert not problems, "\n".join(f"{k}: {v}" for k, v in problems.items())


def _fuzzer(operation, mode, token: str, problems: dict):
    from schemathesis.specs.openapi.checks import response_schema_conformance

    @given(case=operation.as_strategy(generation_mode=mode))
    @hsettings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case):
        response = case.call(headers={"X-Auth-Token": token})
        why = check_answer(case, response)
        if why is None and 200 <= response.status_code < 300:
            try:
                case.validate_response(response, checks=[response_schema_conformance],
                                       headers={"X-Auth-Token": token})
            except Exception as exc:  # noqa: BLE001 - schemathesis reports with its own types
                why = f"2xx not matching its schema: {str(exc)[:300]}"
        if why is not None:
            key = (operation.label, mode.value, why.split(":")[0])
            problems.setdefault(key, f"{why}\n    request: {case.method} {case.formatted_path} "
                                      f"query={case.query} body={str(case.body)[:200]}")

    return fuzz


def test_check_answer_flags_what_it_should():
    """The oracle itself: a 5xx, a non-JSON 4xx and an unknown code are problems; the error shape is not."""

    class R:
        def __init__(self, status, text, ctype="application/json"):
            self.status_code, self.text, self.headers = status, text, {"content-type": ctype}

    assert check_answer(None, R(500, '{"error_code": "CSBS.9999", "error_msg": "x"}'))
    assert check_answer(None, R(400, "bad", "text/plain"))
    assert check_answer(None, R(422, '{"detail": []}'))
    assert check_answer(None, R(400, '{"error_code": "HTTP.400", "error_msg": "x"}'))
    assert check_answer(None, R(400, '{"error_code": "CSBS.9001", "error_msg": "x"}')) is None
    assert check_answer(None, R(200, '{"providers": []}')) is None
