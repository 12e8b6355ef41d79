"""Live tests use the session stack of tests/conftest.py (tests/live_stack.py); names kept importable here."""

from tests.live_stack import AGENT_TONE, CALLER_TONE, LiveStack  # noqa: F401
