"""IVR flow model, validation on save and the call-free simulator (pure code)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from ivr.flow_model import Flow
from ivr.simulate import simulate
from ivr.validate import Problem, ValidationContext, validate_flow

CTX = ValidationContext(
    allowed_hosts=frozenset({"crm.example.com"}),
    known_queues=frozenset({"sales", "support", "vip"}),
    known_prompts=None,
    known_transfer_targets=frozenset({"1000", "+15551234567"}),
)
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # a Monday


def two_level() -> dict[str, Any]:
    return {
        "start": "welcome",
        "nodes": {
            "welcome": {"type": "play", "prompt": "custom/welcome", "next": "main"},
            "main": {
                "type": "menu", "prompt": "main-menu", "options": {"1": "sales_menu", "2": "support", "0": "operator"},
                "retries": 2, "invalid_prompt": "option-is-invalid", "timeout": "bye", "invalid": "bye",
            },
            "sales_menu": {
                "type": "menu", "prompt": "sales-menu", "options": {"1": "sales", "2": "account", "*": "main"},
                "timeout": "bye", "invalid": "bye",
            },
            "account": {
                "type": "collect", "prompt": "enter-account", "var": "account", "min_digits": 4, "max_digits": 8,
                "pattern": "[1-9][0-9]{3,7}", "retries": 1, "next": "lookup", "invalid": "sales",
            },
            "lookup": {
                "type": "http_lookup", "url": "https://crm.example.com/api/customer",
                "params": {"account": "${account}", "src": "ivr"}, "timeout_ms": 1500, "field": "customer.tier",
                "branches": {"gold": "vip"}, "default": "sales", "failure": "sales",
            },
            "sales": {"type": "queue", "queue": "sales", "priority": 5, "vars": ["account"]},
            "vip": {"type": "queue", "queue": "vip", "priority": 50, "vars": ["account"]},
            "support": {"type": "queue", "queue": "support"},
            "operator": {"type": "transfer", "extension": "1000"},
            "bye": {"type": "hangup", "prompt": "vm-goodbye"},
        },
    }


def ok(doc: dict[str, Any], ctx: ValidationContext = CTX) -> Flow:
    flow, problems = validate_flow(doc, ctx)
    assert problems == [], problems
    assert flow is not None
    return flow


def problems_of(doc: dict[str, Any], ctx: ValidationContext = CTX) -> list[Problem]:
    flow, problems = validate_flow(doc, ctx)
    assert flow is None
    assert problems
    return problems


def has(problems: list[Problem], node: str | None, text: str, field: str | None = None) -> bool:
    return any(p.node == node and text in p.message and (field is None or p.field == field) for p in problems)


# --- validation -----------------------------------------------------------------------------------------


def test_valid_two_level_menu_passes() -> None:
    flow = ok(two_level())
    assert flow.start == "welcome"
    assert set(flow.nodes) >= {"main", "sales_menu", "sales"}


def test_unknown_node_type() -> None:
    doc = two_level()
    doc["nodes"]["welcome"] = {"type": "exec", "app": "System", "next": "main"}
    ps = problems_of(doc)
    assert has(ps, "welcome", "unknown node type 'exec'", "type")


def test_missing_fields_and_unknown_fields() -> None:
    doc = two_level()
    del doc["nodes"]["main"]["invalid"]
    doc["nodes"]["support"]["dial"] = "SIP/x"
    ps = problems_of(doc)
    assert has(ps, "main", "field required", "invalid")
    assert has(ps, "support", "unknown field", "dial")


def test_non_terminal_without_next_is_missing_field() -> None:
    doc = two_level()
    del doc["nodes"]["welcome"]["next"]
    ps = problems_of(doc)
    assert has(ps, "welcome", "field required", "next")


def test_dangling_target() -> None:
    doc = two_level()
    doc["nodes"]["main"]["options"]["3"] = "nowhere"
    ps = problems_of(doc)
    assert has(ps, "main", "'nowhere' names no node", "options.3")


def test_start_names_no_node() -> None:
    doc = two_level()
    doc["start"] = "nope"
    ps = problems_of(doc)
    assert has(ps, None, "start names no node", "start")


def test_unreachable_node() -> None:
    doc = two_level()
    doc["nodes"]["orphan"] = {"type": "hangup"}
    ps = problems_of(doc)
    assert has(ps, "orphan", "unreachable")
    assert not has(ps, "main", "unreachable")


def test_loop_without_caller_input() -> None:
    doc = two_level()
    doc["nodes"]["welcome"]["next"] = "again"
    doc["nodes"]["again"] = {"type": "set_variable", "var": "x", "value": "1", "next": "welcome"}
    ps = problems_of(doc)
    assert has(ps, "again", "loop with no caller input")
    assert next(p for p in ps if "loop" in p.message).message.count("->") == 2


def test_loop_through_a_menu_is_fine() -> None:
    ok(two_level())  # sales_menu '*' -> main -> '1' -> sales_menu: the caller presses keys each time


def test_self_loop_without_input() -> None:
    doc = two_level()
    doc["nodes"]["welcome"]["next"] = "welcome"
    doc["nodes"]["main"]["timeout"] = "welcome"
    doc["nodes"]["main"]["invalid"] = "welcome"
    ps = problems_of(doc)
    assert has(ps, "welcome", "loop with no caller input")


def test_no_path_to_a_terminal() -> None:
    doc = two_level()
    doc["nodes"]["main"] = {"type": "menu", "prompt": "main-menu", "options": {"1": "main"},
                            "timeout": "main", "invalid": "main"}
    ps = problems_of(doc)
    assert has(ps, "main", "no path from this node reaches")
    assert has(ps, "welcome", "no path from this node reaches")


def test_bad_digit_keys() -> None:
    doc = two_level()
    doc["nodes"]["main"]["options"] = {"1": "sales_menu", "12": "support", "a": "operator"}
    ps = problems_of(doc)
    assert has(ps, "main", "bad digit key '12'")
    assert has(ps, "main", "bad digit key 'a'")


def test_callback_digit_must_be_a_key() -> None:
    doc = two_level()
    doc["nodes"]["welcome"] = {"type": "callback_offer", "prompt": "cb", "digit": "x", "accepted": "main",
                               "declined": "main"}
    ps = problems_of(doc)
    assert has(ps, "welcome", "", "digit")


def test_bad_time_zone() -> None:
    doc = two_level()
    doc["nodes"]["welcome"] = {"type": "time_condition", "timezone": "Mars/Olympus", "open": "main",
                               "closed": "bye"}
    ps = problems_of(doc)
    assert has(ps, "welcome", "unknown time zone", "timezone")
    doc["nodes"]["welcome"]["timezone"] = "../../etc/passwd"
    assert has(problems_of(doc), "welcome", "unknown time zone", "timezone")


def test_bad_hours_and_holidays() -> None:
    doc = two_level()
    doc["nodes"]["welcome"] = {"type": "time_condition", "timezone": "Europe/Paris", "open": "main",
                               "closed": "bye", "hours": {"mon": [["17:00", "09:00"]]}, "holidays": ["2026-02-30"]}
    ps = problems_of(doc)
    assert has(ps, "welcome", "must end after it starts", "hours")
    assert has(ps, "welcome", "not a date", "holidays")
    doc["nodes"]["welcome"]["hours"] = {"xyz": [["09:00", "10:00"]], "tue": [["9:00", "25:00"]]}
    ps = problems_of(doc)
    assert has(ps, "welcome", "bad weekday 'xyz'", "hours.xyz")
    assert has(ps, "welcome", "", "hours.tue.0.0")
    assert has(ps, "welcome", "", "hours.tue.0.1")


@pytest.mark.parametrize("prompt", ["../../etc/passwd", "/etc/passwd", "a/../b", "Welcome", "x;Dial(SIP/1)",
                                    "a//b", ""])
def test_unsafe_prompt_names(prompt: str) -> None:
    doc = two_level()
    doc["nodes"]["welcome"]["prompt"] = prompt
    assert has(problems_of(doc), "welcome", "", "prompt")


def test_known_prompts_checked_when_given() -> None:
    ctx = ValidationContext(allowed_hosts=CTX.allowed_hosts, known_prompts=frozenset({"main-menu"}))
    ps = problems_of(two_level(), ctx)
    assert has(ps, "welcome", "unknown prompt 'custom/welcome'", "prompt")
    assert has(ps, "main", "unknown prompt 'option-is-invalid'", "invalid_prompt")


@pytest.mark.parametrize(("url", "text"), [
    ("ftp://crm.example.com/x", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("https://evil.example.net/x", "not in the allowed hosts"),
    ("https://user:pw@crm.example.com/x", "credentials"),
    ("https://crm.example.com/x?a=${account}", "fixed"),
    ("http://crm.example.com.evil.net/x", "not in the allowed hosts"),
])
def test_unsafe_urls(url: str, text: str) -> None:
    doc = two_level()
    doc["nodes"]["lookup"]["url"] = url
    assert has(problems_of(doc), "lookup", text, "url")


@pytest.mark.parametrize("pattern", ["[0-9", ".*", "\\w+", "[^0-9]+", "(?i)abc", "1" * 101, "(1+)+", "(1|11)*",
                                     "((12)+3)+", "^1$"])
def test_unsafe_or_broken_regex(pattern: str) -> None:
    doc = two_level()
    doc["nodes"]["account"]["pattern"] = pattern
    assert has(problems_of(doc), "account", "", "pattern")


@pytest.mark.parametrize("pattern", ["\\d{4,8}", "(12)+3", "[1-9][0-9]*\\#?", "(0|[1-9]\\d*)", "\\*[0-9]{2}"])
def test_safe_regex_accepted(pattern: str) -> None:
    doc = two_level()
    doc["nodes"]["account"]["pattern"] = pattern
    ok(doc)


def test_unsafe_values() -> None:
    doc = two_level()
    doc["nodes"]["welcome"] = {"type": "set_variable", "var": "note", "value": "a\nb", "next": "main"}
    doc["nodes"]["sales"]["queue"] = "sales;x"
    doc["nodes"]["operator"] = {"type": "transfer", "extension": "1000&SIP/evil"}
    ps = problems_of(doc)
    assert has(ps, "welcome", "", "value")
    assert has(ps, "sales", "", "queue")
    assert has(ps, "operator", "", "extension")


def test_context_queue_and_transfer_targets() -> None:
    doc = two_level()
    doc["nodes"]["support"]["queue"] = "billing"
    doc["nodes"]["operator"] = {"type": "transfer", "number": "+19005550000"}
    ps = problems_of(doc)
    assert has(ps, "support", "unknown queue 'billing'", "queue")
    assert has(ps, "operator", "not allowed", "number")


def test_unset_variable_reference() -> None:
    doc = two_level()
    doc["nodes"]["lookup"]["params"]["pin"] = "${pin}"
    ps = problems_of(doc)
    assert has(ps, "lookup", "'pin' is never set", "params.pin")


def test_many_problems_at_once_all_listed() -> None:
    doc = two_level()
    doc["nodes"]["welcome"]["prompt"] = "../x"                           # unsafe prompt
    doc["nodes"]["main"]["options"]["x"] = "support"                     # bad digit key
    doc["nodes"]["sales_menu"]["options"]["1"] = "ghost"                 # dangling
    doc["nodes"]["lookup"]["url"] = "https://evil.example.net/"          # host
    doc["nodes"]["orphan"] = {"type": "hangup"}                          # unreachable
    doc["nodes"]["weird"] = {"type": "teleport"}                         # unknown type (and unreachable)
    doc["nodes"]["tc"] = {"type": "time_condition", "timezone": "Nowhere/City", "open": "bye", "closed": "bye"}
    doc["nodes"]["BAD ID"] = {"type": "hangup"}                          # bad node id
    ps = problems_of(doc)
    assert has(ps, "welcome", "", "prompt")
    assert has(ps, "main", "bad digit key 'x'")
    assert has(ps, "sales_menu", "'ghost' names no node")
    assert has(ps, "lookup", "not in the allowed hosts")
    assert has(ps, "orphan", "unreachable")
    assert has(ps, "weird", "unknown node type 'teleport'")
    assert has(ps, "tc", "unknown time zone")
    assert has(ps, "BAD ID", "bad node id")
    assert all(isinstance(p.as_dict()["message"], str) for p in ps)
    assert len({p.node for p in ps}) >= 8


def test_document_shape_problems() -> None:
    assert validate_flow([], CTX)[1][0].message.startswith("a flow must be")
    ps = validate_flow({"nodes": {}, "extra": 1}, CTX)[1]
    assert has(ps, None, "field required", "start")
    assert has(ps, None, "unknown field", "extra")
    assert has(ps, None, "non-empty", "nodes")


# --- time conditions ------------------------------------------------------------------------------------


def tc_flow(timezone: str, holidays: list[str] | None = None, holiday_branch: bool = True) -> Flow:
    nodes: dict[str, Any] = {
        "tc": {"type": "time_condition", "timezone": timezone,
               "hours": {"mon": [["09:00", "12:00"], ["13:00", "17:00"]], "tue": [["09:00", "17:00"]],
                         "sun": [["00:00", "24:00"]]},
               "holidays": holidays or [], "open": "open_q", "closed": "closed_msg"},
        "open_q": {"type": "queue", "queue": "sales"},
        "closed_msg": {"type": "message", "prompt": "closed"},
        "hol": {"type": "hangup", "prompt": "holiday"},
    }
    if holiday_branch:
        nodes["tc"]["holiday"] = "hol"
    else:
        del nodes["hol"]
    return ok({"start": "tc", "nodes": nodes})


@pytest.mark.parametrize(("now", "end"), [
    (datetime(2026, 11, 23, 8, 30, tzinfo=UTC), "queue:sales"),   # Mon 09:30 Paris
    (datetime(2026, 11, 23, 11, 30, tzinfo=UTC), "message"),      # Mon 12:30 Paris: lunch
    (datetime(2026, 11, 23, 15, 59, tzinfo=UTC), "queue:sales"),  # Mon 16:59 Paris
    (datetime(2026, 11, 23, 16, 0, tzinfo=UTC), "message"),       # Mon 17:00 Paris: closed (end exclusive)
    (datetime(2026, 11, 25, 10, 0, tzinfo=UTC), "message"),       # Wed: no hours
    (datetime(2026, 11, 29, 23, 30, tzinfo=UTC), "message"),      # Mon 00:30 Paris, though Sunday in UTC
    (datetime(2026, 11, 29, 22, 30, tzinfo=UTC), "queue:sales"),  # Sun 23:30 Paris: open until 24:00
])
def test_time_condition_open_closed(now: datetime, end: str) -> None:
    assert simulate(tc_flow("Europe/Paris"), [], now=now).end == end


def test_time_condition_other_zone() -> None:
    now = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # Mon 16:00 Paris (open), Mon 10:00 New York (open),
    assert simulate(tc_flow("America/New_York"), [], now=now).end == "queue:sales"
    assert simulate(tc_flow("Asia/Tokyo"), [], now=now).end == "message"  # Tue 00:00 Tokyo


def test_time_condition_holiday_in_local_date() -> None:
    flow = tc_flow("Pacific/Auckland", holidays=["2026-11-24"])
    # 2026-11-23 21:00 UTC is Tue 2026-11-24 10:00 in Auckland: a holiday there.
    r = simulate(flow, [], now=datetime(2026, 11, 23, 21, 0, tzinfo=UTC))
    assert r.end == "hangup"
    assert r.path[0].outcome == "holiday"
    no_branch = tc_flow("Pacific/Auckland", holidays=["2026-11-24"], holiday_branch=False)
    assert simulate(no_branch, [], now=datetime(2026, 11, 23, 21, 0, tzinfo=UTC)).end == "message"


def test_time_condition_dst_edge() -> None:
    flow = tc_flow("America/New_York")
    # DST ended Sun 2026-11-01; on Mon 2026-11-02 New York is UTC-5: 13:59 UTC = 08:59 (closed),
    # 14:00 UTC = 09:00 (open). The week before (EDT, UTC-4) 13:00 UTC was already 09:00.
    assert simulate(flow, [], now=datetime(2026, 11, 2, 13, 59, tzinfo=UTC)).end == "message"
    assert simulate(flow, [], now=datetime(2026, 11, 2, 14, 0, tzinfo=UTC)).end == "queue:sales"
    assert simulate(flow, [], now=datetime(2026, 10, 26, 13, 0, tzinfo=UTC)).end == "queue:sales"
    assert simulate(flow, [], now=datetime(2026, 10, 26, 12, 59, tzinfo=UTC)).end == "message"


def test_time_condition_needs_aware_now() -> None:
    with pytest.raises(ValueError):
        simulate(tc_flow("Europe/Paris"), [], now=datetime(2026, 11, 23, 10, 0))


# --- simulation -----------------------------------------------------------------------------------------


def test_menu_navigation() -> None:
    flow = ok(two_level())
    r = simulate(flow, ["1", "*", "2"], now=NOW)
    assert r.end == "queue:support"
    assert [(s.node, s.input) for s in r.path if s.input is not None] == [("main", "1"), ("sales_menu", "*"),
                                                                          ("main", "2")]
    assert simulate(flow, ["0"], now=NOW).end == "transfer:extension:1000"
    assert simulate(flow, ["1", "1"], now=NOW).end == "queue:sales"


def test_invalid_digit_retries_then_invalid_branch() -> None:
    flow = ok(two_level())
    r = simulate(flow, ["9", "7", "#"], now=NOW)  # 1 try + 2 retries, all invalid
    assert [s.outcome for s in r.path if s.node == "main"] == ["invalid", "invalid", "invalid"]
    assert r.end == "hangup"
    assert r.path[-1].node == "bye"
    r = simulate(flow, ["9", "", "2"], now=NOW)  # recovers on the last retry
    assert r.end == "queue:support"
    r = simulate(flow, [], now=NOW)  # silence: timeouts
    assert [s.outcome for s in r.path if s.node == "main"] == ["timeout"] * 3
    assert r.end == "hangup"


def test_collect_with_pattern_and_http_lookup_branches() -> None:
    flow = ok(two_level())
    calls: list[tuple[str, dict[str, str]]] = []

    def crm(url: str, params: dict[str, str]) -> dict[str, Any] | None:
        calls.append((url, params))
        return {"customer": {"tier": "gold" if params["account"] == "12345" else "silver"}}

    r = simulate(flow, ["1", "2", "12345#"], now=NOW, http=crm)
    assert r.end == "queue:vip"
    assert r.variables["account"] == "12345"
    assert r.call_data == {"account": "12345"}
    assert r.priority == 50
    assert calls == [("https://crm.example.com/api/customer", {"account": "12345", "src": "ivr"})]
    r = simulate(flow, ["1", "2", "5555"], now=NOW, http=crm)
    assert r.end == "queue:sales"
    assert [s.outcome for s in r.path if s.node == "lookup"] == ["default"]


def test_http_lookup_failure_and_missing_field() -> None:
    flow = ok(two_level())
    r = simulate(flow, ["1", "2", "12345"], now=NOW, http=lambda url, params: None)
    assert [s.outcome for s in r.path if s.node == "lookup"] == ["failure"]
    assert r.end == "queue:sales"
    r = simulate(flow, ["1", "2", "12345"], now=NOW)  # no http at all: failure
    assert [s.outcome for s in r.path if s.node == "lookup"] == ["failure"]
    r = simulate(flow, ["1", "2", "12345"], now=NOW, http=lambda url, params: {"other": 1})
    assert [s.outcome for s in r.path if s.node == "lookup"] == ["default"]


def test_collect_rejects_letters_and_bad_lengths() -> None:
    flow = ok(two_level())
    # retries=1: two attempts. Letters and an injection attempt are rejected and never stored or echoed.
    r = simulate(flow, ["1", "2", "12a4", "1234;Dial(x)"], now=NOW)
    assert "account" not in r.variables
    assert [s.outcome for s in r.path if s.node == "account"] == ["invalid", "invalid"]
    assert all(s.input == "<rejected>" for s in r.path if s.node == "account")
    assert r.end == "queue:sales"
    assert r.call_data == {}
    r = simulate(flow, ["1", "2", "0123", "123"], now=NOW)  # pattern: no leading 0; too short
    assert "account" not in r.variables
    r = simulate(flow, ["1", "2", "123456789", "1234"], now=NOW)  # too long, then fine
    assert r.variables["account"] == "1234"


def test_menu_input_never_echoed_unvalidated() -> None:
    flow = ok(two_level())
    r = simulate(flow, ["${x}", "1;System(rm)", "2"], now=NOW)
    assert r.end == "queue:support"
    assert [s.input for s in r.path if s.node == "main"] == ["<rejected>", "<rejected>", "2"]
    assert all("$" not in v and ";" not in v for v in r.variables.values())


def test_set_variable_language_survey_callback() -> None:
    doc = {
        "start": "lang",
        "nodes": {
            "lang": {"type": "language", "lang": "fr_FR", "next": "tag"},
            "tag": {"type": "set_variable", "var": "source", "value": "ivr-fr", "next": "copy"},
            "copy": {"type": "set_variable", "var": "origin", "value": "${source}", "next": "csat"},
            "csat": {"type": "survey", "prompt": "rate-us", "var": "csat", "next": "offer"},
            "offer": {"type": "callback_offer", "prompt": "press-1-callback", "digit": "1",
                      "accepted": "vm", "declined": "q"},
            "vm": {"type": "voicemail", "prompt": "leave-message", "max_seconds": 60},
            "q": {"type": "queue", "queue": "support", "vars": ["origin", "source"]},
        },
    }
    flow = ok(doc)
    r = simulate(flow, ["2", "4"], now=NOW)
    assert r.end == "queue:support"
    assert r.variables["lang"] == "fr_FR"
    assert r.call_data == {"origin": "ivr-fr", "source": "ivr-fr"}
    assert r.variables["csat"] == "4"
    assert (r.path[-1].node, r.path[-1].outcome) == ("csat", "rated")
    r = simulate(flow, ["2", "9"], now=NOW)
    assert "csat" not in r.variables
    assert simulate(flow, ["1"], now=NOW).end == "message"


def test_step_limit_reports_loop() -> None:
    doc = copy.deepcopy(two_level())
    doc["nodes"]["main"]["options"]["5"] = "main"
    flow = ok(doc)
    r = simulate(flow, ["5"] * 500, now=NOW, max_steps=50)
    assert r.end == "step_limit"
    assert len(r.path) == 50


def test_transfer_number() -> None:
    doc = two_level()
    doc["nodes"]["operator"] = {"type": "transfer", "number": "+15551234567"}
    assert simulate(ok(doc), ["0"], now=NOW).end == "transfer:number:+15551234567"


# --- secure collect (card numbers, PCI) -----------------------------------------------------------------


def secure_account() -> dict[str, Any]:
    doc = two_level()
    doc["nodes"]["account"]["secure"] = True
    return doc


def test_secure_is_a_collect_option_only() -> None:
    assert ok(secure_account()).nodes["account"].secure is True  # type: ignore[union-attr]
    assert ok(two_level()).nodes["account"].secure is False  # type: ignore[union-attr]
    doc = two_level()
    doc["nodes"]["main"]["secure"] = True
    assert has(problems_of(doc), "main", "unknown field", "secure")
    doc = secure_account()
    doc["nodes"]["account"]["secure"] = "yes"
    assert has(problems_of(doc), "account", "boolean", "secure")


def test_simulated_secure_collect_masks_the_trace_and_keeps_the_value_from_the_agent() -> None:
    flow = ok(secure_account())
    seen: list[dict[str, str]] = []

    def crm(url: str, params: dict[str, str]) -> dict[str, Any] | None:
        seen.append(params)
        return {"customer": {"tier": "gold"}}

    r = simulate(flow, ["1", "2", "12345#"], now=NOW, http=crm)
    assert r.end == "queue:vip"  # the flow still branches on the real value
    assert seen[0]["account"] == "12345"
    assert [(s.input, s.outcome) for s in r.path if s.node == "account"] == [("*****", "collected")]
    assert r.variables["account"] == "*****"
    assert r.call_data == {}  # the queue node lists it, but it never reaches IVR_INPUTS


def test_simulated_secure_collect_mask_rule() -> None:
    doc = secure_account()
    doc["nodes"]["account"]["max_digits"] = 19
    del doc["nodes"]["account"]["pattern"]
    flow = ok(doc)
    r = simulate(flow, ["1", "2", "12345678901", "4111111111111111#"], now=NOW)
    assert [(s.input, s.outcome) for s in r.path if s.node == "account"] == [
        ("***********", "collected")]  # 11 digits: all masked
    r = simulate(flow, ["1", "2", "4111111111111111#"], now=NOW)
    assert [s.input for s in r.path if s.node == "account"] == ["************1111"]  # 12+: last 4 shown
    assert r.variables["account"] == "************1111"
    r = simulate(flow, ["1", "2", "41111111111111112222", "12a"], now=NOW)  # too long, not DTMF: both invalid
    assert [(s.input, s.outcome) for s in r.path if s.node == "account"] == [
        ("****************2222", "invalid"), ("<rejected>", "invalid")]
    assert "account" not in r.variables


def test_copy_of_a_secure_variable_stays_secret_until_overwritten() -> None:
    doc = secure_account()
    doc["nodes"]["account"]["next"] = "copy"
    doc["nodes"]["copy"] = {"type": "set_variable", "var": "acct2", "value": "${account}", "next": "reset"}
    doc["nodes"]["reset"] = {"type": "set_variable", "var": "account", "value": "none", "next": "lookup"}
    doc["nodes"]["sales"]["vars"] = ["account", "acct2"]
    r = simulate(ok(doc), ["1", "2", "12345"], now=NOW)  # no http: the lookup fails over to sales
    assert r.end == "queue:sales"
    assert r.call_data == {"account": "none"}  # overwritten with a literal: no longer secret; the copy is
    assert r.variables["acct2"] == "*****"
