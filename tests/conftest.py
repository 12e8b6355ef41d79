"""Fixtures shared by tests/live and tests/ui: one real stack (Asterisk + PostgreSQL + service) per session."""

from tests.live_stack import _reset_between_tests, ami, db, live_stack, phones  # noqa: F401
