"""queue_log lines → the AMI events the projector knows; CEL gives them exact instants; bad lines are skipped."""

from __future__ import annotations

from reporting.projector import CallExtras, Ev, project
from reporting.reconcile import parse, parse_cel, refine, to_events

QUEUE_LOG = """\
1795459114|live1-1795459108.6|sales|NONE|ENTERQUEUE||+4940100500|1
1795459116|live1-1795459108.6|sales|max|CONNECT|2|live1-1795459116.7|1
1795459120|live1-1795459108.6|sales|max|COMPLETECALLER|2|4|1
1795459130|live1-1795459130.9|sales|NONE|ENTERQUEUE||+4940100600|1
1795459137|live1-1795459130.9|sales|NONE|ABANDON|1|1|7
1795459140|live1-1795459140.1|sales|NONE|ENTERQUEUE||+4940100700|1
1795459145|live1-1795459140.1|sales|NONE|EXITWITHTIMEOUT|1|1|5
1795459146|MANAGER|sales|max|REMOVEMEMBER|
garbage line
x|y|z|w|v
"""

CEL = [
    '"APP_START","1795459114.250000","","","s","queue-entry","PJSIP/c-1","Queue","sales","live1-1795459108.6",'
    '"live1-1795459108.6","",""',
    '"CHAN_START","1795459114.900000","","","s","agents","PJSIP/a-2","","","live1-1795459116.7","x","",""',
    '"BRIDGE_ENTER","1795459116.750000","","","s","queue-entry","PJSIP/c-1","Queue","sales","live1-1795459108.6",'
    '"live1-1795459108.6","",""',
    '"BRIDGE_EXIT","1795459120.500000","","","s","queue-entry","PJSIP/c-1","Queue","sales","live1-1795459108.6",'
    '"live1-1795459108.6","",""',
    'not,a,cel,row',
]


def _events(cel: bool) -> list[Ev]:
    index = parse_cel(CEL) if cel else {}
    out = []
    for ln in parse(QUEUE_LOG.splitlines()):
        agent_uid = ln.data[1] if ln.event == "CONNECT" else None
        for name, at, fields in to_events(ln):
            at = refine(name, at, ln.callid, index, agent_uid=agent_uid) if name == "AgentCalled" else \
                refine(name, ln.at, ln.callid, index)
            out.append(Ev(name, at, ln.callid, ln.callid, ln.queue, fields))
    return out


def test_malformed_and_non_call_lines_are_skipped() -> None:
    lines = list(parse(QUEUE_LOG.splitlines()))
    assert [ln.event for ln in lines] == ["ENTERQUEUE", "CONNECT", "COMPLETECALLER", "ENTERQUEUE", "ABANDON",
                                          "ENTERQUEUE", "EXITWITHTIMEOUT"]


def test_queue_log_alone_gives_facts_to_the_second() -> None:
    answered, abandoned, timeout = project(_events(cel=False))
    assert (answered.outcome, answered.agent, answered.caller_number) == ("answered", "max", "+4940100500")
    assert (answered.wait_s, answered.ring_s, answered.talk_s, answered.hold_s) == (2.0, 1.0, 4.0, 0.0)
    assert (abandoned.outcome, abandoned.wait_s) == ("abandoned", 7.0)
    assert (timeout.outcome, timeout.wait_s) == ("timeout", 5.0)


def test_cel_gives_the_exact_instants() -> None:
    answered = project(_events(cel=True), CallExtras())[0]
    assert (answered.wait_s, answered.ring_s, answered.talk_s) == (2.5, 1.85, 3.75)


def test_a_cel_event_outside_the_second_is_not_taken() -> None:
    index = parse_cel(['"BRIDGE_ENTER","1795459119.9","","","","","","","","u.1","u.1","",""'])
    assert refine("AgentConnect", 1795459116.0, "u.1", index) == 1795459116.0
