from switchboard.orchestrator.metrics import guardrail_action


def test_guardrail_labels_stay_bounded() -> None:
    assert guardrail_action("redacted:email") == "redacted:email"
    assert guardrail_action("output-redacted:card") == "output-redacted:card"
    assert guardrail_action("injection-blocked:0.93") == "injection-blocked"
    assert guardrail_action("topic-blocked:refunds for crypto") == "topic-blocked"
    assert guardrail_action("handoff") == "handoff"
